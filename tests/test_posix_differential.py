"""Differential test: the same random operation sequences on a real local
directory (the oracle: Linux's own POSIX behaviour) and on Tarbox.

Every step's result (value or errno) and the final tree must be identical.
Symlink targets are relative and never contain '..', and '..' appears in
paths only below two names, so no sequence can leave the local root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat as S
import tempfile
import uuid

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tarbox

NAMES = ["a", "b", "c"]
LONG = "n" * 256  # over NAME_MAX: where in a walk it is refused decides the errno

name = st.sampled_from([*NAMES, *NAMES, LONG])
plain_path = st.lists(name, min_size=1, max_size=3).map("/".join)
dotted_path = st.tuples(name, name, name).map(lambda t: f"{t[0]}/{t[1]}/../{t[2]}")
path = st.one_of(
    plain_path,
    plain_path,
    plain_path,
    dotted_path,
    plain_path.map(lambda p: p + "/."),
    plain_path.map(lambda p: p + "/"),
)
target = st.lists(name, min_size=1, max_size=2).map("/".join)
data = st.binary(max_size=300)

op = st.one_of(
    st.tuples(st.just("write"), plain_path, data),
    st.tuples(st.just("append"), plain_path, data),
    st.tuples(st.just("read"), path),
    st.tuples(st.just("mkdir"), plain_path),
    st.tuples(st.just("rmdir"), path),
    st.tuples(st.just("unlink"), plain_path),
    st.tuples(st.just("rename"), plain_path, plain_path),
    st.tuples(st.just("symlink"), target, plain_path),
    st.tuples(st.just("link"), plain_path, plain_path),
    st.tuples(st.just("truncate"), plain_path, st.integers(0, 400)),
    st.tuples(st.just("stat"), path),
    st.tuples(st.just("lstat"), plain_path),
    st.tuples(st.just("listdir"), path),
    st.tuples(st.just("readlink"), plain_path),
)


def _kind(mode: int) -> str:
    return "dir" if S.S_ISDIR(mode) else "link" if S.S_ISLNK(mode) else "file"


class Local:
    """The oracle: the same operations through the OS on a temp directory."""

    def __init__(self, root: str) -> None:
        self.root = root

    def p(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def write(self, path, data):
        with open(self.p(path), "wb") as f:
            f.write(data)

    def append(self, path, data):
        with open(self.p(path), "ab") as f:
            f.write(data)

    def read(self, path):
        with open(self.p(path), "rb") as f:
            return f.read()

    def mkdir(self, path):
        os.mkdir(self.p(path), 0o755)

    def rmdir(self, path):
        os.rmdir(self.p(path))

    def unlink(self, path):
        os.unlink(self.p(path))

    def rename(self, a, b):
        os.rename(self.p(a), self.p(b))

    def symlink(self, t, path):
        os.symlink(t, self.p(path))

    def link(self, a, b):
        os.link(self.p(a), self.p(b), follow_symlinks=False)

    def truncate(self, path, n):
        os.truncate(self.p(path), n)

    @staticmethod
    def _st(s):
        kind = _kind(s.st_mode)
        return (kind, S.S_IMODE(s.st_mode), s.st_nlink, s.st_size if kind != "dir" else None)

    def stat(self, path):
        return self._st(os.stat(self.p(path)))

    def lstat(self, path):
        return self._st(os.lstat(self.p(path)))

    def listdir(self, path):
        return sorted(os.listdir(self.p(path)))

    def readlink(self, path):
        return os.readlink(self.p(path))


class Tar:
    """The same operations through Tarbox's Python API."""

    def __init__(self, fs: tarbox.Filesystem) -> None:
        self.fs = fs

    @staticmethod
    def p(rel: str) -> str:
        return "/" + rel

    def write(self, path, data):
        self.fs.write_file(self.p(path), data)

    def append(self, path, data):
        self.fs.append_file(self.p(path), data)

    def read(self, path):
        return self.fs.read_file(self.p(path))

    def mkdir(self, path):
        self.fs.mkdir(self.p(path))

    def rmdir(self, path):
        self.fs.rmdir(self.p(path))

    def unlink(self, path):
        self.fs.remove(self.p(path))

    def rename(self, a, b):
        self.fs.rename(self.p(a), self.p(b))

    def symlink(self, t, path):
        self.fs.symlink(t, self.p(path))

    def link(self, a, b):
        self.fs.link(self.p(a), self.p(b))

    def truncate(self, path, n):
        self.fs.truncate(self.p(path), n)

    @staticmethod
    def _st(s: tarbox.Stat):
        kind = _kind(s.st_mode)
        return (kind, s.mode, s.nlink, s.size if kind != "dir" else None)

    def stat(self, path):
        return self._st(self.fs.stat(self.p(path)))

    def lstat(self, path):
        return self._st(self.fs.lstat(self.p(path)))

    def listdir(self, path):
        return self.fs.listdir(self.p(path))

    def readlink(self, path):
        return self.fs.readlink(self.p(path))


def outcome(backend, step):
    try:
        return ("ok", getattr(backend, step[0])(*step[1:]))
    except OSError as exc:
        return ("err", exc.errno)


def local_tree(root: str) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel + "/"
        for entry in dirs + files:
            full = os.path.join(dirpath, entry)
            s = os.lstat(full)
            if S.S_ISLNK(s.st_mode):
                out[rel + entry] = ("link", os.readlink(full))
            elif S.S_ISDIR(s.st_mode):
                out[rel + entry] = ("dir", S.S_IMODE(s.st_mode), s.st_nlink)
            else:
                with open(full, "rb") as fh:
                    out[rel + entry] = ("file", fh.read(), s.st_nlink, S.S_IMODE(s.st_mode))
    return out


def tarbox_tree(fs: tarbox.Filesystem) -> dict:
    out = {}
    for dirpath, dirs, files in fs.walk("/"):
        rel = dirpath.lstrip("/")
        rel = rel + "/" if rel else ""
        for entry in dirs + files:
            full = dirpath.rstrip("/") + "/" + entry
            s = fs.lstat(full)
            if s.is_symlink:
                out[rel + entry] = ("link", fs.readlink(full))
            elif s.is_dir:
                out[rel + entry] = ("dir", s.mode, s.nlink)
            else:
                out[rel + entry] = ("file", fs.read_file(full), s.nlink, s.mode)
    return out


# Every sequence starts from this tree, so random steps meet existing files,
# non-empty directories, symlinks and hard links instead of mostly ENOENT.
SCAFFOLD = [
    ("mkdir", "a"),
    ("mkdir", "b"),
    ("mkdir", "a/b"),
    ("mkdir", "a/c"),
    ("write", "c", b"top"),
    ("write", "a/a", b"x" * 100),
    ("write", "b/a", b"hello"),
    ("write", "a/b/c", b"deep"),
    ("symlink", "a", "b/b"),
    ("symlink", "a/b", "b/c"),
    ("link", "a/a", "a/b/a"),
]


def run_differential(tb: tarbox.Tarbox, steps, *, batch: bool) -> None:
    steps = SCAFFOLD + list(steps)
    t = tb.create_tenant(f"diff-{uuid.uuid4().hex[:12]}")
    root = tempfile.mkdtemp(prefix="tarbox-oracle-")
    old_umask = os.umask(0o022)
    try:
        fs = tb.filesystem(t)
        local, tar = Local(root), Tar(fs)
        with fs.batch() if batch else contextlib.nullcontext():
            for i, step in enumerate(steps):
                expected = outcome(local, step)
                got = outcome(tar, step)
                assert got == expected, f"step {i} {step!r}: tarbox {got!r} != local {expected!r}"
        expected_tree = local_tree(root)
        assert tarbox_tree(fs) == expected_tree
        # another connection (as another process would) sees the same tree
        with tarbox.connect(tb.db.url) as other:
            assert tarbox_tree(other.filesystem(t.id)) == expected_tree
    finally:
        os.umask(old_umask)
        shutil.rmtree(root)
        tb.delete_tenant(t)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(op, min_size=10, max_size=50))
@example(steps=[("symlink", "../a/c", "b/d"), ("rmdir", "b/d/"), ("stat", "b/d/"), ("rmdir", "a/c/")])  # rmdir "link/"
@example(steps=[("symlink", "x" * 4096, "c"), ("symlink", "x" * 4095, "c")])  # the target's limit, then EEXIST
def test_matches_linux(tb, steps):
    run_differential(tb, steps, batch=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(op, min_size=10, max_size=50))
def test_matches_linux_in_one_batch(tb, steps):
    run_differential(tb, steps, batch=True)
