"""FUSE mount of a tenant (``tarbox mount``): ordinary tools on a tenant's files.

Over libfuse 3 through ``mfusepy`` (ctypes, the high-level path API): every
call maps to one ``tarbox.fs.Filesystem`` call, so the mount shares the
store's caches, quotas, audit log, staged publication and ``/.tarbox``
control files. The mount runs inside write-back windows (50 ms), like a WASI
run: other processes see a file the mount closed when they open it.

Choices (docs/fuse.md): owners are kept as Linux keeps them, and new inodes
belong to the calling process's uid and gid (mounted by a user other than root,
that user stands for root's 0 in both directions, so files the API made are the
mounting user's); the kernel checks permissions against them and enforces chown
and chmod rules and sticky directories (``default_permissions``); FIFOs, sockets
and device nodes are entries the kernel serves (the mount is ``nodev``);
``flock``/POSIX locks are local to the mount (the kernel's default); rename
flags: RENAME_NOREPLACE is honoured, RENAME_EXCHANGE is EINVAL.

Needs the ``fuse3`` system package and ``pip install tarbox[fuse]``; the rest
of Tarbox works without them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

try:
    import mfusepy as _fuse
except (ImportError, OSError) as exc:  # no libfuse3, or the package is missing
    _fuse = None
    _IMPORT_ERROR: Exception | None = exc
else:
    _IMPORT_ERROR = None

from tarbox.errors import TarboxError
from tarbox.fs import Filesystem, Stat

CONTROL = "/.tarbox"
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_BLOCK = 4096
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2  # utimensat's tv_nsec markers


def available() -> str | None:
    """None when mounting can work here, else why not."""
    if _fuse is None:
        return f"mfusepy/libfuse3 not available ({_IMPORT_ERROR}); install fuse3 and tarbox[fuse]"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    return None


def errno_of(exc: BaseException) -> int:
    """The errno a failed request returns: the exception's own, else EIO."""
    code = getattr(exc, "errno", None)
    return code if isinstance(code, int) and code > 0 else errno.EIO


class _Handle:
    __slots__ = ("f", "lock")

    def __init__(self, f) -> None:
        self.f = f
        self.lock = threading.Lock()


class TarboxOperations(_fuse.Operations if _fuse is not None else object):  # type: ignore[misc]
    """libfuse callbacks over one filesystem view."""

    use_ns = True

    def __init__(
        self, fs: Filesystem, *, write_back: float = 0.05, caller: Callable[[], tuple[int, int]] | None = None
    ) -> None:
        self.fs = fs
        fs.path_max = None  # the kernel checks PATH_MAX on what callers pass; ours start at the mount's root
        self.uid, self.gid = os.getuid(), os.getgid()
        self._squash = self.uid != 0  # the mounting user stands for root (see the module's docstring)
        self._caller = caller or _mfusepy_caller
        self._handles: dict[int, _Handle] = {}
        self._next = 1
        self._lock = threading.Lock()
        self._wb: contextlib.AbstractContextManager | None = None
        self._write_back = write_back

    # ------------------------------------------------------------ lifecycle

    def init(self, path: str) -> None:
        if not self.fs.read_only and self._write_back > 0:
            self._wb = self.fs.write_back(self._write_back)
            self._wb.__enter__()

    def handle_of(self, ino: int) -> int | None:
        """A handle open on the file with inode ``ino``, if any (its metadata outlives
        its last name while it is open)."""
        for fh, h in self._handles.items():
            if getattr(h.f, "ino", None) == ino:  # control files have none
                return fh
        return None

    def destroy(self, path: str) -> None:
        """Unmount: close what is open (publishing it) and commit everything."""
        for h in list(self._handles.values()):
            try:
                h.f.close()
            except (OSError, TarboxError):
                pass
        self._handles.clear()
        if self._wb is not None:
            self._wb.__exit__(None, None, None)
            self._wb = None
        if not self.fs.read_only:
            self.fs.sync()

    # ------------------------------------------------------------- metadata

    # ------------------------------------------------------------- owners

    def _shown(self, uid: int, gid: int) -> tuple[int, int]:
        if not self._squash:
            return uid, gid
        return (self.uid if uid == 0 else uid), (self.gid if gid == 0 else gid)

    def _stored(self, uid: int, gid: int) -> tuple[int, int]:
        if not self._squash:
            return uid, gid
        return (0 if uid == self.uid else uid), (0 if gid == self.gid else gid)

    def _as_caller(self):
        """New inodes of this request belong to the process that made it."""
        return self.fs.acting_as(*self._stored(*self._caller()))

    def _attrs(self, st: Stat) -> dict[str, Any]:
        uid, gid = self._shown(st.uid, st.gid)
        return {
            "st_mode": st.st_mode,
            "st_ino": st.ino,
            "st_nlink": st.nlink,
            "st_size": st.size,
            "st_uid": uid,
            "st_gid": gid,
            "st_rdev": st.rdev,
            "st_atime": st.atime_ns,
            "st_mtime": st.mtime_ns,
            "st_ctime": st.ctime_ns,
            "st_blocks": (st.size + 511) // 512,
            "st_blksize": _BLOCK,
        }

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path is not None and (path == CONTROL or path.startswith(CONTROL + "/")):
            return self.getattr_control(path)
        if fh is not None and fh in self._handles:
            return self._attrs(self._handles[fh].f.stat())
        return self._attrs(self.fs.lstat(path))

    def readdir(self, path: str, fh: int) -> list:
        """Entries with inode numbers and types (with ``use_ino`` an entry of inode 0
        would be skipped by readdir(3))."""
        here = self.fs.stat(path)
        up = self.fs.stat(path.rsplit("/", 1)[0] or "/") if path != "/" else here
        out: list = [(".", {"st_mode": here.st_mode, "st_ino": here.ino or 1}, 0)]
        out.append(("..", {"st_mode": up.st_mode, "st_ino": up.ino or 1}, 0))
        for e in self.fs.scandir(path):
            out.append((e.name, {"st_mode": e.type.mode_bits, "st_ino": e.ino or 1}, 0))
        return out

    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    def statfs(self, path: str) -> dict[str, int]:
        if not self.fs.read_only:
            self.fs.sync()  # what the open window holds counts too (df is rare)
        u = self.fs.usage()
        total = u.quota_bytes if u.quota_bytes is not None else max(1 << 40, 2 * u.used_bytes)
        free = max(0, total - u.used_bytes)
        files = u.quota_inodes if u.quota_inodes is not None else 1 << 32
        return {
            "f_bsize": _BLOCK,
            "f_frsize": _BLOCK,
            "f_blocks": total // _BLOCK,
            "f_bfree": free // _BLOCK,
            "f_bavail": free // _BLOCK,
            "f_files": files,
            "f_ffree": max(0, files - u.used_inodes),
            "f_favail": max(0, files - u.used_inodes),
            "f_namemax": 255,
        }

    def chmod(self, path: str, mode: int) -> int:
        self.fs.chmod(path, stat_mod.S_IMODE(mode))
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        """-1 keeps that one (the kernel has checked that the caller may)."""
        su, sg = self._stored(uid, gid)
        self.fs.chown(path, -1 if uid == -1 else su, -1 if gid == -1 else sg, follow_symlinks=False)
        return 0

    def utimens(self, path: str, times: tuple[int | None, int | None] | None = None) -> int:
        """``None`` in ``times``: keep that one (UTIME_OMIT)."""
        self.fs.utime(path, times, follow_symlinks=False)
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        with self._as_caller():
            self.fs.mknod(path, mode, dev)
        return 0

    def access(self, path: str, amode: int) -> int:
        self.fs.lstat(path)
        if amode & os.W_OK and self.fs.read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return 0

    # -------------------------------------------------------------- names

    def mkdir(self, path: str, mode: int) -> int:
        with self._as_caller():
            self.fs.mkdir(path, stat_mod.S_IMODE(mode))
        return 0

    def rmdir(self, path: str) -> int:
        self.fs.rmdir(path)
        return 0

    def unlink(self, path: str) -> int:
        self.fs.remove(path)
        return 0

    def symlink(self, target: str, source: str) -> int:
        # mfusepy passes (link path, its target)
        with self._as_caller():
            self.fs.symlink(source, target)
        return 0

    def link(self, target: str, source: str) -> int:
        # mfusepy passes (new name, existing name)
        self.fs.link(source, target)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & RENAME_EXCHANGE:
            raise OSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        if flags & RENAME_NOREPLACE and self.fs.lexists(new):
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        self.fs.rename(old, new)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path is not None and path.startswith(CONTROL + "/"):
            return 0  # control files are written whole; O_TRUNC before the write is implied
        if fh is not None and fh in self._handles:
            h = self._handles[fh]
            with h.lock:
                h.f.truncate(length)
        else:
            self.fs.truncate(path, length)
        return 0

    # -------------------------------------------------------------- files

    def _add(self, f) -> int:
        with self._lock:
            fh = self._next
            self._next += 1
            self._handles[fh] = _Handle(f)
        return fh

    def open(self, path: str, flags: int) -> int:
        acc = flags & os.O_ACCMODE
        if path == CONTROL or path.startswith(CONTROL + "/"):  # /.tarbox: whole-file reads and writes
            return self._add(self.fs.open(path, "rb" if acc == os.O_RDONLY else "wb"))
        f = self.fs.open_file(
            path,
            read=acc in (os.O_RDONLY, os.O_RDWR),
            write=acc in (os.O_WRONLY, os.O_RDWR),
            append=bool(flags & os.O_APPEND),
            truncate=bool(flags & os.O_TRUNC),
        )
        return self._add(f)

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        acc = flags & os.O_ACCMODE
        if path.startswith(CONTROL + "/"):
            return self._add(self.fs.open(path, "wb"))
        with self._as_caller():
            f = self.fs.open_file(
                path,
                read=acc == os.O_RDWR,
                write=True,
                append=bool(flags & os.O_APPEND),
                create=True,
                exclusive=bool(flags & os.O_EXCL),
                truncate=bool(flags & os.O_TRUNC),
            )
        if stat_mod.S_IMODE(mode) != 0o644:
            self.fs.chmod(path, stat_mod.S_IMODE(mode))
        return self._add(f)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        h = self._handles[fh]
        with h.lock:
            h.f.seek(offset)
            return h.f.read(size)

    def getattr_control(self, path: str) -> dict[str, Any]:
        st = self.fs.stat(path)
        attrs = self._attrs(st)
        # control entries have no inode: a fixed number far above Tarbox's own
        attrs["st_ino"] = st.ino or (1 << 62) | zlib.crc32(path.encode())
        if st.is_file and path.startswith(CONTROL + "/"):
            attrs["st_size"] = len(self.fs.read_file(path)) if path.rsplit("/", 1)[1] != "new" else 0
        return attrs

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        h = self._handles[fh]
        with h.lock:
            h.f.seek(offset)
            return h.f.write(data)

    def flush(self, path: str, fh: int) -> int:
        return 0  # data is in the store already; it is published at release (last close)

    def release(self, path: str, fh: int) -> int:
        h = self._handles.pop(fh, None)
        if h is not None:
            with h.lock:
                h.f.close()
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        h = self._handles.get(fh)
        if h is None:
            self.fs.sync()
        else:
            with h.lock:
                h.f.fsync()
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.fs.sync()
        return 0


def _mfusepy_caller() -> tuple[int, int]:
    """The uid and gid of the process whose request mfusepy is serving."""
    uid, gid, _pid = _fuse.fuse_get_context()
    return uid, gid


def _time_of(ts) -> int | None:
    """A ``timespec`` of utimensat in ns: UTIME_NOW is now, UTIME_OMIT is None (keep)."""
    if ts.tv_nsec == UTIME_OMIT:
        return None
    if ts.tv_nsec == UTIME_NOW:
        return time.time_ns()
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec


if _fuse is not None:

    class _FUSE(_fuse.FUSE):
        """Passes rename's flags and utimensat's UTIME_NOW/UTIME_OMIT to the
        operations (mfusepy drops the first and reads the others as times)."""

        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            return self.operations.rename(
                old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
            )

        def utimens_fuse_3(self, path: bytes | None, buf, fip) -> int:
            times = (_time_of(buf.contents.actime), _time_of(buf.contents.modtime)) if buf else None
            return self.operations.utimens(None if path is None else path.decode(self.encoding, self.errors), times)


def mount(
    fs: Filesystem,
    mountpoint: str,
    *,
    foreground: bool = True,
    allow_other: bool = False,
    debug: bool = False,
) -> None:
    """Serve ``fs`` at ``mountpoint`` until it is unmounted (blocks)."""
    why = available()
    if why is not None:
        raise TarboxError(f"cannot mount: {why}")
    ops = TarboxOperations(fs)
    options: dict[str, Any] = {
        "foreground": foreground,
        "fsname": f"tarbox:{fs.tenant_name or 'tenant'}",
        "subtype": "tarbox",
        "default_permissions": True,
        "attr_timeout": 1.0,
        "entry_timeout": 1.0,
        "negative_timeout": 0.0,
        "use_ino": True,
        "debug": debug,
    }
    if fs.read_only:
        options["ro"] = True
    if allow_other:
        options["allow_other"] = True
    _FUSE(ops, mountpoint, raw_fi=False, **options)
