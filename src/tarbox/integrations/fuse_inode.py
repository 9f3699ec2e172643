"""The FUSE mount's second backend: libfuse 3's low-level (inode) API through
``pyfuse3`` (Cython). The kernel speaks in inode numbers, which are Tarbox's own;
each request is turned into a path from the names the kernel looked up, and
served by the same path-based core as the mfusepy backend
(:class:`tarbox.integrations.fuse.TarboxOperations`), so both behave the same.
Requests run on trio's loop in one thread, one at a time (Tarbox's calls are
microseconds when cached; the database round trips are the write-back
window's, off the request path).
"""

from __future__ import annotations

import errno
import os
import posixpath
import signal
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from tarbox.errors import TarboxError
from tarbox.fs import Filesystem
from tarbox.integrations.fuse import CONTROL, TarboxOperations, errno_of

ROOT = pyfuse3.ROOT_INODE  # 1, as Tarbox's root inode


def _entry(attrs: dict[str, Any], timeout: float = 1.0) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = attrs["st_ino"] or ROOT
    e.st_mode = attrs["st_mode"]
    e.st_nlink = attrs["st_nlink"]
    e.st_uid = attrs["st_uid"]
    e.st_gid = attrs["st_gid"]
    e.st_size = attrs["st_size"]
    e.st_atime_ns = attrs["st_atime"]
    e.st_mtime_ns = attrs["st_mtime"]
    e.st_ctime_ns = attrs["st_ctime"]
    e.st_rdev = attrs["st_rdev"]
    e.st_blksize = attrs["st_blksize"]
    e.st_blocks = attrs["st_blocks"]
    e.entry_timeout = timeout
    e.attr_timeout = timeout
    return e


def _served(fn: Callable) -> Callable:
    """Tarbox's OSErrors become the errno the kernel returns."""

    async def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (OSError, TarboxError) as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None

    wrapper.__name__ = fn.__name__
    return wrapper


class InodeOperations(pyfuse3.Operations):
    """pyfuse3 callbacks: inode numbers in, paths out to the shared core."""

    enable_writeback_cache = False

    def __init__(self, fs: Filesystem) -> None:
        super().__init__()
        self._ids = (0, 0)  # the uid and gid of the request being served (one at a time)
        self.core = TarboxOperations(fs, caller=lambda: self._ids)
        self.names: dict[int, set[tuple[int, str]]] = {ROOT: {(0, "")}}  # ino -> (parent, name) it is known by
        self.named: dict[tuple[int, str], int] = {}  # the reverse: (parent, name) -> ino, so that
        # a rename or an unlink costs one lookup, not a scan of every name the kernel knows
        self.dirs: dict[int, list] = {}
        self._next_dir = 1

    # ------------------------------------------------------------ paths

    def _path(self, ino: int) -> str:
        parts = []
        seen = 0
        while ino != ROOT:
            names = self.names.get(ino)
            if not names:
                raise pyfuse3.FUSEError(errno.ESTALE)
            parent, name = next(iter(names))
            parts.append(name)
            ino = parent
            seen += 1
            if seen > 4096:
                raise pyfuse3.FUSEError(errno.ELOOP)
        return "/" + "/".join(reversed(parts))

    def _child(self, parent: int, name: bytes) -> str:
        return posixpath.join(self._path(parent), os.fsdecode(name))

    def _learn(self, parent: int, name: bytes, attrs: dict[str, Any]) -> pyfuse3.EntryAttributes:
        self._name(attrs["st_ino"], (parent, os.fsdecode(name)))
        return _entry(attrs)

    def _name(self, ino: int, key: tuple[int, str]) -> None:
        """``key`` (parent, name) now names ``ino`` (and no other inode)."""
        before = self.named.get(key)
        if before is not None and before != ino:
            self.names.get(before, set()).discard(key)
        self.named[key] = ino
        self.names.setdefault(ino, set()).add(key)

    def _forget_name(self, parent: int, name: bytes) -> None:
        self._unname((parent, os.fsdecode(name)))

    def _unname(self, key: tuple[int, str]) -> int | None:
        ino = self.named.pop(key, None)
        if ino is not None and ino != ROOT:
            self.names.get(ino, set()).discard(key)
        return ino

    # ------------------------------------------------------------ lookups

    @_served
    def lookup(self, parent_inode, name, ctx=None):
        path = self._child(parent_inode, name)
        if name == b".":
            return _entry(self.core.getattr(self._path(parent_inode)))
        if name == b"..":
            up = posixpath.dirname(self._path(parent_inode))
            return _entry(self.core.getattr(up))
        return self._learn(parent_inode, name, self.core.getattr(path))

    @_served
    def getattr(self, inode, ctx=None):
        fh = self._open_unnamed(inode)
        if fh is not None:
            return _entry(self.core.getattr(None, fh))
        return _entry(self.core.getattr(self._path(inode)))

    def _open_unnamed(self, inode: int) -> int | None:
        """A handle of ``inode`` when it has lost every name (unlinked while open):
        its metadata is reached through the open file then, as on Linux."""
        if self.names.get(inode):
            return None
        return self.core.handle_of(inode)

    @_served
    def setattr(self, inode, attr, fields, fh, ctx):
        if fh is None:
            fh = self._open_unnamed(inode)
        path = self._path(inode) if self.names.get(inode) else None
        if fields.update_size:
            self.core.truncate(path, attr.st_size, fh)
        if fields.update_mode:
            self.core.chmod(path, attr.st_mode)
        if fields.update_uid or fields.update_gid:
            self.core.chown(path, attr.st_uid if fields.update_uid else -1, attr.st_gid if fields.update_gid else -1)
        if fields.update_atime or fields.update_mtime:
            atime = attr.st_atime_ns if fields.update_atime else None
            mtime = attr.st_mtime_ns if fields.update_mtime else None
            self.core.utimens(path, (atime, mtime))
        return _entry(self.core.getattr(path, fh if path is None else None))

    @_served
    def readlink(self, inode, ctx):
        return os.fsencode(self.core.readlink(self._path(inode)))

    @_served
    def opendir(self, inode, ctx):
        path = self._path(inode)
        entries = []
        for name, _, _ in self.core.readdir(path, 0)[2:]:
            attrs = self.core.getattr(posixpath.join(path, name))
            # the kernel may keep these entries (readdirplus) without a lookup
            self._name(attrs["st_ino"], (inode, name))
            entries.append((name, attrs))
        fh = self._next_dir
        self._next_dir += 1
        self.dirs[fh] = entries
        return fh

    async def readdir(self, fh, start_id, token):
        entries = self.dirs.get(fh, [])
        for i in range(start_id, len(entries)):  # offsets are positions in the listing taken at opendir
            name, attrs = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), _entry(attrs), i + 1):
                return

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)

    @_served
    def statfs(self, ctx):
        d = self.core.statfs("/")
        s = pyfuse3.StatvfsData()
        for k, v in d.items():
            setattr(s, k, v)
        return s

    # ------------------------------------------------------------- names

    @_served
    def mkdir(self, parent_inode, name, mode, ctx):
        path = self._child(parent_inode, name)
        self._ids = (ctx.uid, ctx.gid)
        self.core.mkdir(path, mode)
        return self._learn(parent_inode, name, self.core.getattr(path))

    @_served
    def mknod(self, parent_inode, name, mode, rdev, ctx):
        path = self._child(parent_inode, name)
        self._ids = (ctx.uid, ctx.gid)
        self.core.mknod(path, mode, rdev)
        return self._learn(parent_inode, name, self.core.getattr(path))

    @_served
    def unlink(self, parent_inode, name, ctx):
        self.core.unlink(self._child(parent_inode, name))
        self._forget_name(parent_inode, name)

    @_served
    def rmdir(self, parent_inode, name, ctx):
        self.core.rmdir(self._child(parent_inode, name))
        self._forget_name(parent_inode, name)

    @_served
    def symlink(self, parent_inode, name, target, ctx):
        path = self._child(parent_inode, name)
        self._ids = (ctx.uid, ctx.gid)
        self.core.symlink(path, os.fsdecode(target))
        return self._learn(parent_inode, name, self.core.getattr(path))

    @_served
    def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        old, new = self._child(parent_inode_old, name_old), self._child(parent_inode_new, name_new)
        self.core.rename(old, new, flags)
        self._forget_name(parent_inode_new, name_new)
        ino = self._unname((parent_inode_old, os.fsdecode(name_old)))
        if ino is not None:
            self._name(ino, (parent_inode_new, os.fsdecode(name_new)))

    @_served
    def link(self, inode, new_parent_inode, new_name, ctx):
        path = self._child(new_parent_inode, new_name)
        self.core.link(path, self._path(inode))
        return self._learn(new_parent_inode, new_name, self.core.getattr(path))

    # ------------------------------------------------------------- files

    @_served
    def open(self, inode, flags, ctx):
        path = self._path(inode)
        fh = self.core.open(path, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=not path.startswith(CONTROL), direct_io=path.startswith(CONTROL))

    @_served
    def create(self, parent_inode, name, mode, flags, ctx):
        path = self._child(parent_inode, name)
        self._ids = (ctx.uid, ctx.gid)
        fh = self.core.create(path, mode, flags)
        return pyfuse3.FileInfo(fh=fh), self._learn(parent_inode, name, self.core.getattr(path))

    @_served
    def read(self, fh, off, size):
        return self.core.read(None, size, off, fh)

    @_served
    def write(self, fh, off, buf):
        return self.core.write(None, buf, off, fh)

    @_served
    def flush(self, fh):
        return None

    @_served
    def release(self, fh):
        self.core.release(None, fh)

    @_served
    def fsync(self, fh, datasync):
        self.core.fsync(None, datasync, fh)

    @_served
    def fsyncdir(self, fh, datasync):
        self.core.fsyncdir(None, datasync, fh)

    async def forget(self, inode_list):
        for ino, _ in inode_list:
            if ino != ROOT:
                for key in self.names.pop(ino, ()):
                    if self.named.get(key) == ino:
                        del self.named[key]


def serve(fs: Filesystem, mountpoint: str, *, allow_other: bool = False, debug: bool = False) -> None:
    """Mount with pyfuse3 and serve until unmounted or SIGINT/SIGTERM (blocks)."""
    ops = InodeOperations(fs)
    options = set(pyfuse3.default_options)
    options |= {f"fsname=tarbox:{fs.tenant_name or 'tenant'}", "subtype=tarbox", "default_permissions"}
    if fs.read_only:
        options.add("ro")
    if allow_other:
        options.add("allow_other")
    if debug:
        options.add("debug")
    pyfuse3.init(ops, mountpoint, options)
    ops.core.init("/")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: pyfuse3.terminate())
    try:
        trio.run(pyfuse3.main)
    finally:
        ops.core.destroy("/")
        pyfuse3.close(unmount=True)
