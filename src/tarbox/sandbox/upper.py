"""What a native run changed, read from overlayfs's upper directory, and writing it
back to the tenant in one atomic commit.

The upper directory holds every path the run created or changed (whole files: a
chmod copies the file up), a whiteout (a 0/0 character device) for every path it
deleted, and an opaque directory (``user.overlay.opaque=y``, the ``userxattr`` form)
where it replaced a directory, hiding all the lower one held. Directories that only
lead to a change are there too, unmarked. Rename of a lower directory is refused by
overlayfs here (no redirects with ``userxattr``), so tools copy and delete instead,
and every change is one of these.
"""

from __future__ import annotations

import enum
import os
import shutil
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path

from tarbox.fs import Filesystem, FileType

OPAQUE_XATTR = "user.overlay.opaque"
CHUNK = 1 << 20
WHOLE_FILE = 8 << 20  # files up to this size are written back in one call


class OpKind(enum.Enum):
    DELETE = "delete"  # a whiteout
    REPLACE_DIR = "replace_dir"  # an opaque directory: the old one's content goes
    DIR = "dir"  # a directory made, or one leading to changes
    FILE = "file"
    SYMLINK = "symlink"
    LINK = "link"  # another name of a file written earlier in this list
    FIFO = "fifo"


@dataclass(frozen=True, slots=True)
class Op:
    kind: OpKind
    path: str  # the tenant's path
    local: Path | None = None  # the file in the upper directory
    mode: int = 0
    mtime_ns: int = 0
    target: str | None = None  # a symlink's target; a LINK's first name

    @property
    def removes(self) -> bool:
        """Does it take away what the lower had under its path?"""
        return self.kind in (OpKind.DELETE, OpKind.REPLACE_DIR)


def leaf_op(path: str, local: str, st: os.stat_result, first_name: dict[tuple[int, int], str]) -> Op | None:
    """The operation that puts the run's entry ``local`` (not a directory; ``st`` its
    lstat) at the tenant's ``path``: a symlink, a FIFO, a file, or a link to the first
    name of a file seen before (``first_name``: (dev, ino) -> path); None for what is
    not kept (a socket, a device node)."""
    if stat_mod.S_ISLNK(st.st_mode):
        return Op(OpKind.SYMLINK, path, target=os.readlink(local), mtime_ns=st.st_mtime_ns)
    if stat_mod.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in first_name:
            return Op(OpKind.LINK, path, target=first_name[key])
        first_name[key] = path
        return Op(OpKind.FILE, path, Path(local), stat_mod.S_IMODE(st.st_mode), st.st_mtime_ns)
    if stat_mod.S_ISFIFO(st.st_mode):
        return Op(OpKind.FIFO, path, mode=stat_mod.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns)
    return None


def scan(upper: Path, root: str) -> list[Op]:
    """The run's changes as operations on the tenant's paths (``root`` is the workspace's
    path), parents before their children."""
    ops: list[Op] = []
    first_name: dict[tuple[int, int], str] = {}

    def visit(local: Path, path: str) -> None:
        with os.scandir(local) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            p = f"{path.rstrip('/')}/{e.name}"
            st = e.stat(follow_symlinks=False)
            mode = stat_mod.S_IMODE(st.st_mode)
            if stat_mod.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                ops.append(Op(OpKind.DELETE, p))
            elif stat_mod.S_ISDIR(st.st_mode):
                opaque = _is_opaque(e.path)
                ops.append(Op(OpKind.REPLACE_DIR if opaque else OpKind.DIR, p, mode=mode, mtime_ns=st.st_mtime_ns))
                visit(Path(e.path), p)
            else:
                op = leaf_op(p, e.path, st, first_name)
                if op is not None:  # sockets and device nodes made in the sandbox are not kept (docs/exec.md)
                    ops.append(op)

    visit(upper, root)
    return ops


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def fingerprints(fs: Filesystem, ops: list[Op]) -> dict[str, object]:
    """What each path the run changed is in ``fs``, as far as a conflict is concerned:
    a directory that only leads to a change by its identity; a file, symlink or FIFO by
    its identity, mode, size and times (every change moves its ctime); what the run
    removed, with everything under it."""
    return {op.path: _print(fs, op.path, deep=op.removes, whole=op.kind is not OpKind.DIR) for op in ops}


def _print(fs: Filesystem, path: str, *, deep: bool, whole: bool):
    if not fs.lexists(path):
        return None
    st = fs.lstat(path)
    if st.type is FileType.DIRECTORY:
        if not deep:
            return (st.type, st.ino)
        return (st.type, st.ino, tuple(_print(fs, f"{path}/{e.name}", deep=True, whole=True) for e in fs.scandir(path)))
    if not whole:
        return (st.type, st.ino)
    return (st.type, st.ino, st.mode, st.size, st.mtime_ns, st.ctime_ns)


def conflicts(ops: list[Op], before: dict[str, object], now: dict[str, object]) -> list[str]:
    """The run's paths that others changed between its checkpoint (``before``) and now."""
    return [op.path for op in ops if before.get(op.path) != now.get(op.path)]


def apply(fs: Filesystem, ops: list[Op]) -> int:
    """Carry the operations out on ``fs`` (inside the caller's atomic batch). Returns
    the bytes of file content written."""
    written = 0
    dir_times = []
    kinds = _Kinds(fs)
    for op in ops:
        p = op.path
        kind = kinds.of(p)
        if op.kind is OpKind.DELETE:
            _remove(fs, p, kind)
        elif op.kind in (OpKind.DIR, OpKind.REPLACE_DIR):
            if op.kind is OpKind.REPLACE_DIR or (kind is not None and kind is not FileType.DIRECTORY):
                _remove(fs, p, kind)
                kind = None
            if kind is None:
                fs.mkdir(p, op.mode)
                kinds.made(p)
            elif fs.lstat(p).mode != op.mode:
                fs.chmod(p, op.mode)
            dir_times.append(op)
        elif op.kind is OpKind.FILE:
            if kind is FileType.DIRECTORY or (kind is FileType.FILE and fs.lstat(p).nlink > 1):
                _remove(fs, p, kind)  # a hard link's other names keep the old content, as on Linux
                kind = None
            # O_NOFOLLOW: what scan saw as a file is read as one (the sandbox is gone by now,
            # but nothing it left behind is followed out of the upper directory)
            assert op.local is not None  # a FILE op names its file
            with open(os.open(op.local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as src:
                size = os.fstat(src.fileno()).st_size  # the sandbox is gone: nothing changes it now
                if size <= WHOLE_FILE:  # one operation; a file opened publishes at close
                    written += fs.write_file(p, src.read(), op.mode)
                else:
                    with fs.open(p, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    written += size
            if kind is not None or size > WHOLE_FILE:  # write_file gave a new file its mode
                fs.chmod(p, op.mode)
            fs.utime(p, ns=(op.mtime_ns, op.mtime_ns))
        else:
            _remove(fs, p, kind)
            if op.kind is OpKind.SYMLINK and op.target is not None:
                fs.symlink(op.target, p)
            elif op.kind is OpKind.LINK and op.target is not None:
                fs.link(op.target, p)
            else:
                fs.mknod(p, op.mode | stat_mod.S_IFIFO)
    for op in reversed(dir_times):  # after their entries, which move a directory's times
        fs.utime(op.path, ns=(op.mtime_ns, op.mtime_ns))
    return written


def placed(fs: Filesystem, ops: list[Op]) -> dict[str, object]:
    """Each path the operations left something at -> its lstat in ``fs`` (read inside
    the write-back's batch, from what it has just written)."""
    return {op.path: fs.lstat(op.path) for op in ops if op.kind is not OpKind.DELETE and fs.lexists(op.path)}


class _Kinds:
    """What each path of the tenant is, from one listing per directory (a lookup of
    each new name would be a query each)."""

    def __init__(self, fs: Filesystem) -> None:
        self.fs = fs
        self.listed: dict[str, dict[str, FileType]] = {}

    def of(self, path: str) -> FileType | None:
        parent, name = path.rsplit("/", 1)
        parent = parent or "/"
        if parent not in self.listed:
            try:
                self.listed[parent] = {e.name: e.type for e in self.fs.scandir(parent)}
            except OSError:  # not there (yet): made by an op before its children
                self.listed[parent] = {}
        return self.listed[parent].get(name)

    def made(self, path: str) -> None:
        self.listed[path] = {}  # a new directory is empty


def _remove(fs: Filesystem, path: str, kind: FileType | None) -> None:
    if kind is FileType.DIRECTORY:
        fs.remove_tree(path)
    elif kind is not None:
        fs.remove(path)
