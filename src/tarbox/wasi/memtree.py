"""Directory trees a WASI run sees beside the tenant's files, kept outside the database:
the runtime's image (read-only, shared by every run of the process; a file's bytes come
from a host file or an archive member, read when asked) and a run's scratch ``/tmp``
(writable, bounded, gone when the run ends).

``TreeDescriptor`` answers the calls ``preview1.py`` makes of ``core.Descriptor``, with
the same sandbox rules: a path is walked beneath the descriptor's directory, and an
absolute path or ``..`` above it is a ``SandboxEscapeError``. The trees hold no
symlinks or hard links (``symlink``/``link`` are EPERM, as on a filesystem without
them); nothing in them names a host path a guest could reach. Renames and links
between a tree and the tenant's files are EXDEV, as between two Linux filesystems.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tarbox.errors import SandboxEscapeError, fs_error
from tarbox.fs import paths
from tarbox.wasi.types import (
    DescriptorFlags,
    DescriptorStat,
    DescriptorType,
    DirectoryEntry,
    OpenFlags,
    PathFlags,
)

# inode numbers of tree nodes: far above any tenant's, so a guest comparing (dev, ino)
# never takes a tree's file for one of the workspace's
_inos = itertools.count(1 << 60)


class _Node:
    __slots__ = ("ino", "dir", "children", "data", "source", "size", "atime_ns", "mtime_ns", "ctime_ns")

    def __init__(self, is_dir: bool, *, data: bytearray | None = None, source=None, size: int = 0, mtime_ns=None):
        now = time.time_ns() if mtime_ns is None else mtime_ns
        self.ino = next(_inos)
        self.dir = is_dir
        self.children: dict[str, _Node] = {}  # a directory's entries (a file's stays empty)
        self.data = data  # a scratch file's bytes
        self.source: Callable[[], bytes] | Path | None = source  # an image file's
        self.size = size if data is None else len(data)
        self.atime_ns = self.mtime_ns = self.ctime_ns = now

    def stat(self) -> DescriptorStat:
        kind = DescriptorType.DIRECTORY if self.dir else DescriptorType.REGULAR_FILE
        links = 2 + sum(c.dir for c in self.children.values()) if self.dir else 1
        return DescriptorStat(kind, self.ino, links, self.size, self.atime_ns, self.mtime_ns, self.ctime_ns)


class MemoryTree:
    """A tree of directories and regular files. ``read_only`` trees are built once (see
    ``add_file``) and then only read; writable ones hold at most ``max_bytes`` of file
    data and ``max_nodes`` entries (ENOSPC past them, as a full tmpfs)."""

    def __init__(self, *, read_only: bool, max_bytes: int = 256 << 20, max_nodes: int = 100_000) -> None:
        self.read_only = read_only
        self.max_bytes, self.max_nodes = max_bytes, max_nodes
        self.used_bytes, self.nodes = 0, 1
        self.root = _Node(True)
        self.lock = threading.RLock()
        self._fds: dict[Path, int] = {}  # image files, opened once

    def add_file(self, rel: str, source: Path | Callable[[], bytes], size: int, mtime_ns: int | None = None) -> None:
        """Put a file at ``rel`` (directories made as needed) whose bytes are the host file
        ``source`` or what ``source()`` returns; for building an image."""
        *dirs, name = [p for p in rel.split("/") if p]
        node = self.root
        for d in dirs:
            node = node.children.setdefault(d, _Node(True, mtime_ns=mtime_ns))
        node.children[name] = _Node(False, source=source, size=size, mtime_ns=mtime_ns)
        self.nodes += 1 + len(dirs)

    def descriptor(self) -> TreeDescriptor:
        """The tree's root as a preopened directory."""
        flags = DescriptorFlags.READ | (DescriptorFlags(0) if self.read_only else DescriptorFlags.MUTATE_DIRECTORY)
        return TreeDescriptor(self, self.root, "/", flags)

    # -- file bytes

    def _read(self, node: _Node, offset: int, length: int) -> bytes:
        if node.data is not None:
            return bytes(node.data[offset : offset + length])
        src = node.source
        if isinstance(src, Path):
            fd = self._fds.get(src)
            if fd is None:
                fd = self._fds[src] = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            return os.pread(fd, min(length, max(0, node.size - offset)), offset)
        if src is None:
            return b""
        node.data = bytearray(src())  # an archive member, unpacked at its first read
        node.source = None
        return bytes(node.data[offset : offset + length])

    def _resize(self, node: _Node, size: int) -> None:
        grow = size - node.size
        if grow > 0 and self.used_bytes + grow > self.max_bytes:
            raise fs_error(errno.ENOSPC, None, f"the scratch directory holds at most {self.max_bytes} bytes")
        assert node.data is not None
        if size < len(node.data):
            del node.data[size:]
        else:
            node.data.extend(bytes(size - len(node.data)))
        self.used_bytes += grow
        node.size = size

    def _count_new(self) -> None:
        if self.nodes >= self.max_nodes:
            raise fs_error(errno.ENOSPC, None, f"the scratch directory holds at most {self.max_nodes} entries")
        self.nodes += 1


class TreeDescriptor:
    """An open directory or file of a ``MemoryTree``."""

    __slots__ = ("tree", "node", "path", "type", "flags", "file", "read_only", "_append", "_after")

    def __init__(self, tree: MemoryTree, node: _Node, path: str, flags: DescriptorFlags) -> None:
        self.tree, self.node, self.path, self.flags = tree, node, path, flags
        self.type = DescriptorType.DIRECTORY if node.dir else DescriptorType.REGULAR_FILE
        self.file = None if node.dir else self  # preview1 asks ``desc.file is not None`` of files
        self.read_only = tree.read_only
        self._append, self._after = False, 0

    # -- resolution

    def _walk(self, rel: str) -> tuple[_Node, str, _Node | None, bool]:
        """(the directory holding the final name, that name, its node or None, whether
        ``rel`` ends in a slash). The final name is "" for a path of only dots."""
        if self.type is not DescriptorType.DIRECTORY:
            raise fs_error(errno.ENOTDIR, self.path)
        sp = paths.split(rel)
        if sp.absolute:
            raise SandboxEscapeError(rel)
        stack = [self.node]
        parts = list(sp.parts)
        for i, comp in enumerate(parts):
            last = i == len(parts) - 1
            if comp == ".":
                if last:
                    return stack[-1], "", stack[-1], sp.trailing_slash
                continue
            if comp == "..":
                if len(stack) == 1:
                    raise SandboxEscapeError(rel)
                stack.pop()
                if last:
                    return stack[-1], "", stack[-1], sp.trailing_slash
                continue
            paths.check_component(comp, rel)
            child = stack[-1].children.get(comp)
            if last:
                if child is not None and not child.dir and sp.trailing_slash:
                    raise fs_error(errno.ENOTDIR, rel)
                return stack[-1], comp, child, sp.trailing_slash
            if child is None:
                raise fs_error(errno.ENOENT, rel)
            if not child.dir:
                raise fs_error(errno.ENOTDIR, rel)
            stack.append(child)
        return stack[-1], "", stack[-1], sp.trailing_slash

    def _existing(self, rel: str) -> _Node:
        node = self._walk(rel)[2]
        if node is None:
            raise fs_error(errno.ENOENT, rel)
        return node

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise fs_error(errno.EROFS, what, "read-only preopen")

    def _same_tree(self, other, what: str) -> TreeDescriptor:
        if not isinstance(other, TreeDescriptor) or other.tree is not self.tree:
            raise fs_error(errno.EXDEV, what, "not on the same filesystem")
        if other.type is not DescriptorType.DIRECTORY:
            raise fs_error(errno.ENOTDIR, what)
        return other

    # -- descriptor calls

    def get_type(self) -> DescriptorType:
        return self.type

    def stat(self) -> DescriptorStat:
        return self.node.stat()

    def read(self, length: int, offset: int) -> bytes:
        self.file_for(DescriptorFlags.READ)
        with self.tree.lock:
            return self.tree._read(self.node, offset, length)

    def readinto(self, buf: memoryview, offset: int) -> int:
        data = self.read(len(buf), offset)
        buf[: len(data)] = data
        return len(data)

    def write(self, data, offset: int) -> int:
        self.file_for(DescriptorFlags.WRITE)
        node = self.node
        with self.tree.lock:
            at = node.size if self._append else offset
            end = at + len(data)
            if end > node.size:
                self.tree._resize(node, end)
            assert node.data is not None  # _resize made it a scratch file's bytes
            node.data[at:end] = data
            node.mtime_ns = node.ctime_ns = time.time_ns()
            self._after = end
        return len(data)

    def end(self) -> int:
        return self.node.size

    def position_after_write(self) -> int:
        return self._after

    def set_append(self, append: bool) -> None:
        self._append = append

    def set_size(self, size: int) -> None:
        self.file_for(DescriptorFlags.WRITE)
        with self.tree.lock:
            self.tree._resize(self.node, size)
            self.node.mtime_ns = self.node.ctime_ns = time.time_ns()

    def set_times(self, atime_ns: int | None, mtime_ns: int | None) -> None:
        self._writable(self.path)
        self._times(self.node, atime_ns, mtime_ns)

    def sync(self) -> None:
        """Nothing to make durable: the tree lives in memory."""

    def close(self) -> None:
        """Nothing held: the tree keeps the bytes."""

    def file_for(self, need: DescriptorFlags | None) -> None:
        """Check that the descriptor is a file's, open for ``need`` (see core.py's)."""
        if self.node.dir:
            raise fs_error(errno.EISDIR, self.path)
        if need is not None and not self.flags & need:
            raise fs_error(errno.EBADF, self.path, "descriptor not open for that")

    @staticmethod
    def _times(node: _Node, atime_ns: int | None, mtime_ns: int | None) -> None:
        if atime_ns is not None:
            node.atime_ns = atime_ns
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        node.ctime_ns = time.time_ns()

    # -- path calls

    def open_at(self, path_flags: PathFlags, rel: str, open_flags: OpenFlags, flags: DescriptorFlags):
        create = bool(open_flags & OpenFlags.CREATE)
        excl = bool(open_flags & OpenFlags.EXCLUSIVE)
        trunc = bool(open_flags & OpenFlags.TRUNCATE)
        want_dir = bool(open_flags & OpenFlags.DIRECTORY)
        write = bool(flags & DescriptorFlags.WRITE)
        if self.read_only and (create or trunc or write or flags & DescriptorFlags.MUTATE_DIRECTORY):
            raise fs_error(errno.EROFS, rel, "read-only preopen")
        with self.tree.lock:
            parent, name, node, slash = self._walk(rel)
            if node is not None:
                if create and excl:
                    raise fs_error(errno.EEXIST, rel)
                if node.dir:
                    if write or trunc:
                        raise fs_error(errno.EISDIR, rel)
                    return TreeDescriptor(self.tree, node, rel, flags & ~DescriptorFlags.WRITE)
                if want_dir:
                    raise fs_error(errno.ENOTDIR, rel)
            elif not create:
                raise fs_error(errno.ENOENT, rel)
            elif slash or want_dir:
                raise fs_error(errno.EISDIR if slash else errno.EINVAL, rel)
            else:
                paths.check_name(name, rel)
                self.tree._count_new()
                node = parent.children[name] = _Node(False, data=bytearray())
                parent.mtime_ns = parent.ctime_ns = node.mtime_ns
            if trunc and write and node.size:
                self.tree._resize(node, 0)
            return TreeDescriptor(self.tree, node, rel, flags)

    def stat_at(self, path_flags: PathFlags, rel: str) -> DescriptorStat:
        with self.tree.lock:
            return self._existing(rel).stat()

    def read_directory(self) -> list[DirectoryEntry]:
        if not self.node.dir:
            raise fs_error(errno.ENOTDIR, self.path)
        with self.tree.lock:
            return [
                DirectoryEntry(DescriptorType.DIRECTORY if c.dir else DescriptorType.REGULAR_FILE, name, c.ino)
                for name, c in self.node.children.items()
            ]

    def create_directory_at(self, rel: str) -> None:
        self._writable(rel)
        with self.tree.lock:
            parent, name, node, _ = self._walk(rel)
            if node is not None:
                raise fs_error(errno.EEXIST, rel)
            paths.check_name(name, rel)
            self.tree._count_new()
            parent.children[name] = _Node(True)
            parent.mtime_ns = parent.ctime_ns = time.time_ns()

    def remove_directory_at(self, rel: str) -> None:
        self._writable(rel)
        with self.tree.lock:
            parent, name, node, _ = self._walk(rel)
            if node is None:
                raise fs_error(errno.ENOENT, rel)
            if not name:
                raise fs_error(errno.EINVAL if node is not self.tree.root else errno.EBUSY, rel)
            if not node.dir:
                raise fs_error(errno.ENOTDIR, rel)
            if node.children:
                raise fs_error(errno.ENOTEMPTY, rel)
            del parent.children[name]
            self.tree.nodes -= 1

    def unlink_file_at(self, rel: str) -> None:
        self._writable(rel)
        with self.tree.lock:
            parent, name, node, slash = self._walk(rel)
            if node is None:
                raise fs_error(errno.ENOENT, rel)
            if node.dir or slash:
                raise fs_error(errno.EISDIR if node.dir else errno.ENOTDIR, rel)
            del parent.children[name]
            self.tree.nodes -= 1
            self.tree.used_bytes -= node.size  # an open descriptor keeps reading its bytes

    def rename_at(self, old: str, new_dir, new: str) -> None:
        self._writable(old)
        target = self._same_tree(new_dir, new)
        with self.tree.lock:
            sparent, sname, snode, _ = self._walk(old)
            if snode is None:
                raise fs_error(errno.ENOENT, old)
            dparent, dname, dnode, dslash = target._walk(new)
            if not sname or not dname:
                raise fs_error(errno.EBUSY if snode is self.tree.root else errno.EINVAL, old)
            if dslash and not snode.dir:
                raise fs_error(errno.ENOTDIR, new)
            if dnode is snode:
                return
            if snode.dir and _inside(dparent, snode):
                raise fs_error(errno.EINVAL, new, "a directory cannot move beneath itself")
            if dnode is not None:
                if snode.dir and not dnode.dir:
                    raise fs_error(errno.ENOTDIR, new)
                if dnode.dir and not snode.dir:
                    raise fs_error(errno.EISDIR, new)
                if dnode.dir and dnode.children:
                    raise fs_error(errno.ENOTEMPTY, new)
                self.tree.nodes -= 1
                self.tree.used_bytes -= dnode.size if not dnode.dir else 0
            paths.check_name(dname, new)
            del sparent.children[sname]
            dparent.children[dname] = snode
            now = time.time_ns()
            snode.ctime_ns = sparent.mtime_ns = dparent.mtime_ns = now

    def symlink_at(self, target: str, rel: str) -> None:
        self._writable(rel)
        raise fs_error(errno.EPERM, rel, "this directory holds no symbolic links")

    def readlink_at(self, rel: str) -> str:
        with self.tree.lock:
            self._existing(rel)
        raise fs_error(errno.EINVAL, rel, "not a symbolic link")

    def link_at(self, old_flags: PathFlags, old: str, new_dir, new: str) -> None:
        self._writable(new)
        self._same_tree(new_dir, new)
        with self.tree.lock:
            self._existing(old)
        raise fs_error(errno.EPERM, new, "this directory holds no hard links")

    def set_times_at(self, path_flags: PathFlags, rel: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        self._writable(rel)
        with self.tree.lock:
            self._times(self._existing(rel), atime_ns, mtime_ns)


def _inside(node: _Node, ancestor: _Node) -> bool:
    """Whether ``node`` is ``ancestor`` or lies beneath it."""
    if node is ancestor:
        return True
    return any(c.dir and _inside(node, c) for c in ancestor.children.values())
