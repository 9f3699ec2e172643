"""Descriptor core in the shape of WASI Preview 2 (wasi:filesystem), over ``tarbox.fs``.

The Preview 1 ABI (``preview1.py``) is a thin layer over this; so would be a
Preview 2 binding. Every path a guest names is resolved here, beneath the
descriptor's directory, component by component in the tenant's namespace:
absolute paths, ``..`` above that directory and symlinks whose target leaves it
fail with ``SandboxEscapeError`` (EPERM): a directory descriptor is a capability
for its own subtree, as in wasmtime (cap-std); nothing is delegated to a host
directory. The walk is the filesystem's own (``Filesystem.resolve_beneath``).

Resolution and the operation happen under the tenant store's lock (and, for
mutations, inside its write transaction), so another run in this process cannot
swap a directory for a symlink in between.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from tarbox.errors import SandboxEscapeError, fs_error
from tarbox.fs import Filesystem, FileType, Stat, TarboxFile, paths
from tarbox.wasi.types import (
    DescriptorFlags,
    DescriptorStat,
    DescriptorType,
    DirectoryEntry,
    ErrorCode,
    OpenFlags,
    PathFlags,
)

DESCRIPTOR_TYPES = {  # what each Tarbox file type is to a guest
    FileType.FILE: DescriptorType.REGULAR_FILE,
    FileType.DIRECTORY: DescriptorType.DIRECTORY,
    FileType.SYMLINK: DescriptorType.SYMBOLIC_LINK,
    FileType.FIFO: DescriptorType.FIFO,
    FileType.SOCKET: DescriptorType.SOCKET,
    FileType.CHAR_DEVICE: DescriptorType.CHARACTER_DEVICE,
    FileType.BLOCK_DEVICE: DescriptorType.BLOCK_DEVICE,
}


_ERRNO_CODES = {
    errno.EACCES: ErrorCode.ACCESS,
    errno.EBADF: ErrorCode.BAD_DESCRIPTOR,
    errno.EBUSY: ErrorCode.BUSY,
    errno.EEXIST: ErrorCode.EXIST,
    errno.EFBIG: ErrorCode.FILE_TOO_LARGE,
    errno.EILSEQ: ErrorCode.ILLEGAL_BYTE_SEQUENCE,
    errno.ENOSPC: ErrorCode.INSUFFICIENT_SPACE,
    errno.EINVAL: ErrorCode.INVALID,
    errno.EIO: ErrorCode.IO,
    errno.EISDIR: ErrorCode.IS_DIRECTORY,
    errno.ELOOP: ErrorCode.LOOP,
    errno.ENAMETOOLONG: ErrorCode.NAME_TOO_LONG,
    errno.ENXIO: ErrorCode.NO_SUCH_DEVICE,
    errno.ENOENT: ErrorCode.NO_ENTRY,
    errno.ENOTDIR: ErrorCode.NOT_DIRECTORY,
    errno.ENOTEMPTY: ErrorCode.NOT_EMPTY,
    errno.EPERM: ErrorCode.NOT_PERMITTED,
    errno.EROFS: ErrorCode.READ_ONLY,
    errno.EXDEV: ErrorCode.CROSS_DEVICE,
    errno.EOPNOTSUPP: ErrorCode.UNSUPPORTED,
    errno.EDQUOT: ErrorCode.QUOTA,
}


def error_code(exc: OSError) -> ErrorCode:
    """The Preview 2 error-code of a core failure."""
    if isinstance(exc, SandboxEscapeError):
        return ErrorCode.NOT_CAPABLE
    return _ERRNO_CODES.get(exc.errno or 0, ErrorCode.IO)


def _descriptor_stat(s: Stat) -> DescriptorStat:
    return DescriptorStat(DESCRIPTOR_TYPES[s.type], s.ino, s.nlink, s.size, s.atime_ns, s.mtime_ns, s.ctime_ns)


class Descriptor:
    """An open file or directory of the sandbox. Directories carry the physical
    Tarbox path they were opened at, beneath which every path they name stays."""

    __slots__ = ("fs", "path", "type", "flags", "file", "read_only")

    def __init__(
        self,
        fs: Filesystem,
        path: str,
        type: DescriptorType,
        flags: DescriptorFlags,
        file: TarboxFile | None = None,
        read_only: bool = False,
    ) -> None:
        self.fs = fs
        self.path = path
        self.type = type
        self.flags = flags
        self.file = file
        self.read_only = read_only

    @classmethod
    def preopen(cls, fs: Filesystem, path: str, *, read_only: bool = False) -> Descriptor:
        """The directory a guest is given. It must exist in the tenant's filesystem."""
        if not fs.is_dir(path):
            raise fs_error(errno.ENOTDIR if fs.exists(path) else errno.ENOENT, path, "preopen is not a directory")
        flags = DescriptorFlags.READ | (DescriptorFlags(0) if read_only else DescriptorFlags.MUTATE_DIRECTORY)
        return cls(
            fs,
            "/" + "/".join(p for p in path.split("/") if p),
            DescriptorType.DIRECTORY,
            flags,
            read_only=read_only,
        )

    # ------------------------------------------------------------ resolution

    def _dir(self) -> None:
        if self.type is not DescriptorType.DIRECTORY:
            raise fs_error(errno.ENOTDIR, self.path)

    def resolve(self, rel: str, follow: bool, defer_long_name: bool = False) -> tuple[str, Stat | None]:
        """The physical Tarbox path ``rel`` names beneath this directory, and its stat
        (None: it does not exist). Intermediate symlinks are always followed, the last
        one only with ``follow``; ``defer_long_name``: an over-long final name is left
        for the fs operation to refuse (see ``PathWalk``). Call with the store
        lock held."""
        self._dir()
        return self.fs.resolve_beneath(self.path, rel, follow=follow, defer_long_name=defer_long_name)

    def _path(self, rel: str, follow: bool = False) -> str:
        return self.resolve(rel, follow)[0]

    def _final_path(self, rel: str) -> str:
        """The lookup of rename(2) and mkdir(2): the final name is not followed even
        before a slash (the slash is kept for the fs operation's own checks), and is
        refused by that operation when over-long."""
        bare, slash = paths.without_trailing_slash(rel)
        path = self.resolve(bare, False, defer_long_name=True)[0]
        if bare.rsplit("/", 1)[-1] in (".", ".."):
            return path.rstrip("/") + "/."  # the physical path lost the dot name the fs op must see
        return path + "/" if slash and path != "/" else path

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Resolve and mutate inside one write transaction of the tenant."""
        if self.read_only:
            raise fs_error(errno.EROFS, self.path, "read-only preopen")
        with self.fs.writing():
            yield

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self.fs.locked():
            yield

    # --------------------------------------------------------- descriptor ops

    def get_type(self) -> DescriptorType:
        return self.type

    def get_flags(self) -> DescriptorFlags:
        return self.flags

    def stat(self) -> DescriptorStat:
        if self.file is not None:
            return _descriptor_stat(self.file.stat())
        return _descriptor_stat(self.fs.stat(self.path))

    def read_via_stream(self, offset: int) -> InputStream:
        """wasi:filesystem ``read-via-stream``: bytes from ``offset`` on."""
        self.file_for(DescriptorFlags.READ)
        return InputStream(self, offset)

    def write_via_stream(self, offset: int) -> OutputStream:
        """wasi:filesystem ``write-via-stream``: writes from ``offset`` on."""
        self.file_for(DescriptorFlags.WRITE)
        return OutputStream(self, offset, append=False)

    def append_via_stream(self) -> OutputStream:
        """wasi:filesystem ``append-via-stream``: every write lands at the end of the file then."""
        self.file_for(DescriptorFlags.WRITE)
        return OutputStream(self, 0, append=True)

    def read(self, length: int, offset: int) -> bytes:
        f = self.file_for(DescriptorFlags.READ)
        with self.fs.locked():
            f.seek(offset)
            return f.read(length)

    def readinto(self, buf: memoryview, offset: int) -> int:
        f = self.file_for(DescriptorFlags.READ)
        with self.fs.locked():
            f.seek(offset)
            return f.readinto(buf)

    def write(self, data, offset: int) -> int:
        """Write at ``offset`` (or at the end, for an append descriptor). Returns bytes written."""
        f = self.file_for(DescriptorFlags.WRITE)
        with self.fs.locked():
            f.seek(offset)
            return f.write(data)

    def end(self) -> int:
        """Where an append lands: the current size."""
        return self.file_for(None).stat().size

    def position_after_write(self) -> int:
        return self.file_for(None).tell()

    def set_append(self, append: bool) -> None:
        self.file_for(None).set_append(append)

    def set_size(self, size: int) -> None:
        f = self.file_for(DescriptorFlags.WRITE)
        with self.fs.locked():
            pos = f.tell()
            f.truncate(size)
            f.seek(pos)

    def set_times(self, atime_ns: int | None, mtime_ns: int | None) -> None:
        if self.file is not None:
            self.file.utime(atime_ns, mtime_ns)
            return
        self._set_times_path(self.path, atime_ns, mtime_ns)

    def sync(self) -> None:
        if self.file is not None:
            self.file.fsync()
        else:
            self.fs.sync()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def file_for(self, need: DescriptorFlags | None) -> TarboxFile:
        """The descriptor's open file, which must be open for ``need`` (EISDIR: a
        directory's descriptor; EBADF: not open for that)."""
        if self.file is None:
            raise fs_error(errno.EISDIR, self.path)
        if need is not None and not self.flags & need:
            raise fs_error(errno.EBADF, self.path, "descriptor not open for that")
        return self.file

    # -------------------------------------------------------------- path ops

    def open_at(self, path_flags: PathFlags, rel: str, open_flags: OpenFlags, flags: DescriptorFlags) -> Descriptor:
        follow = bool(path_flags & PathFlags.SYMLINK_FOLLOW)
        create = bool(open_flags & OpenFlags.CREATE)
        excl = bool(open_flags & OpenFlags.EXCLUSIVE)
        trunc = bool(open_flags & OpenFlags.TRUNCATE)
        want_dir = bool(open_flags & OpenFlags.DIRECTORY)
        write = bool(flags & DescriptorFlags.WRITE)
        if self.read_only and (create or trunc or write or flags & DescriptorFlags.MUTATE_DIRECTORY):
            raise fs_error(errno.EROFS, rel, "read-only preopen")
        fs = self.fs
        with fs.locked(refresh=True):
            if create and paths.without_trailing_slash(rel)[1]:
                # Linux: O_CREAT with a trailing slash is EISDIR before the final name is
                # looked at (even one over NAME_MAX); the directories' errors come first
                self._final_path(rel)
                raise fs_error(errno.EISDIR, rel)
            path, s = self.resolve(rel, follow and not (create and excl))
            if s is not None:
                if create and excl:
                    raise fs_error(errno.EEXIST, rel)
                if s.type is FileType.SYMLINK:
                    raise fs_error(errno.ELOOP, rel)  # O_NOFOLLOW on a symlink
                if s.type is FileType.DIRECTORY:
                    if write or trunc:
                        raise fs_error(errno.EISDIR, rel)
                    return Descriptor(
                        fs,
                        path.rstrip("/") or "/",
                        DescriptorType.DIRECTORY,
                        flags & ~DescriptorFlags.WRITE,
                        read_only=self.read_only,
                    )
                if want_dir or path.endswith("/"):
                    raise fs_error(errno.ENOTDIR, rel)
            elif not create:
                raise fs_error(errno.ENOENT, rel)
            elif want_dir or path.endswith("/"):
                raise fs_error(errno.EISDIR if path.endswith("/") else errno.EINVAL, rel)
            f = fs.open_file(
                path,
                read=bool(flags & DescriptorFlags.READ),
                write=write,
                create=create,
                exclusive=excl,
                truncate=trunc and write,
                revalidate=False,
            )
        return Descriptor(fs, path, DescriptorType.REGULAR_FILE, flags, f, read_only=self.read_only)

    def stat_at(self, path_flags: PathFlags, rel: str) -> DescriptorStat:
        with self._reading():
            s = self.resolve(rel, bool(path_flags & PathFlags.SYMLINK_FOLLOW))[1]
            if s is None:
                raise fs_error(errno.ENOENT, rel)
            return _descriptor_stat(s)

    def read_directory(self) -> list[DirectoryEntry]:
        self._dir()
        with self._reading():
            return [DirectoryEntry(DESCRIPTOR_TYPES[e.type], e.name, e.ino) for e in self.fs.scandir(self.path)]

    def create_directory_at(self, rel: str) -> None:
        with self._mutating():
            self.fs.mkdir(self._final_path(rel))

    def remove_directory_at(self, rel: str) -> None:
        with self._mutating():
            path = self._final_path(rel)  # escapes and lookup errors first, as wasmtime
            if paths.without_trailing_slash(rel)[0].rsplit("/", 1)[-1] in (".", ".."):
                raise fs_error(errno.EINVAL, rel)  # as wasmtime (cap-std): rmdir of "." or ".."
            # "dir/" is removed as Linux and the WASI test suite want (wasmtime says EINVAL)
            self.fs.rmdir(path)

    def unlink_file_at(self, rel: str) -> None:
        with self._mutating():
            self.fs.remove(self._path(rel))

    def _other_dir(self, new_dir: Descriptor, new: str) -> None:
        """The second directory of a rename or link: one of this tenant's, writable."""
        if not isinstance(new_dir, Descriptor) or not new_dir.fs.same_store(self.fs):
            raise fs_error(errno.EXDEV, new, "not on the same filesystem")
        new_dir._dir()
        if new_dir.read_only:
            raise fs_error(errno.EROFS, new, "read-only preopen")

    def rename_at(self, old: str, new_dir: Descriptor, new: str) -> None:
        with self._mutating():
            self._other_dir(new_dir, new)
            self.fs.rename(self._final_path(old), new_dir._final_path(new))

    def symlink_at(self, target: str, rel: str) -> None:
        with self._mutating():
            # wasmtime's order: an absolute target, then a new name outside the preopen
            # (both ENOTCAPABLE), then an empty target (ENOENT)
            if target and paths.split(target).absolute:
                raise SandboxEscapeError(target)
            self.fs.symlink(target, self._path(rel))

    def readlink_at(self, rel: str) -> str:
        with self._reading():
            target = self.fs.readlink(self._path(rel))
        if target.startswith("/"):
            # as wasmtime (cap-std): an absolute target names the host's tree, not the guest's
            raise SandboxEscapeError(rel)
        return target

    def link_at(self, old_flags: PathFlags, old: str, new_dir: Descriptor, new: str) -> None:
        if old_flags & PathFlags.SYMLINK_FOLLOW:
            # wasmtime refuses to follow here before looking at anything (confinement fuzzer's oracle)
            raise fs_error(errno.EINVAL, old, "link_at does not follow symlinks")
        with self._mutating():
            self._other_dir(new_dir, new)
            # wasmtime's order (differential tests): a source written with a trailing slash is
            # looked up whole first; then the target's directories; then a missing source or
            # one whose name is over NAME_MAX (only its directories are walked before)
            slash = paths.without_trailing_slash(old)[1]
            src, src_stat = self.resolve(old, False, defer_long_name=not slash)
            if src_stat is None and slash:
                raise fs_error(errno.ENOENT, old)
            dst = new_dir._path(new)
            if src_stat is None:
                paths.check_component(paths.final_name(old), old)
                raise fs_error(errno.ENOENT, old)
            self.fs.link(src, dst)

    def set_times_at(self, path_flags: PathFlags, rel: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        with self._mutating():
            self._set_times_path(self._path(rel, bool(path_flags & PathFlags.SYMLINK_FOLLOW)), atime_ns, mtime_ns)

    def _set_times_path(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        if self.read_only:
            raise fs_error(errno.EROFS, path, "read-only preopen")
        if atime_ns is None or mtime_ns is None:
            s = self.fs.lstat(path)
            atime_ns = s.atime_ns if atime_ns is None else atime_ns
            mtime_ns = s.mtime_ns if mtime_ns is None else mtime_ns
        self.fs.utime(path, (atime_ns, mtime_ns), follow_symlinks=False)


class StreamClosed(Exception):
    """wasi:io/streams ``stream-error::closed``: an input stream reached the end of the file."""


class InputStream:
    """wasi:io/streams ``input-stream`` over a file descriptor: its own position,
    advanced by each read (the descriptor's other users do not move it)."""

    def __init__(self, desc: Descriptor, offset: int) -> None:
        self.desc, self.offset = desc, offset

    def read(self, length: int) -> bytes:
        """Up to ``length`` bytes; ``StreamClosed`` at the end of the file (a file never blocks)."""
        data = self.desc.read(length, self.offset)
        if not data and length:
            raise StreamClosed()
        self.offset += len(data)
        return data

    blocking_read = read

    def skip(self, length: int) -> int:
        return len(self.read(length))


class OutputStream:
    """wasi:io/streams ``output-stream`` over a file descriptor. Writes go to the
    store's write-back buffer, so ``check_write`` never makes the caller wait and
    ``flush`` has nothing to do (data is committed at close/sync, as for Preview 1)."""

    WRITE_BUDGET = 1 << 20  # what check_write offers per call

    def __init__(self, desc: Descriptor, offset: int, *, append: bool) -> None:
        self.desc, self.offset, self.append = desc, offset, append

    def check_write(self) -> int:
        return self.WRITE_BUDGET

    def write(self, data: bytes | memoryview) -> None:
        with self.desc.fs.locked():  # finding the end and writing there are one step
            at = self.desc.end() if self.append else self.offset
            self.offset = at + self.desc.write(data, at)

    def flush(self) -> None:
        """Nothing buffered here: the store holds the data."""

    blocking_flush = flush

    def blocking_write_and_flush(self, data: bytes | memoryview) -> None:
        self.write(data)
