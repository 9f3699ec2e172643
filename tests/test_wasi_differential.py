"""Differential tests: the same guest on wasmtime's own WASI over a real temporary
directory (the oracle) and on Tarbox; stdout, exit code and the resulting tree
must be equal. Scripts drive tests/guests/ops.c, a C program over wasi-libc."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tarbox.wasi import WasiHost
from tarbox.wasi.toolchain import build_c
from wasi_support import guest, local_tree, run_native, run_tarbox


class Wasm(bytes):
    def __repr__(self) -> str:  # keep hypothesis reports readable
        return f"<wasm {len(self)} bytes>"


@pytest.fixture(scope="module")
def ops_wasm() -> bytes:
    return Wasm(guest("ops"))


def differential(tb, tmp_path, wasm: bytes, script: str, oracle=run_native):
    """``oracle`` is wasmtime's own WASI: ``run_native`` (Preview 1 modules) or
    ``run_native_component`` (WASIp2, for components)."""
    t = tb.create_tenant(f"w-{uuid.uuid4().hex[:10]}")
    try:
        host = WasiHost(tb, t, "/workspace")
        ours = run_tarbox(host, wasm, stdin=script.encode())
        root = tmp_path / f"native-{uuid.uuid4().hex[:6]}"
        root.mkdir()
        theirs = oracle(wasm, root, stdin=script.encode())
    finally:
        tb.delete_tenant(t)
    lines = script.splitlines()
    for i, (a, b) in enumerate(
        zip(ours.stdout.decode().splitlines(), theirs.stdout.decode().splitlines(), strict=False)
    ):
        assert a == b, f"line {i}: {lines[i] if i < len(lines) else ''!r}\n tarbox: {a}\n native: {b}"
    assert ours.stdout == theirs.stdout
    assert ours.exit_code == theirs.exit_code
    assert ours.tree == theirs.tree
    return ours


BASIC = """\
mkdir d
mkdir d
open d/f wc
write 0 hello
write 0 world
close 0
cat d/f
stat d/f
stat d
lstat d/missing
open d/f r
read 0 3
seek 0 1 1
read 0 100
read 0 100
pread 0 4 2
seek 0 -2 2
read 0 10
close 0
close 0
open d/f wa
write 0 +tail
seek 0 0 0
write 0 !
fstat 0
close 0
cat d/f
open d/f rw
pwrite 0 2 XY
pread 0 5 0
ftruncate 0 3
fstat 0
close 0
cat d/f
open d/f cx
open d/new x
open d/new cxw
write 0 n
close 0
open d/new wt
close 0
stat d/new
open d d
open d/f d
open d w
open d/f/x r
rmdir d
unlink d
unlink d/f/
rename d/f d/g
rename d/g d
rename d d/sub
link d/g d/h
stat d/h
unlink d/h
symlink g d/s
readlink d/s
cat d/s
lstat d/s
stat d/s
open d/s rn
symlink s2 d/s1
symlink s1 d/s2
cat d/s1
readlink d/g
truncate d/g 10
stat d/g
truncate d 1
ls d
ls d/g
ls .
mkdir e
rename e d/e2
ls d
rmdir d/e2
utime d/g
"""

TRAILING = """\
mkdir a
open f cw
rmdir f/
rmdir missing/
symlink a l
rmdir a
unlink f/
unlink missing/
mkdir e
unlink e/
symlink nowhere dl
mkdir dl/
rename f f/
rename e e/.
rename f e/..
symlink self self
open self/ cw
open f/ cw
open missing/x/ cw
link missing f/x
link missing/ f/x
link f/ nodir/x
link missing self/x
"""

ESCAPES = """\
open ../x r
open ../../etc/passwd r
open /etc/passwd r
open /workspace/../x r
mkdir sub
open sub/../../x r
stat ..
stat sub/..
ls sub/../..
symlink /etc/passwd abs
cat abs
lstat abs
symlink ../outside rel
cat rel
symlink ../../../../x deep
cat deep
mkdir sub/inner
symlink .. sub/inner/up
cat sub/inner/up/up
symlink ../.. sub/inner/up2
ls sub/inner/up2
ls sub/inner/up
open .tarbox r
stat .tarbox
ls .tarbox
open .tarbox/layers/list r
mkdir .tarbox
rename sub ../sub
link sub/../../x y
symlink loop1 loop2
symlink loop2 loop1
cat loop1
open loop1 rn
"""


def test_basic_operations_match_native_wasi(tb, tmp_path, ops_wasm):
    differential(tb, tmp_path, ops_wasm, BASIC)


def test_trailing_slashes_and_dot_names_match_native_wasi(tb, tmp_path, ops_wasm):
    differential(tb, tmp_path, ops_wasm, TRAILING)


def test_rmdir_with_a_trailing_slash_as_linux(tb, tmp_path, ops_wasm):
    """``rmdir("dir/")`` removes the directory on Linux and in the WASI test suite
    (remove_directory_trailing_slashes); wasmtime answers EINVAL there, so Linux is
    the oracle: the same calls on a real directory, errno names compared."""
    import errno
    import os

    from tarbox.wasi.preview1 import WASI_ERRNO

    steps = [
        ("mkdir", "a"),
        ("rmdir", "a/"),
        ("mkdir", "a"),
        ("rmdir", "a//"),
        ("mkdir", "b"),
        ("symlink", "b l"),
        ("rmdir", "l/"),
        ("rmdir", "l"),
        ("rmdir", "b/"),
        ("rmdir", "missing/"),
        ("mkdir", "c"),
        ("mkdir", "c/d"),
        ("rmdir", "c/"),
        ("rmdir", "c/d/"),
        ("rmdir", "c/"),
    ]
    expected = []
    for op, arg in steps:
        try:
            if op == "symlink":
                target, link = arg.split()
                os.symlink(target, tmp_path / link)
            else:
                getattr(os, op)(os.path.join(tmp_path, arg))
            expected.append(f"{op}: ok")
        except OSError as exc:
            expected.append(f"{op}: err {WASI_ERRNO[errno.errorcode[exc.errno][1:]]}")
    t = tb.create_tenant(f"w-{uuid.uuid4().hex[:10]}")
    try:
        script = "".join(f"{op} {arg}\n" for op, arg in steps)
        ours = run_tarbox(WasiHost(tb, t, "/workspace"), ops_wasm, stdin=script.encode())
    finally:
        tb.delete_tenant(t)
    got = [" ".join(line.split()[:3]) for line in ours.stdout.decode().splitlines()]
    assert got == expected
    assert ours.tree == local_tree(tmp_path)


def test_sandbox_escapes_fail_like_native_wasi(tb, tmp_path, ops_wasm):
    out = differential(tb, tmp_path, ops_wasm, ESCAPES).stdout.decode()
    assert "open: ok" not in out.split("open .tarbox r")[0]  # no escape opened anything


# advise, fcntl(F_GETFL), futimens and inode identity (Preview 2: advise, get-flags,
# set-times, metadata-hash(-at))
DESCRIPTOR_CALLS = """\
mkdir d
open d/f cw
write 0 hello
fadvise 0
getfl 0
futime 0
fsameino 0 d/f
close 0
open d/f ra
getfl 1
fadvise 1
close 1
open d rd
fadvise 2
futime 2
close 2
touch d/g
sameino d/f d/g
sameino d/f d/f
sameino d d/.
symlink f d/l
sameino d/l d/f
stat d/f
"""


def test_descriptor_calls_match_native_wasi(tb, tmp_path, ops_wasm):
    differential(tb, tmp_path, ops_wasm, DESCRIPTOR_CALLS)


def test_large_directory_readdir_cookies(tb, tmp_path, ops_wasm):
    # wasi-libc reads directories in 32 KiB buffers: 2,000 entries need several calls with cookies
    script = "mkdir big\n" + "".join(f"touch big/file-with-a-longish-name-{i:05d}\n" for i in range(2000))
    script += "ls big\n"
    out = differential(tb, tmp_path, ops_wasm, script).stdout.decode()
    assert "ls: ok 2002 " in out


def test_names_at_the_limits(tb, tmp_path, ops_wasm):
    long = "n" * 255
    script = f"open {long} cw\nclose 0\nopen {long}x cw\nstat {long}\nmkdir {'d/' * 10}x\n"
    differential(tb, tmp_path, ops_wasm, script)


# A name over NAME_MAX is refused when the lookup reaches it: after the directories
# before it and, in two-path calls, after the other path's directories; O_CREAT with a
# trailing slash is EISDIR before the final name is looked at.
_N = "n" * 256
OVER_LONG = f"""mkdir d
touch a
mkdir {_N}
mkdir nodir/{_N}
mkdir a/{_N}
mkdir d/{_N}/
rmdir {_N}
rmdir nodir/{_N}
unlink d/{_N}
stat d/{_N}
open {_N} cw
open nodir/{_N} cw
open d/{_N}/ cw
open nodir/{_N}/ cw
rename {_N} b
rename {_N} nodir/b
rename nodir/{_N} b
rename missing {_N}
rename a {_N}
rename a nodir/{_N}
rename a d/{_N}/
rename d/{_N}/ b
link {_N} b
link {_N} nodir/b
link nodir/{_N} b
link {_N}/ b
link a {_N}
link a nodir/{_N}
symlink a {_N}
symlink a nodir/{_N}
readlink {_N}
ls d
"""


def test_over_long_names_are_refused_in_linux_order(tb, tmp_path, ops_wasm):
    differential(tb, tmp_path, ops_wasm, OVER_LONG)


# --- hypothesis: random scripts over a small namespace ------------------------------------

NAMES = ["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "..", "d/..", "l", "d/l", "a/", "d/"]
name = st.sampled_from(NAMES)
text = st.text(alphabet="xyz", min_size=0, max_size=5)
slot = st.integers(0, 3)
cmd = st.one_of(
    st.builds(
        lambda p, f: f"open {p} {f}", name, st.sampled_from(["r", "w", "rw", "cw", "cwt", "cwx", "cwa", "d", "rn"])
    ),
    st.builds(lambda i: f"close {i}", slot),
    st.builds(lambda i, t: f"write {i} {t}", slot, text),
    st.builds(lambda i, n: f"read {i} {n}", slot, st.integers(0, 8)),
    st.builds(lambda i, n, o: f"pread {i} {n} {o}", slot, st.integers(0, 8), st.integers(0, 10)),
    st.builds(lambda i, o, t: f"pwrite {i} {o} {t}", slot, st.integers(0, 10), text),
    st.builds(lambda i, o, w: f"seek {i} {o} {w}", slot, st.integers(-3, 8), st.integers(0, 2)),
    st.builds(lambda i, n: f"ftruncate {i} {n}", slot, st.integers(0, 12)),
    st.builds(lambda p: f"mkdir {p}", name),
    # "rmdir dir/": the oracle is Linux, not wasmtime (test_rmdir_with_a_trailing_slash_as_linux)
    st.builds(lambda p: f"rmdir {p}", name.filter(lambda p: not p.endswith("/"))),
    st.builds(lambda p: f"unlink {p}", name),
    st.builds(lambda p, q: f"rename {p} {q}", name, name),
    st.builds(lambda t, p: f"symlink {t} {p}", st.sampled_from(["a", "d", "../a", "e/a", "l", "/a"]), name),
    st.builds(lambda p, q: f"link {p} {q}", name, name),
    st.builds(lambda p: f"stat {p}", name),
    st.builds(lambda p: f"lstat {p}", name),
    st.builds(lambda p: f"readlink {p}", name),
    st.builds(lambda p, n: f"truncate {p} {n}", name, st.integers(0, 12)),
    st.builds(lambda p: f"ls {p}", name),
    st.builds(lambda p: f"cat {p}", name),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(cmd, min_size=1, max_size=30).map(lambda xs: "\n".join(xs) + "\n"))
@example(script="mkdir d\nopen d/a cw\nwrite 0 xyz\nclose 0\nsymlink ../a d/l\ncat d/l\nrename d/a a\ncat d/l\n")
def test_random_scripts_match_native_wasi(tb, tmp_path, ops_wasm, script):
    differential(tb, tmp_path, ops_wasm, script)


def test_example_agent_matches_native_wasi(tb, new_tenant, tmp_path):
    """The agent of the original design (examples/agent.c: read the input, create a
    directory, write, append to a log, stream a large input line by line), run
    twice so the second run appends to the first one's log, on both hosts."""
    agent_twice(tb, new_tenant, tmp_path, build_c(Path(__file__).parents[1] / "examples" / "agent.c"), run_native)


def agent_twice(tb, new_tenant, tmp_path, wasm: bytes, oracle) -> None:
    """Run the example agent twice on Tarbox and on ``oracle``; outputs and trees must match."""
    text = "".join(f"line {i} has some words in it\n" for i in range(20_000)).encode()  # ~600 KiB: streamed
    (tmp_path / "input.txt").write_bytes(text)
    host = WasiHost(tb, new_tenant())
    host.filesystem().makedirs("/workspace")
    host.filesystem().write_file("/workspace/input.txt", text)
    for task in ("first", "second"):
        native = oracle(wasm, tmp_path, [task])
        ours = run_tarbox(host, wasm, [task])
        assert (ours.exit_code, ours.stdout, ours.stderr) == (native.exit_code, native.stdout, native.stderr)
        assert ours.tree == native.tree
    assert native.exit_code == 0 and b"20000 lines" in native.stdout


_lengths = st.lists(st.integers(0, 300), max_size=24)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=_lengths, reads=_lengths, seed=st.binary(min_size=1, max_size=64))
def test_iovec_layouts_against_native_wasi_and_posix(tb, tmp_path_factory, writes, reads, seed):
    """One fd_write over random iovec lengths (zero-length ones included), then one
    fd_read over other random lengths (tests/guests/iovecs.wat), on both hosts.

    Found by this test: wasmtime's WASI transfers only the first non-empty buffer
    per call (a short count, which POSIX allows and wasi-libc loops over); Tarbox
    transfers them all, as Linux's writev/readv do on a regular file. Both are
    checked exactly: counts, errno values, the bytes read back and the file."""
    import struct

    data = (seed * (sum(writes) // len(seed) + 1))[: sum(writes)]
    stdin = struct.pack(f"<I{len(writes)}I", len(writes), *writes)
    stdin += struct.pack(f"<I{len(reads)}I", len(reads), *reads) + data
    wasm = guest("iovecs")
    native = run_native(wasm, tmp_path_factory.mktemp("iov"), stdin=stdin)
    ours = run_tarbox(WasiHost(tb, tb.create_tenant(f"iov-{uuid.uuid4().hex[:10]}")), wasm, stdin=stdin)

    def first(lengths: list[int]) -> int:
        return next((n for n in lengths if n), 0)

    for out, wrote, read_cap in ((native, first(writes), first(reads)), (ours, sum(writes), sum(reads))):
        assert out.exit_code == 0
        expect = struct.pack("<II", 0, wrote)  # errno, count
        got_read = min(read_cap, wrote)
        expect += struct.pack("<II", 0, got_read) + data[:got_read]
        assert out.stdout == expect
        assert out.tree == {"f": ("file", data[:wrote])}
