"""Confinement fuzzing: hypothesis-drawn hostile paths through a real guest.

Each example makes a tenant whose preopen ``/workspace`` holds decoys
(symlinks to ``/``, ``/.tarbox``, ``..``, the other preopen, loops, a
41-link chain) beside secrets it must never reach: a directory outside the
preopen, a second preopen ``/data`` (fd 4; the guest only uses fd 3), a
checkpoint message shown by ``/.tarbox/layers/list``, and another tenant.
Every secret holds the bytes ``SECRET``; the guest (tests/guests/confine.c)
prints whatever it reads or lists, so an escape shows in its stdout. After the
run: no ``SECRET`` in the output, nothing outside the preopen changed, no new
layer, every case ended in an errno (EIO would mean a host exception turned
into an error; a trap means one escaped), and fsck is clean.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import threading
import uuid
import warnings
from pathlib import Path

import hypothesis
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

from suites import SuiteResult
from tarbox.wasi import Mount, WasiHost
from wasi_support import _native_modules, guest, native_engine

OPS = [
    "open_read",
    "stat",
    "create_write",
    "mkdir",
    "rename",
    "symlink",
    "unlink",
    "rmdir",
    "readlink",
    "link",
    "list",
    "times",
]
EIO = 29
ENAMETOOLONG = 37

# Mostly names that exist (so walks go deep and through the decoys), some hostile ones.
_COMMON = [
    b"a", b"b", b"c", b"f", b"new", b"moved", b"..", b"..", b".", b"l_root", b"l_ctl", b"l_ctl_list",
    b"l_up", b"l_up2", b"l_out", b"l_abs_out", b"l_data", b"l_data2", b"l_ws", b"loop1", b"self",
    b"chain0", b"chain20", b"chain39",
]  # fmt: skip
_HOSTILE = [
    b"", b"...", b"data", b"workspace", b".tarbox", b"layers", b"outside", b"n" * 255, b"n" * 256,
    b"x" * 4096, b"a\0b", b"\0", b"\xff\xfe", b"\xc3\x28", b"a\\b",
]  # fmt: skip
_common = st.sampled_from(_COMMON)
component = st.one_of(*[_common] * 8, st.sampled_from(_HOSTILE), st.binary(min_size=1, max_size=6))


def _join(lead: bytes, parts: list[bytes], seps: list[bytes], trail: bytes) -> bytes:
    out = parts[0]
    for sep, part in zip(seps, parts[1:], strict=False):
        out += sep + part
    return lead + out + trail


_joined = st.builds(
    _join,
    st.sampled_from([b"", b"", b"", b"", b"", b"/", b"//", b"./"]),
    st.lists(component, min_size=1, max_size=5),
    st.lists(st.sampled_from([b"/", b"/", b"/", b"//", b"/./"]), min_size=5, max_size=5),
    st.sampled_from([b"", b"", b"", b"/", b"/."]),
)
path = st.one_of(
    _joined,
    _joined,
    _joined,
    st.builds(
        lambda n, tail: b"../" * n + tail,
        st.integers(1, 300),
        st.sampled_from([b"", b"a", b"outside", b"outside/secret"]),
    ),
    st.builds(lambda n: b"a/" * n + b"f", st.integers(1, 600)),  # deep nesting, past PATH_MAX
)
case = st.tuples(st.integers(0, len(OPS) - 1), st.booleans(), path, path)


def encode(cases: list[tuple[int, bool, bytes, bytes]]) -> bytes:
    out = bytearray()
    for op, follow, a, b in cases:
        a, b = a[:65535], b[:65535]
        out += struct.pack("<BBHH", op, int(follow), len(a), len(b)) + a + b
    return bytes(out)


# The tenant's tree (the oracle gets the same one on disk): preopens /workspace and /data.
# Symlink targets name "outside"; only what lies there (bytes, names) says SECRET.
DIRS = ["/outside", "/data", "/workspace/a/b"]
FILES = {
    "/outside/secret": b"SECRET outside the preopen",
    "/outside/SECRET-name": b"",
    "/SECRET-at-the-root": b"",
    "/data/secret": b"SECRET in the other preopen",
    "/workspace/a/f": b"plain file a/f",
    "/workspace/c": b"plain file c",
}
LINKS = {
    "l_root": "/",
    "l_ctl": "/.tarbox",
    "l_ctl_list": "/.tarbox/layers/list",
    "l_up": "..",
    "l_up2": "a/../..",
    "l_out": "../outside",
    "l_abs_out": "/outside/secret",
    "l_data": "/data",
    "l_data2": "../data/secret",
    "l_ws": "/workspace",
    "loop1": "loop2",
    "loop2": "loop1",
    "self": "self",
    "a/b/l_upup": "../../../outside/secret",
    **{f"chain{i}": f"chain{i + 1}" for i in range(40)},
    "chain40": "a",
}


def _setup(tb, tenant, other) -> None:
    fs = tb.filesystem(tenant)
    for d in DIRS:
        fs.makedirs(d)
    for p, data in FILES.items():
        fs.write_file(p, data)
    for name, target in LINKS.items():
        fs.symlink(target, f"/workspace/{name}")
    fs.checkpoint("SECRET in a checkpoint message")
    ofs = tb.filesystem(other)
    ofs.makedirs("/workspace")
    ofs.write_file("/workspace/secret", b"SECRET of another tenant")


def run_native(wasm: bytes, root: Path, stdin: bytes) -> bytes:
    """The oracle: the same tree on disk under wasmtime's own WASI."""
    for d in DIRS:
        (root / d.lstrip("/")).mkdir(parents=True)
    for p, data in FILES.items():
        (root / p.lstrip("/")).write_bytes(data)
    for name, target in LINKS.items():
        os.symlink(target, root / "workspace" / name)
    module = _native_modules.get(hash(wasm)) or _native_modules.setdefault(
        hash(wasm), wasmtime.Module(native_engine, wasm)
    )
    cfg = wasmtime.WasiConfig()
    cfg.argv = ["confine"]
    cfg.preopen_dir(str(root / "workspace"), "/workspace")
    cfg.preopen_dir(str(root / "data"), "/data")
    (root / "stdin").write_bytes(stdin)
    cfg.stdin_file = str(root / "stdin")
    cfg.stdout_file = str(root / "stdout")
    store = wasmtime.Store(native_engine)
    store.set_wasi(cfg)
    linker = wasmtime.Linker(native_engine)
    linker.define_wasi()
    try:
        linker.instantiate(store, module).exports(store)["_start"](store)
    except wasmtime.ExitTrap:
        pass
    return (root / "stdout").read_bytes()


def _sorted_names(line: str) -> str:
    head, sep, names = line.partition(" names: ")
    return head + sep + " ".join(sorted(names.split())) if sep else line


def compare(batch, ours: list[str], theirs: list[str]) -> str | None:
    """The first case where Tarbox and the oracle disagree (later cases may depend on it)."""
    for i, (x, y) in enumerate(zip(ours, theirs, strict=False)):
        if x == y or _sorted_names(x) == _sorted_names(y):  # listing order is the filesystem's
            continue
        op, _, a, b = batch[i] if i < len(batch) else (0, 0, b"", b"")
        ours_err, theirs_err = x.split()[1:2], y.split()[1:2]
        if ours_err != ["0"] and theirs_err != ["0"]:  # both refused; which error is a matter of order:
            if b"\0" in a or b"\0" in b:  # cap-std meets NUL only at the syscall
                continue
            if ours_err == [str(ENAMETOOLONG)] and max(len(a), len(b)) > 4096:  # Linux checks PATH_MAX first
                continue
            if OPS[op] == "rmdir" and a.endswith(b"/"):
                # "rmdir link/": Linux does not follow the final name (ENOTDIR; Tarbox does
                # the same, checked against Linux in test_posix_differential), cap-std
                # follows it (ELOOP for a loop)
                continue
        return f"differs from wasmtime at case {i} {OPS[op]} {a[:80]!r} {b[:80]!r}: {x[:120]!r} vs {y[:120]!r}"
    if len(ours) != len(theirs):
        return f"output length differs: {len(ours)} vs {len(theirs)} lines"
    return None


def _outside(fs) -> dict:
    """Everything of the tenant except the preopen, with content digests."""
    out = {}
    for dirpath, dirs, files in fs.walk("/"):
        if dirpath == "/":
            dirs[:] = [d for d in dirs if d != "workspace"]
        for name in dirs + files:
            p = dirpath.rstrip("/") + "/" + name
            st_ = fs.lstat(p)
            body = (
                fs.readlink(p)
                if st_.is_symlink
                else (hashlib.sha256(fs.read_file(p)).hexdigest() if st_.is_file else "")
            )
            out[p] = (st_.type, st_.mode, body)
    out["#layers"] = len(fs.layers())
    return out


def _racer(tb, tenant, stop: threading.Event) -> None:
    """Moves directories inside the preopen while the guest resolves paths through them."""
    fs = tb.filesystem(tenant)
    while not stop.is_set():
        for src, dst in (("/workspace/a/b", "/workspace/moved"), ("/workspace/moved", "/workspace/a/b")):
            try:
                fs.rename(src, dst)
            except OSError:
                pass


def run(
    tb, *, examples: int = 20, cases_per_example: int = 150, seed: int | None = None, shrink: bool = True
) -> SuiteResult:
    """``examples`` guest runs of ``cases_per_example`` cases each; ``shrink=False``
    reports a failing batch as found (shrinking a long batch can take minutes)."""
    result = SuiteResult("confinement fuzzing")
    result.figures["errno histogram"] = hist = {}
    wasm = guest("confine")

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in hypothesis.Phase if shrink or p is not hypothesis.Phase.shrink],
    )
    @given(
        batch=st.lists(case, min_size=cases_per_example, max_size=cases_per_example),
        write_back=st.sampled_from([0.0, 0.05]),
        race=st.integers(0, 3).map(lambda x: x == 0),  # a quarter of the runs
    )
    def example(batch, write_back, race):
        tenant = tb.create_tenant(f"confine-{uuid.uuid4().hex[:10]}")
        other = tb.create_tenant(f"confine-b-{uuid.uuid4().hex[:10]}")
        try:
            _setup(tb, tenant, other)
            fs = tb.filesystem(tenant)
            before, other_before = _outside(fs), _outside(tb.filesystem(other))
            host = WasiHost(
                tb, tenant, mounts=[Mount("/workspace", "/workspace"), Mount("/data", "/data")], write_back=write_back
            )
            stop = threading.Event()
            racer = threading.Thread(target=_racer, args=(tb, tenant, stop)) if race else None
            if racer:
                racer.start()
            try:
                r = host.run(wasm, ["confine"], stdin=encode(batch))
            finally:
                stop.set()
                if racer:
                    racer.join()
            problems = []
            lines = r.stdout.decode("latin-1").splitlines()
            if r.trap or r.exit_code != 0 or not lines or lines[-1] != f"done {len(batch)}":
                problems.append(
                    f"run did not finish: status={r.status} code={r.exit_code} trap={r.trap} tail={lines[-1:]}"
                )
            result.cases += max(0, len(lines) - 1)
            for line in lines[:-1]:
                m = re.match(r"(\d+) (\d+)", line)
                if not m:
                    problems.append(f"unparsed output line {line[:200]!r}")
                    continue
                err = int(m.group(2))
                hist[err] = hist.get(err, 0) + 1
                if err == EIO:
                    i = int(m.group(1))
                    problems.append(
                        f"EIO (a host exception) for {OPS[batch[i][0]]} {batch[i][2][:80]!r} {batch[i][3][:80]!r}"
                    )
            if not race:  # the oracle has no concurrent renamer
                with tempfile.TemporaryDirectory() as tmp:
                    native = run_native(wasm, Path(tmp), encode(batch)).decode("latin-1").splitlines()
                mismatch = compare(batch, lines, native)
                result.figures["cases compared with wasmtime"] = int(
                    result.figures.get("cases compared with wasmtime", 0)
                ) + len(batch)
                if mismatch:
                    problems.append(mismatch)
            if b"SECRET" in r.stdout:
                at = r.stdout.index(b"SECRET")
                problems.append(f"ESCAPE: guest output shows a secret: {r.stdout[max(0, at - 200) : at + 40]!r}")
            if _outside(fs) != before:
                problems.append("ESCAPE: the tenant changed outside the preopen")
            if _outside(tb.filesystem(other)) != other_before:
                problems.append("ESCAPE: another tenant changed")
            for report in tb.fsck(tenant) + tb.fsck(other):
                problems += [f"fsck: {p.check}: {p.detail}" for p in report.problems]
            assert not problems, "\n".join(problems[:10])
        finally:
            tb.delete_tenant(tenant)
            tb.delete_tenant(other)

    if seed is not None:
        example = hypothesis.seed(seed)(example)
    try:
        with warnings.catch_warnings():
            # psycopg_pool's workers use `random` while hypothesis draws, and the 4 KiB
            # names make a long strategy repr: both harmless here
            warnings.simplefilter("ignore", HypothesisWarning)
            example()
    except AssertionError as exc:
        result.fail(str(exc))
    return result
