"""Hostile guests: modules built to break the host, each with the result it must get.

* every preview1 function called with out-of-bounds pointers, pointers at the
  last byte of memory, huge lengths and bad descriptors (4 variants x 46):
  each call returns an errno, never a host exception or a trap;
* malformed modules: truncated at many offsets, random bytes (with and
  without the wasm header), unknown imports, a wrong import signature:
  ``INVALID_MODULE`` with a message;
* iovec counts of 0 and 1,000,000; an infinite loop (``TIMEOUT``); memory
  grown until refused (never past the limit); 100,000 opens (capped at
  ``max_fds``, the rest EMFILE); an output flood (``OUTPUT_LIMIT``); unbounded
  recursion (``TRAPPED``, stack overflow).

Meanwhile a canary thread keeps running an honest guest against the same
tenant: every canary run must succeed. At the end the tenant is fsck-clean.
"""

from __future__ import annotations

import random
import struct
import threading
import uuid

import wasmtime

from suites import SuiteResult
from tarbox.wasi import RunStatus, WasiHost
from tarbox.wasi.preview1_abi import SIGNATURES
from wasi_support import guest

MAX_ERRNO = 76
_PRINT = """
  (func $print (param $v i32)
    (i32.store (i32.const 0) (local.get $v))
    (i32.store (i32.const 8) (i32.const 0)) (i32.store (i32.const 12) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 4))))"""
_FD_WRITE = '(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'
VARIANTS = {
    "pointers past the end": -16,
    "pointers at the last byte": 65535,
    "huge lengths": 0x7FFFFFFF,
    "bad descriptors": -1,
}


def _call_module(name: str, sig: str, value: int) -> bytes:
    """A module that calls ``name`` once with every i32 argument ``value`` (the first,
    usually a descriptor, is the preopen 3 unless the variant is about descriptors)."""
    params = " ".join("i64" if c == "I" else "i32" for c in sig)
    args = []
    for i, c in enumerate(sig):
        if c == "I":
            args.append("(i64.const 0)")
        else:
            args.append(f"(i32.const {3 if i == 0 and value != -1 else value})")
    imp = f'(import "wasi_snapshot_preview1" "{name}" (func $f (param {params}) (result i32)))'
    if name == "fd_write":
        imp = ""
        call = f"(call $fd_write {' '.join(args)})"
    else:
        call = f"(call $f {' '.join(args)})"
    return _wasm(
        f"""(module {_FD_WRITE} {imp} (memory (export "memory") 1) {_PRINT}
        (func (export "_start") (call $print {call})))"""
    )


def _wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def _wat(body: str, imports: str = "", memory: str = "1") -> bytes:
    return _wasm(f'(module {_FD_WRITE} {imports} (memory (export "memory") {memory}) {_PRINT} {body})')


def _start(body: str, imports: str = "") -> bytes:
    return _wat(f'(func (export "_start") {body})', imports)


def _i32(*values: int) -> str:
    return " ".join(f"(i32.const {v})" for v in values)


_PATH_OPEN = (
    '(import "wasi_snapshot_preview1" "path_open"'
    " (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"
)
_OPEN_DOT = f"(call $open {_i32(3, 0, 100, 1, 2)} (i64.const 16386) (i64.const -1) {_i32(0, 200)})"
_INC = "(local.set {0} (i32.add (local.get {0}) (i32.const 1)))"

# name -> (module, what its RunResult must satisfy)
SPECIAL = {
    "iovec count 0": (
        _start(f"(call $print (call $fd_write {_i32(1, 64, 0, 4)}))"),
        lambda r: r.ok and r.stdout == struct.pack("<i", 0),
    ),
    "iovec count 1,000,000": (
        _start(f"(call $print (call $fd_write {_i32(1, 64, 1_000_000, 4)}))"),
        lambda r: r.ok and 0 < struct.unpack("<i", r.stdout)[0] <= MAX_ERRNO,
    ),
    "infinite loop": (  # the host's timeout is 5 s
        _start("(loop $l (br $l))"),
        lambda r: r.status is RunStatus.TIMEOUT and r.trap,
    ),
    "unbounded recursion": (
        _wat(
            "(func $r (param i32) (call $r (i32.add (local.get 0) (i32.const 1))))"
            ' (func (export "_start") (call $r (i32.const 0)))'
        ),
        lambda r: r.status is RunStatus.TRAPPED and "stack" in (r.trap or "").lower(),
    ),
    "output flood": (
        _start(
            f"(i32.store {_i32(8, 1024)}) (i32.store {_i32(12, 60000)})"
            f" (loop $l (drop (call $fd_write {_i32(1, 8, 1, 4)})) (br $l))"
        ),
        lambda r: r.status is RunStatus.OUTPUT_LIMIT and r.trap,
    ),
    "memory grown until refused": (  # one page at a time until memory.grow fails; prints the size
        _start(
            "(block $done (loop $l (br_if $done (i32.eq (memory.grow (i32.const 1)) (i32.const -1))) (br $l)))"
            " (call $print (memory.size))"
        ),
        lambda r: (r.ok and struct.unpack("<i", r.stdout)[0] * 65536 <= 64 << 20) or r.status is RunStatus.MEMORY_LIMIT,
    ),
    "100,000 opens": (  # path_open(".") 100,000 times; prints how many succeeded
        _start(
            f"(local $i i32) (local $ok i32) (i32.store8 {_i32(100, 46)})"
            f" (loop $l (if (i32.eqz {_OPEN_DOT}) (then {_INC.format('$ok')})) {_INC.format('$i')}"
            "  (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))"
            " (call $print (local.get $ok))",
            _PATH_OPEN,
        ),
        lambda r: r.ok and 0 < struct.unpack("<i", r.stdout)[0] <= 1024 - 4,
    ),
    "unknown import": (
        _start("", '(import "wasi_snapshot_preview1" "no_such_function" (func))'),
        lambda r: r.status is RunStatus.INVALID_MODULE and "no_such_function" in (r.trap or ""),
    ),
    "import from another module": (
        _start("", '(import "env" "system" (func (param i32)))'),
        lambda r: r.status is RunStatus.INVALID_MODULE and r.trap,
    ),
    "wrong import signature": (
        _wasm(
            '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i64)))'
            ' (memory (export "memory") 1) (func (export "_start")))'
        ),
        lambda r: r.status is RunStatus.INVALID_MODULE and r.trap,
    ),
    "no _start": (
        _wasm('(module (memory (export "memory") 1))'),
        lambda r: r.status is RunStatus.INVALID_MODULE and r.trap,
    ),
}


def run(tb, *, truncations: int = 20, random_modules: int = 20, seed: int = 1) -> SuiteResult:
    result = SuiteResult("hostile guests")
    result.figures["errno by variant"] = by_variant = {}
    rng = random.Random(seed)
    tenant = tb.create_tenant(f"hostile-{uuid.uuid4().hex[:10]}")
    try:
        fs = tb.filesystem(tenant)
        fs.makedirs("/workspace/keep")
        fs.write_file("/workspace/keep/data", b"written before the hostile runs")
        host = WasiHost(tb, tenant, timeout=5.0, memory_limit=64 << 20, output_limit=1 << 20)
        # only the infinite loop is about the timeout; the other cases test limits that are
        # not time (descriptor cap, memory, output), so a loaded machine may not fail them
        # (100,000 opens took 1.6 s alone and over 5 s beside the canary on 2 busy cores)
        patient = WasiHost(tb, tenant, timeout=120.0, memory_limit=64 << 20, output_limit=1 << 20)
        stop = threading.Event()
        canary_runs, canary_failures = [0], []
        canary_thread = threading.Thread(target=_canary, args=(tb, tenant, stop, canary_runs, canary_failures))
        canary_thread.start()
        try:
            _matrix(host, result, by_variant)
            for name, (wasm, ok) in SPECIAL.items():
                result.cases += 1
                r = (host if name == "infinite loop" else patient).run(wasm, [name])
                if not ok(r):
                    result.fail(
                        f"{name}: got status={r.status} code={r.exit_code} trap={r.trap!r} stdout={r.stdout[:40]!r}"
                    )
            good = guest("ops")
            for cut in sorted({rng.randrange(1, len(good)) for _ in range(truncations)}):
                _invalid(host, good[:cut], f"truncated at {cut} of {len(good)} bytes", result)
            for i in range(random_modules):
                body = rng.randbytes(rng.randrange(1, 4096))
                _invalid(host, (b"\0asm\1\0\0\0" if i % 2 else b"") + body, f"random module {i}", result)
        finally:
            stop.set()
            canary_thread.join()
        result.figures["canary runs"] = canary_runs[0]
        for f in canary_failures:
            result.fail(f"canary: {f}")
        if fs.read_file("/workspace/keep/data") != b"written before the hostile runs":
            result.fail("data written before the hostile runs changed")
        result.fsck(tb, tenant)
    finally:
        tb.delete_tenant(tenant)
    return result


def _matrix(host, result, by_variant) -> None:
    for name, sig in sorted(SIGNATURES.items()):
        if name == "proc_exit":
            continue
        for variant, value in VARIANTS.items():
            if not sig and variant != "bad descriptors":
                continue
            result.cases += 1
            r = host.run(_call_module(name, sig, value), [name])
            if not r.ok or len(r.stdout) != 4:
                result.fail(f"{name} with {variant}: status={r.status} code={r.exit_code} trap={r.trap!r}")
                continue
            err = struct.unpack("<i", r.stdout)[0]
            if not 0 <= err <= MAX_ERRNO:
                result.fail(f"{name} with {variant}: returned {err}, not an errno")
            if err == 0:
                result.figures.setdefault("succeeded", []).append(f"{name} ({variant})")
            by_variant.setdefault(variant, {}).setdefault(err, 0)
            by_variant[variant][err] += 1
    result.cases += 1
    exit7 = _wasm(
        '(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
        ' (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 7))))'
    )
    r = host.run(exit7, ["proc_exit"])
    if r.status is not RunStatus.EXITED or r.exit_code != 7:
        result.fail(f"proc_exit(7): status={r.status} code={r.exit_code}")


def _invalid(host, wasm: bytes, what: str, result: SuiteResult) -> None:
    result.cases += 1
    r = host.run(wasm, ["x"])
    if r.status is not RunStatus.INVALID_MODULE or not r.trap:
        result.fail(f"{what}: status={r.status} trap={r.trap!r} (expected INVALID_MODULE with a message)")


def _canary(tb, tenant, stop: threading.Event, runs: list[int], failures: list[str]) -> None:
    """An honest guest on the same tenant, over and over, while the hostile ones run."""
    host = WasiHost(tb, tenant, timeout=30.0)
    wasm = guest("ops")
    while not stop.is_set():
        n = runs[0]
        script = f"mkdir canary{n}\nopen canary{n}/f wc\nwrite 0 canary-{n}\nclose 0\ncat canary{n}/f\n"
        r = host.run(wasm, ["ops"], stdin=script.encode())
        if not r.ok or f"[canary-{n}]".encode() not in r.stdout:
            failures.append(f"run {n}: status={r.status} code={r.exit_code} stdout={r.stdout[-200:]!r}")
        runs[0] += 1
