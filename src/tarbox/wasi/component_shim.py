"""A shim component composed in front of a guest, for two limits of wasmtime-py 50.

1. It cannot call a host function that takes two borrowed resources: the call traps
   inside wasmtime (docs/wasi.md). ``rename-at``, ``link-at`` and ``is-same-object``
   take two descriptors. The shim implements them by asking the host for the second
   descriptor's number (``descriptor-id``, one borrow), then calling a host function
   that takes the number instead (``tarbox:bridge/descriptors``). ``wasi:io/poll``'s
   ``poll`` takes a list of borrowed pollables: the shim turns each into its number
   (``pollable-id``) and polls by numbers (``tarbox:bridge/poll``).
2. It converts a ``list<u8>`` as an array of 32-byte tagged values, about 40 MB/s.
   The shim passes stream data as a ``string`` in the latin1 encoding instead
   (``tarbox:bridge/streams``): every byte is one latin1 character, so nothing is
   lost, and strings cross the C API in bulk. This is 28x faster for 4 KiB writes.

Each wrapped interface (``wasi:filesystem/types``, ``wasi:io/streams``) is exported by
the shim with the guest's own import type. Every item is the host's, passed through,
except those replaced. The guest, and what it observes, are unchanged. Passing
resource methods through takes a nested component that imports each item and exports
it with a type written against the exported resource names. The validator accepts a
``[method]`` export only when its resource has a name in the same context.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

from tarbox.wasi.engine import cache_dir
from tarbox.wasi.toolchain import wasm_tools

FS_BRIDGE = "tarbox:bridge/descriptors@0.1.0"
IO_BRIDGE = "tarbox:bridge/streams@0.1.0"
POLL_BRIDGE = "tarbox:bridge/poll@0.1.0"
FS_REPLACED = {
    "[method]descriptor.rename-at": "$tb-rename",
    "[method]descriptor.link-at": "$tb-link",
    "[method]descriptor.is-same-object": "$tb-same",
    "[method]descriptor.stat": "$tb-stat",
    "[method]descriptor.stat-at": "$tb-stat-at",
    "[method]descriptor.metadata-hash": "$tb-mhash",
    "[method]descriptor.metadata-hash-at": "$tb-mhash-at",
}
IO_REPLACED = {
    "[method]input-stream.read": "$tb-read",
    "[method]input-stream.blocking-read": "$tb-bread",
    "[method]output-stream.write": "$tb-write",
    "[method]output-stream.blocking-write-and-flush": "$tb-bwrite",
}
POLL_REPLACED = {"poll": "$tb-poll"}
WRAPPED = {
    "wasi:filesystem/types": ("fs", FS_REPLACED),
    "wasi:io/streams": ("io", IO_REPLACED),
    "wasi:io/poll": ("poll", POLL_REPLACED),
}
BRIDGES = {"fs": (FS_BRIDGE, "$tb-fsbr"), "io": (IO_BRIDGE, "$tb-iobr"), "poll": (POLL_BRIDGE, "$tb-pollbr")}
# changes with this generator, so compositions cached by an older one are not reused
GENERATOR = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
_RESOURCES = {"error", "output-stream", "input-stream", "pollable", "descriptor", "directory-entry-stream"}


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One wasm-tools step; its failure raises CalledProcessError with its stderr."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=True)


_lock = threading.Lock()


class ShimError(Exception):
    """The guest's filesystem import could not be wrapped (becomes INVALID_MODULE)."""


# ---------------------------------------------------------------- s-expressions

_TOKEN = re.compile(r'\(;.*?;\)|\$"(?:[^"\\]|\\.)*"|"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+', re.S)


def parse(text: str) -> list:
    """WAT text as nested lists of tokens (block comments dropped)."""
    stack: list[list] = [[]]
    for tok in _TOKEN.findall(text):
        if tok.startswith("(;"):
            continue
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    return stack[0]


def show(x) -> str:
    return "(" + " ".join(show(e) for e in x) + ")" if isinstance(x, list) else x


def _renumber(x, name) -> list | str:
    """A type definition with every index replaced by ``name(index)``."""
    if isinstance(x, list):
        return [_renumber(e, name) for e in x]
    return name(int(x)) if x.isdigit() else x


def _type_entries(block: list) -> list:
    """The entries of an instance type that take a type index, in index order."""
    return [e for e in block if e[0] in ("type", "alias") or (e[0] == "export" and e[2][0] == "type")]


# ------------------------------------------------------------------ generation


def _stand_in(guest: Path, work: Path) -> tuple[str, list]:
    """A small component with the guest's imports and exports (built from its WIT; its
    code is stubs), as text, and its type, import and alias items. It stands in for
    the guest in the composition text; the guest's bytes replace it afterwards."""
    tool = wasm_tools()
    (work / "g.wit").write_text(_run([tool, "component", "wit", str(guest)]).stdout)
    _run([tool, "component", "embed", "--dummy", "g.wit", "-o", "d.wasm"], cwd=work)
    _run([tool, "component", "new", "d.wasm", "-o", "dc.wasm"], cwd=work)
    text = _run([tool, "print", "dc.wasm"], cwd=work).stdout
    items = []
    for item in parse(text)[0][1:]:
        if item[0] not in ("type", "import", "alias"):
            break
        items.append(item)
    return text, items


def _block(items: list, instance: str) -> list:
    """The entries of the instance type an import named ``instance`` has."""
    return next(t for t in items if t[0] == "type" and t[1] == f"$ty-{instance}")[2][1:]


def _plain_definition(items: list, alias_name: str) -> str:
    """The definition of a non-resource type the guest aliases from another interface
    (``datetime``), with nested types written inline."""
    alias = next((a for a in items if a[0] == "alias" and a[1] == "export" and a[4][1] == alias_name), None)
    if alias is None:
        raise ShimError(f"no definition found for {alias_name}")
    entries = _type_entries(_block(items, alias[2][1:]))

    def definition(i: int) -> str:
        e = entries[i]
        if e[0] == "type":
            return show(_renumber(e[1], definition))
        if e[0] == "export" and e[2][1][0] == "eq":
            return definition(int(e[2][1][1]))
        raise ShimError(f"{alias_name} refers to a resource or to another interface")

    for i, e in enumerate(entries):
        if e[0] == "export" and e[1] == alias[3]:
            return definition(i)
    raise ShimError(f"{alias[3]} not found in {alias[2]}")


def _reexport(items: list, block: list, p: str, replaced: dict[str, str]) -> tuple[str, list[str]]:
    """The nested component ``$tb-{p}Re`` that re-exports the host's items of one interface
    (``replaced`` ones swapped for the shim's), and the ``with`` clauses that instantiate it.

    Its function imports are typed over the imported resources, its exports over the
    exported ones (an import may not name an exported type), so every type definition
    is written twice: ``$U`` (imports) and ``$T`` (exports)."""
    entries = _type_entries(block)
    exported_as = {int(e[2][1][1]): (j, e[1]) for j, e in enumerate(entries) if e[0] == "export" and e[2][1][0] == "eq"}
    kind: dict[int, str] = {}
    for k, e in enumerate(entries):
        if e[0] == "alias":
            kind[k] = "outer-resource" if exported_as.get(k, (0, '""'))[1].strip('"') in _RESOURCES else "outer-plain"
        elif e[0] == "type":
            kind[k] = "def"
        else:
            kind[k] = "resource" if e[2][1][0] == "sub" else "eq"

    def u(k: int) -> str:
        if kind[k] == "eq":
            n = int(entries[k][2][1][1])
            return f"$O{n}" if kind[n] == "outer-resource" else f"$V{k}"
        return {"outer-resource": f"$O{k}", "outer-plain": f"$P{k}", "def": f"$U{k}", "resource": f"$I{k}"}[kind[k]]

    def t(k: int) -> str:
        if kind[k] == "outer-resource":
            return f"$T{exported_as[k][0]}"
        return f"$P{k}" if kind[k] == "outer-plain" else f"$T{k}"

    lines: list[str] = []
    withs: list[str] = []
    for k, e in enumerate(entries):  # the types it is given, and plain types of other interfaces
        if kind[k] == "outer-resource":
            lines.append(f'(import "o{k}" (type $O{k} (sub resource)))')
            withs.append(f'(with "o{k}" (type {e[3]}))')
        elif kind[k] == "outer-plain":
            lines.append(f"(type $P{k} {_plain_definition(items, e[3])})")
        elif kind[k] == "resource":
            lines.append(f'(import "r{k}" (type $I{k} (sub resource)))')
            withs.append(f'(with "r{k}" (type $tb-{p}x{k}))')
    for k, e in enumerate(entries):  # definitions over the imported resources; named types imported
        if kind[k] == "def":
            lines.append(f"(type $U{k} {show(_renumber(e[1], u))})")
        elif kind[k] == "eq" and not kind[int(e[2][1][1])].startswith("outer-resource"):
            lines.append(f'(import "t{k}" (type $V{k} (eq {u(int(e[2][1][1]))})))')
            withs.append(f'(with "t{k}" (type $tb-{p}y{k}))')
    funcs = [e for e in block if e[0] == "export" and e[2][0] == "func"]
    for i, e in enumerate(funcs):
        lines.append(f'(import "f{i}" (func $F{i} (type {u(int(e[2][1][1]))})))')
        withs.append(f'(with "f{i}" (func {replaced.get(e[1].strip(chr(34)), f"$tb-{p}f{i}")}))')
    for k, e in enumerate(entries):  # exports, and definitions over the exported resources
        if kind[k] == "def":
            lines.append(f"(type $T{k} {show(_renumber(e[1], t))})")
        elif kind[k] == "resource":
            lines.append(f"(export $T{k} {e[1]} (type $I{k}))")
        elif kind[k] == "eq":
            n = int(e[2][1][1])
            lines.append(f"(export $T{k} {e[1]} (type {f'$O{n}' if kind[n] == 'outer-resource' else t(n)}))")
    for i, e in enumerate(funcs):
        lines.append(f"(export {e[1]} (func $F{i}) (func (type {t(int(e[2][1][1]))})))")
    return f"(component $tb-{p}Re\n    " + "\n    ".join(lines) + ")", withs


# The descriptors bridge takes only the one borrow and primitives, so it needs no type
# of the guest's interface: a status is 0 for success, else 1 + the error-code's ordinal.
_FS_BRIDGE = """
  (alias export $FS "descriptor" (type $tb-d))
  (type $tb-fsbridge (instance
    (alias outer 1 $tb-d (type $d))
    (type $bd (borrow $d))
    (export "descriptor-id" (func (param "self" $bd) (result u32)))
    (export "rename-at" (func (param "self" $bd) (param "old-path" string) (param "new-descriptor" u32)
                              (param "new-path" string) (result u32)))
    (export "link-at" (func (param "self" $bd) (param "old-path-flags" u32) (param "old-path" string)
                            (param "new-descriptor" u32) (param "new-path" string) (result u32)))
    (export "is-same-object" (func (param "self" $bd) (param "other" u32) (result bool)))
    (export "stat" (func (param "self" $bd) (result string)))
    (export "stat-at" (func (param "self" $bd) (param "path-flags" u32) (param "path" string) (result string)))
    (export "metadata-hash" (func (param "self" $bd) (result string)))
    (export "metadata-hash-at" (func (param "self" $bd) (param "path-flags" u32) (param "path" string)
                                     (result string)))))
  (import "FS_BRIDGE" (instance $tb-fsbr (type $tb-fsbridge)))
"""

# error-code of wasi:filesystem/types 0.2.x, in declaration order (the ordinal the bridge returns)
ERROR_CODES = [
    "access",
    "would-block",
    "already",
    "bad-descriptor",
    "busy",
    "deadlock",
    "quota",
    "exist",
    "file-too-large",
    "illegal-byte-sequence",
    "in-progress",
    "interrupted",
    "invalid",
    "io",
    "is-directory",
    "loop",
    "too-many-links",
    "message-size",
    "name-too-long",
    "no-device",
    "no-entry",
    "no-lock",
    "insufficient-memory",
    "insufficient-space",
    "not-directory",
    "not-empty",
    "not-recoverable",
    "unsupported",
    "no-tty",
    "no-such-device",
    "overflow",
    "not-permitted",
    "pipe",
    "read-only",
    "invalid-seek",
    "text-file-busy",
    "cross-device",
]  # noqa: SIM905 - one line per word would hide the order

# one memory for the shim's core code: lifted arguments and lowered results land here
_MEM = """
  (core module $tb-Mem
    (memory (export "memory") 1)
    (global $bump (export "bump") (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $osz i32) (param $align i32) (param $nsz i32) (result i32)
      (local $p i32)
      ;; shrinking keeps the block (a latin1 string is written at its UTF-8 size, then shrunk)
      (if (i32.and (i32.ne (local.get $old) (i32.const 0)) (i32.le_u (local.get $nsz) (local.get $osz)))
        (then (return (local.get $old))))
      ;; at least 8: a latin1+utf16 string must start 2-aligned, and bytes lifted here go on as one
      (local.set $align (select (local.get $align) (i32.const 8) (i32.gt_u (local.get $align) (i32.const 8))))
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (global.set $bump (i32.add (local.get $p) (local.get $nsz)))
      (block $ok
        (br_if $ok (i32.le_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.lt_s (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $bump)
                                                                (i32.mul (memory.size) (i32.const 65536)))
                                                       (i32.const 16))
                                            (i32.const 1)))
                      (i32.const 0))
          (then unreachable)))
      (if (local.get $old) (then (memory.copy (local.get $p) (local.get $old) (local.get $osz))))  ;; growing
      (local.get $p)))
  (core instance $tb-mem (instantiate $tb-Mem))
"""

_FS_CORE = """
  (type $tb-bd (borrow $tb-d))
  (core func $tb-id (canon lower (func $tb-fsbr "descriptor-id")))
  (core func $tb-ren (canon lower (func $tb-fsbr "rename-at") (memory (core memory $tb-mem "memory"))))
  (core func $tb-lnk (canon lower (func $tb-fsbr "link-at") (memory (core memory $tb-mem "memory"))))
  (core func $tb-sam (canon lower (func $tb-fsbr "is-same-object")))
  (core func $tb-drop (canon resource.drop $tb-d))
  (core func $tb-st (canon lower (func $tb-fsbr "stat") LATIN1))
  (core func $tb-sta (canon lower (func $tb-fsbr "stat-at") LATIN1))
  (core func $tb-mh (canon lower (func $tb-fsbr "metadata-hash") LATIN1))
  (core func $tb-mha (canon lower (func $tb-fsbr "metadata-hash-at") LATIN1))
  (core module $tb-FsMain
    (import "mem" "memory" (memory 1))
    (import "mem" "bump" (global $bump (mut i32)))
    (import "br" "id" (func $id (param i32) (result i32)))
    (import "br" "rename" (func $ren (param i32 i32 i32 i32 i32 i32) (result i32)))
    (import "br" "link" (func $lnk (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
    (import "br" "same" (func $same (param i32 i32) (result i32)))
    (import "br" "drop" (func $drop (param i32)))
    (import "br" "st" (func $st (param i32 i32)))
    (import "br" "sta" (func $sta (param i32 i32 i32 i32 i32)))
    (import "br" "mh" (func $mh (param i32 i32)))
    (import "br" "mha" (func $mha (param i32 i32 i32 i32 i32)))
    ;; stat and metadata-hash come back as a string holding the result's bytes, already in
    ;; the canonical layout (the host packs them): its pointer is the result
    (func $raw (param $self i32) (result i32)
      (call $drop (local.get $self))
      (global.set $bump (i32.const 1024))
      (i32.load (i32.const 8)))
    (func (export "stat") (param i32) (result i32)
      (call $st (local.get 0) (i32.const 8)) (call $raw (local.get 0)))
    (func (export "stat-at") (param i32 i32 i32 i32) (result i32)
      (call $sta (local.get 0) (local.get 1) (local.get 2) (local.get 3) (i32.const 8)) (call $raw (local.get 0)))
    (func (export "mhash") (param i32) (result i32)
      (call $mh (local.get 0) (i32.const 8)) (call $raw (local.get 0)))
    (func (export "mhash-at") (param i32 i32 i32 i32) (result i32)
      (call $mha (local.get 0) (local.get 1) (local.get 2) (local.get 3) (i32.const 8)) (call $raw (local.get 0)))
    ;; result<_, error-code> at 16 from a bridge status; the strings lifted into this
    ;; memory are released; borrowed handles a lifted function receives are dropped
    (func $finish (param $status i32) (param $a i32) (param $b i32) (result i32)
      (i32.store8 (i32.const 16) (i32.ne (local.get $status) (i32.const 0)))
      (i32.store8 (i32.const 17) (i32.sub (local.get $status) (i32.const 1)))
      (call $drop (local.get $a))
      (call $drop (local.get $b))
      (global.set $bump (i32.const 1024))
      (i32.const 16))
    (func (export "rename") (param i32 i32 i32 i32 i32 i32) (result i32)
      (call $finish (call $ren (local.get 0) (local.get 1) (local.get 2) (call $id (local.get 3)) (local.get 4)
                               (local.get 5))
                    (local.get 0) (local.get 3)))
    (func (export "link") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
      (call $finish (call $lnk (local.get 0) (local.get 1) (local.get 2) (local.get 3) (call $id (local.get 4))
                               (local.get 5) (local.get 6))
                    (local.get 0) (local.get 4)))
    (func (export "same") (param i32 i32) (result i32)
      (local $r i32)
      (local.set $r (call $same (local.get 0) (call $id (local.get 1))))
      (call $drop (local.get 0))
      (call $drop (local.get 1))
      (local.get $r)))
  (core instance $tb-fsmain (instantiate $tb-FsMain
    (with "mem" (instance $tb-mem))
    (with "br" (instance (export "id" (func $tb-id)) (export "rename" (func $tb-ren)) (export "link" (func $tb-lnk))
                         (export "same" (func $tb-sam)) (export "drop" (func $tb-drop))
                         (export "st" (func $tb-st)) (export "sta" (func $tb-sta)) (export "mh" (func $tb-mh))
                         (export "mha" (func $tb-mha))))))
"""

# poll: the bridge takes pollables by number, so it needs no borrow but the one of pollable-id
_POLL_BRIDGE = """
  (alias export $POLL "pollable" (type $tb-pl))
  (type $tb-pollbridge (instance
    (alias outer 1 $tb-pl (type $p))
    (type $bp (borrow $p))
    (export "pollable-id" (func (param "self" $bp) (result u32)))
    (export "poll" (func (param "in" (list u32)) (result (list u32))))))
  (import "POLL_BRIDGE" (instance $tb-pollbr (type $tb-pollbridge)))
"""

_POLL_CORE = """
  (core func $tb-pid (canon lower (func $tb-pollbr "pollable-id")))
  (core func $tb-pdrop (canon resource.drop $tb-pl))
  (core func $tb-pol (canon lower (func $tb-pollbr "poll") (memory (core memory $tb-mem "memory"))
                                  (realloc (core func $tb-mem "realloc"))))
  (core module $tb-PollMain
    (import "mem" "memory" (memory 1))
    (import "mem" "bump" (global $bump (mut i32)))
    (import "br" "id" (func $id (param i32) (result i32)))
    (import "br" "drop" (func $drop (param i32)))
    (import "br" "poll" (func $poll (param i32 i32 i32)))
    ;; each borrowed pollable in the lifted list is replaced in place by its number (and
    ;; the borrow dropped); the host lifts that list before it lowers its answer, so the
    ;; answer may be allocated from the start again; it lands as (ptr, len) at 24
    (func (export "poll") (param $at i32) (param $n i32) (result i32)
      (local $p i32) (local $end i32) (local $h i32)
      (local.set $p (local.get $at))
      (local.set $end (i32.add (local.get $at) (i32.shl (local.get $n) (i32.const 2))))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $h (i32.load (local.get $p)))
        (i32.store (local.get $p) (call $id (local.get $h)))
        (call $drop (local.get $h))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))
      (global.set $bump (i32.const 1024))
      (call $poll (local.get $at) (local.get $n) (i32.const 24))
      (i32.const 24)))
  (core instance $tb-pollmain (instantiate $tb-PollMain
    (with "mem" (instance $tb-mem))
    (with "br" (instance (export "id" (func $tb-pid)) (export "drop" (func $tb-pdrop))
                         (export "poll" (func $tb-pol))))))
  (func $tb-poll (param "in" (list (borrow $tb-pl))) (result (list u32))
    (canon lift (core func $tb-pollmain "poll") OPTS))
"""

_OPTS = '(memory (core memory $tb-mem "memory")) (realloc (core func $tb-mem "realloc")) string-encoding=utf8'
_LATIN1 = '(memory (core memory $tb-mem "memory")) (realloc (core func $tb-mem "realloc")) string-encoding=latin1+utf16'
# the replacements, lifted only for the methods the guest imports (their types are then in its interface)
_FS_LIFTED = {
    "[method]descriptor.rename-at": """
  (func $tb-rename (param "self" $tb-bd) (param "old-path" string) (param "new-descriptor" $tb-bd)
                   (param "new-path" string) (result (result (error $tb-ec)))
    (canon lift (core func $tb-fsmain "rename") OPTS))""",
    "[method]descriptor.link-at": """
  (func $tb-link (param "self" $tb-bd) (param "old-path-flags" $tb-pf) (param "old-path" string)
                 (param "new-descriptor" $tb-bd) (param "new-path" string) (result (result (error $tb-ec)))
    (canon lift (core func $tb-fsmain "link") OPTS))""",
    "[method]descriptor.is-same-object": """
  (func $tb-same (param "self" $tb-bd) (param "other" $tb-bd) (result bool)
    (canon lift (core func $tb-fsmain "same")))""",
    "[method]descriptor.stat": """
  (func $tb-stat (param "self" $tb-bd) (result (result $tb-dst (error $tb-ec)))
    (canon lift (core func $tb-fsmain "stat") OPTS))""",
    "[method]descriptor.stat-at": """
  (func $tb-stat-at (param "self" $tb-bd) (param "path-flags" $tb-pf) (param "path" string)
                    (result (result $tb-dst (error $tb-ec)))
    (canon lift (core func $tb-fsmain "stat-at") OPTS))""",
    "[method]descriptor.metadata-hash": """
  (func $tb-mhash (param "self" $tb-bd) (result (result $tb-mhv (error $tb-ec)))
    (canon lift (core func $tb-fsmain "mhash") OPTS))""",
    "[method]descriptor.metadata-hash-at": """
  (func $tb-mhash-at (param "self" $tb-bd) (param "path-flags" $tb-pf) (param "path" string)
                     (result (result $tb-mhv (error $tb-ec)))
    (canon lift (core func $tb-fsmain "mhash-at") OPTS))""",
}

# stream methods: (bridge function, lifted id, reads?)
_IO_METHODS = {
    "[method]input-stream.read": ("read", "$tb-read", True),
    "[method]input-stream.blocking-read": ("blocking-read", "$tb-bread", True),
    "[method]output-stream.write": ("write", "$tb-write", False),
    "[method]output-stream.blocking-write-and-flush": ("blocking-write-and-flush", "$tb-bwrite", False),
}


def _io_bridge(S: str, imported: set) -> str:
    """The streams bridge: the same methods with the data as a latin1 ``string``."""
    present = [m for m in _IO_METHODS if m in imported]
    reads = any(_IO_METHODS[m][2] for m in present)
    writes = any(not _IO_METHODS[m][2] for m in present)
    out = [f'  (alias export {S} "error" (type $tb-err))', f'  (alias export {S} "stream-error" (type $tb-se))']
    body = ["(alias outer 1 $tb-err (type $err))", '(export "error" (type (eq $err)))']
    body += ["(alias outer 1 $tb-se (type $se0))", '(export "stream-error" (type $se (eq $se0)))']
    for flag, name, short in ((reads, "input-stream", "is"), (writes, "output-stream", "os")):
        if flag:
            out.append(f'  (alias export {S} "{name}" (type $tb-{short}))')
            body += [
                f"(alias outer 1 $tb-{short} (type ${short}0))",
                f'(export "{name}" (type ${short} (eq ${short}0)))',
            ]
            body.append(f"(type $b{short} (borrow ${short}))")
    body += ["(type $rs (result string (error $se)))", "(type $ru (result (error $se)))"]
    for m in present:
        fn, _, is_read = _IO_METHODS[m]
        if is_read:
            body.append(f'(export "{fn}" (func (param "self" $bis) (param "len" u64) (result $rs)))')
        else:
            body.append(f'(export "{fn}" (func (param "self" $bos) (param "contents" string) (result $ru)))')
    out.append("  (type $tb-iobridge (instance\n    " + "\n    ".join(body) + "))")
    out.append(f'  (import "{IO_BRIDGE}" (instance $tb-iobr (type $tb-iobridge)))')
    return "\n".join(out) + "\n"


def _io_core(imported: set) -> str:
    """Lowerings of the streams bridge (latin1: one byte a character), the core functions
    that call them, and the lifted replacements."""
    present = [m for m in _IO_METHODS if m in imported]
    lat = _LATIN1
    out, imports, funcs, withs, lifted = [], [], [], [], []
    for short in ("is", "os"):
        if any(_IO_METHODS[m][2] == (short == "is") for m in present):
            out.append(f"  (core func $tb-drop-{short} (canon resource.drop $tb-{short}))")
            imports.append(f'(import "br" "drop-{short}" (func $drop-{short} (param i32)))')
            withs.append(f'(export "drop-{short}" (func $tb-drop-{short}))')
    for k, m in enumerate(present):
        fn, ident, is_read = _IO_METHODS[m]
        out.append(f'  (core func $tb-io{k} (canon lower (func $tb-iobr "{fn}") {lat}))')
        withs.append(f'(export "m{k}" (func $tb-io{k}))')
        if is_read:  # the result (a latin1 string: the same layout as list<u8>) lands at 16
            imports.append(f'(import "br" "m{k}" (func $m{k} (param i32 i64 i32)))')
            funcs.append(
                f'(func (export "m{k}") (param i32 i64) (result i32) (global.set $bump (i32.const 1024))'
                f" (call $m{k} (local.get 0) (local.get 1) (i32.const 16)) (call $drop-is (local.get 0))"
                " (i32.const 16))"
            )
            lifted.append(
                f'  (func {ident} (param "self" (borrow $tb-is)) (param "len" u64)'
                f' (result (result (list u8) (error $tb-se))) (canon lift (core func $tb-iomain "m{k}") {_OPTS}))'
            )
        else:  # the bytes lifted into this memory go on as a latin1 string
            imports.append(f'(import "br" "m{k}" (func $m{k} (param i32 i32 i32 i32)))')
            funcs.append(
                f'(func (export "m{k}") (param i32 i32 i32) (result i32)'
                f" (call $m{k} (local.get 0) (local.get 1) (local.get 2) (i32.const 16))"
                " (call $drop-os (local.get 0)) (global.set $bump (i32.const 1024)) (i32.const 16))"
            )
            lifted.append(
                f'  (func {ident} (param "self" (borrow $tb-os)) (param "contents" (list u8))'
                f' (result (result (error $tb-se))) (canon lift (core func $tb-iomain "m{k}") {_OPTS}))'
            )
    out.append(
        "  (core module $tb-IoMain\n"
        '    (import "mem" "memory" (memory 1))\n    (import "mem" "bump" (global $bump (mut i32)))\n    '
        + "\n    ".join(imports + funcs)
        + ")"
    )
    out.append(
        '  (core instance $tb-iomain (instantiate $tb-IoMain (with "mem" (instance $tb-mem))'
        f' (with "br" (instance {" ".join(withs)}))))'
    )
    return "\n".join(out + lifted) + "\n"


def _bridges(items: list, wraps: list[str]) -> str:
    """The bridge imports the shim (and the composition around it) declare."""
    out = []
    for name in wraps:
        iface = name.partition("@")[0]
        imported = {e[1].strip('"') for e in _block(items, name) if e[0] == "export"}
        if iface == "wasi:filesystem/types":
            out.append(_FS_BRIDGE.replace("$FS", f"${name}").replace("FS_BRIDGE", FS_BRIDGE))
        elif iface == "wasi:io/poll":
            out.append(_POLL_BRIDGE.replace("$POLL", f"${name}").replace("POLL_BRIDGE", POLL_BRIDGE))
        else:
            out.append(_io_bridge(f"${name}", imported))
    return "".join(out)


def shim_text(items: list, wraps: list[str]) -> str:
    """The shim: imports the guest's interfaces up to the last one in ``wraps`` and the
    bridges, and exports each interface in ``wraps`` with its replacements."""
    last = max(i for i, it in enumerate(items) if it[0] == "import" and it[1].strip('"') in wraps)
    header = ["  " + show(it) for it in items[: last + 1]]
    body = [_bridges(items, wraps), _MEM]
    for name in wraps:
        iface = name.partition("@")[0]
        p, replaced = WRAPPED[iface]
        F = f"${name}"
        block = _block(items, name)
        imported = {e[1].strip('"') for e in block if e[0] == "export"}
        if p == "fs":
            body.append(_FS_CORE.replace("LATIN1", _LATIN1))
            for tname, alias in (
                ("error-code", "$tb-ec"),
                ("path-flags", "$tb-pf"),
                ("descriptor-stat", "$tb-dst"),
                ("metadata-hash-value", "$tb-mhv"),
            ):
                if tname in imported:
                    body.append(f'  (alias export {F} "{tname}" (type {alias}))')
            body += [text.replace("OPTS", _OPTS) for m, text in _FS_LIFTED.items() if m in imported]
        elif p == "poll":
            body.append(_POLL_CORE.replace("OPTS", _OPTS))
        else:
            body.append(_io_core(imported))
        for k, e in enumerate(_type_entries(block)):
            if e[0] == "export":
                body.append(f"  (alias export {F} {e[1]} (type $tb-{p}{'x' if e[2][1][0] == 'sub' else 'y'}{k}))")
        funcs = [e for e in block if e[0] == "export" and e[2][0] == "func"]
        for i, e in enumerate(funcs):
            if e[1].strip('"') not in replaced:
                body.append(f"  (alias export {F} {e[1]} (func $tb-{p}f{i}))")
        re_export, withs = _reexport(items, block, p, replaced)
        body.append("  " + re_export)
        body.append(f"  (instance $tb-{p}out (instantiate $tb-{p}Re " + " ".join(withs) + "))")
        body.append(f'  (export "{name}" (instance $tb-{p}out))')
    return "(component\n" + "\n".join(header) + "\n" + "\n".join(body) + "\n)\n"


def composition_text(stand_in: str, items: list, wraps: list[str]) -> str:
    """The guest (its stand-in) instantiated with the shim's interfaces in place of the
    host's ones in ``wraps`` and the host's others; exports what the guest exports."""
    imports = [(it[1], it[2][1]) for it in items if it[0] == "import"]  # (quoted name, $id)
    last = max(i for i, (n, _) in enumerate(imports) if n.strip('"') in wraps)
    shim_with = [f"(with {n} (instance {i}))" for n, i in imports[: last + 1]]
    bridges = [BRIDGES[WRAPPED[n.partition("@")[0]][0]] for n in wraps]
    shim_with += [f'(with "{b}" (instance {i}))' for b, i in bridges]
    shim = shim_text(items, wraps).replace("(component\n", "(component $tb-shim\n", 1)
    guest_with = []
    for n, i in imports:
        k = next((k for k, w in enumerate(wraps) if f'"{w}"' == n), None)
        guest_with.append(f"(with {n} (instance {i if k is None else f'$tb-w{k}'}))")
    exports = [e for e in parse(stand_in)[0][1:] if e[0] == "export"]
    lines = ["(component"] + ["  " + show(it) for it in items]
    lines.append(_bridges(items, wraps))
    lines.append(shim)
    lines.append(f"  (instance $tb-s (instantiate $tb-shim {' '.join(shim_with)}))")
    lines += [f'  (alias export $tb-s "{w}" (instance $tb-w{k}))' for k, w in enumerate(wraps)]
    lines.append("  " + stand_in.replace("(component", "(component $tb-guest", 1))  # the guest replaces it
    lines.append(f"  (instance $tb-g (instantiate $tb-guest {' '.join(guest_with)}))")
    for k, e in enumerate(exports):
        name = next(x for x in e[1:] if isinstance(x, str) and x.startswith('"'))
        lines.append(f"  (alias export $tb-g {name} (instance $tb-e{k}))")
        lines.append(f"  (export {name} (instance $tb-e{k}))")
    lines.append(")")
    return "\n".join(lines) + "\n"


def needs_shim(component) -> list[str]:
    """The guest's imports the shim wraps (those with a method it replaces), in order."""
    import wasmtime.component as wc

    from tarbox.wasi.engine import engine

    eng = engine(False)
    out = []
    for name, item in component.type.imports(eng).items():
        spec = WRAPPED.get(name.partition("@")[0])
        if (
            spec is not None
            and name.partition("@")[2].startswith("0.2")
            and isinstance(item.ty, wc.ComponentInstanceType)
            and any(m in spec[1] for m in item.ty.exports(eng))
        ):
            out.append(name)
    return out


def uleb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _splice(outer: bytes, guest: bytes) -> bytes:
    """``outer`` with its second nested component (the stand-in) replaced by ``guest``."""
    out = bytearray(outer[:8])
    pos, seen = 8, 0
    while pos < len(outer):
        sid = outer[pos]
        size, shift, p = 0, 0, pos + 1
        while True:
            b = outer[p]
            size |= (b & 0x7F) << shift
            p += 1
            shift += 7
            if not b & 0x80:
                break
        payload = outer[p : p + size]
        if sid == 4:  # a nested component
            seen += 1
            if seen == 2:
                payload = guest
        out += bytes([sid]) + uleb128(len(payload)) + payload
        pos = p + size
    if seen != 2:
        raise ShimError("the composition does not have the expected shape")
    return bytes(out)


def wrap(wasm: bytes, wraps: list[str]) -> bytes:
    """The guest composed with its shim (cached on disk by the guest's hash)."""
    key = hashlib.sha256(wasm + repr(wraps).encode() + GENERATOR.encode()).hexdigest()[:32]
    out = cache_dir().parent / "shimmed" / f"{key}.wasm"
    if out.exists():
        return out.read_bytes()
    with _lock, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "guest.wasm").write_bytes(wasm)
        try:
            stand_in, items = _stand_in(work / "guest.wasm", work)
            (work / "outer.wat").write_text(composition_text(stand_in, items, wraps))
            _run([wasm_tools(), "parse", "outer.wat", "-o", "outer.wasm"], cwd=work)
        except subprocess.CalledProcessError as exc:
            raise ShimError(f"wrapping {', '.join(wraps)} failed: {exc.stderr.strip()[-400:]}") from exc
        except (LookupError, ValueError, StopIteration) as exc:  # an import type this generator does not know
            raise ShimError(f"wrapping {', '.join(wraps)} failed: unexpected import type ({exc!r})") from exc
        composed = _splice((work / "outer.wasm").read_bytes(), wasm)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(f".tmp{os.getpid()}")
        tmp_out.write_bytes(composed)
        os.replace(tmp_out, out)
    return composed
