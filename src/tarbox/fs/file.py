"""Binary file objects over the store: read, write, seek, truncate, streaming in blocks.

Writes land in the store's write-back buffer (visible at once inside the
process) and are published whole at ``close()`` (of the last descriptor that
wrote) or ``fsync()``; memory stays bounded because the store stores blocks
early when its buffers pass a threshold, staged out of sight until then.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tarbox.errors import fs_error
from tarbox.fs.records import Inode, now_ns
from tarbox.fs.store import Store
from tarbox.fs.types import AuditOp, Stat

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


@dataclass(frozen=True, slots=True)
class OpenMode:
    readable: bool
    writable: bool
    append: bool
    create: bool
    excl: bool
    trunc: bool
    binary: bool


def parse_mode(mode: str) -> OpenMode:
    chars = set(mode)
    if len(chars) != len(mode) or not chars <= set("rwaxb+t") or len(chars & set("rwax")) != 1:
        raise ValueError(f"invalid mode: {mode!r}")
    if "b" in chars and "t" in chars:
        raise ValueError(f"invalid mode: {mode!r}")
    plus = "+" in chars
    return OpenMode(
        readable="r" in chars or plus,
        writable="r" not in chars or plus,
        append="a" in chars,
        create=bool(chars & set("wax")),
        excl="x" in chars,
        trunc="w" in chars,
        binary="b" in chars,
    )


class TarboxFile(io.RawIOBase):
    """A file of a Tarbox filesystem. Not thread-safe on its own, like a Python file."""

    def __init__(
        self, store: Store, ino: int, path: str, mode: OpenMode, *, record: Callable[..., None] | None = None
    ) -> None:
        super().__init__()
        self._record = record  # audits what this descriptor wrote (the opening view's Filesystem._record)
        self._written: int | None = None  # bytes written through it (None: it wrote nothing)
        self._store = store
        self._ino = ino
        self.name = path
        self.mode = "rb" if not mode.writable else "ab" if mode.append else "r+b" if mode.readable else "wb"
        self._m = mode
        self._pos = 0
        self._dirty = False
        store.opened(ino)

    @property
    def ino(self) -> int:
        """The inode number of the file this is open on (it stays while the file is
        open, even with no name left)."""
        return self._ino

    def _node(self) -> Inode:
        node = self._store.inode(self._ino)
        if node is None:
            raise fs_error(errno.ESTALE, self.name, "file was removed by another process")
        return node

    def readable(self) -> bool:
        return self._m.readable

    def writable(self) -> bool:
        return self._m.writable

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("Tarbox files have no OS file descriptor")

    def _check(self, want_read: bool) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if want_read and not self._m.readable:
            raise io.UnsupportedOperation("not readable")
        if not want_read and not self._m.writable:
            raise io.UnsupportedOperation("not writable")

    def read(self, size: int | None = -1) -> bytes:
        self._check(True)
        with self._store.lock:
            node = self._node()
            if size is None or size < 0:
                size = max(0, node.size - self._pos)
            data = self._store.read(node, self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        n = len(data)
        view[:n] = data
        return n

    def write(self, b: ReadableBuffer) -> int:
        self._check(False)
        data = b if isinstance(b, bytes | bytearray) else memoryview(b).cast("B")  # len() counts bytes
        n = len(data)
        with self._store.lock:
            node = self._node()
            self._writing()
            if self._m.append:
                self._pos = node.size
            self._store.write(node, self._pos, data)
        self._pos += n
        self._written = (self._written or 0) + n  # _writing() made it 0 at least
        return n

    def _writing(self) -> None:
        """This descriptor changes the file: until it closes, commits show the old version."""
        if not self._dirty:
            self._store.begin_write(self._ino)
            self._dirty = True
        if self._written is None:
            self._written = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            with self._store.lock:
                pos = self._node().size + offset
        else:
            raise ValueError(f"invalid whence: {whence}")
        if pos < 0:
            raise fs_error(errno.EINVAL, self.name, "negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        self._check(False)
        size = self._pos if size is None else size
        if size < 0:
            raise fs_error(errno.EINVAL, self.name, "negative size")
        with self._store.lock:
            node = self._node()
            self._writing()
            self._store.truncate(node, size)
            self._store.touch(node)
        return size

    def stat(self) -> Stat:
        """``os.fstat``: the file's current metadata, even after a rename or unlink."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        with self._store.lock:
            return self._node().to_stat()

    def utime(self, atime_ns: int | None, mtime_ns: int | None) -> None:
        """``os.utime`` on the open file; ``None`` keeps that time. ctime becomes now."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        with self._store.lock, self._store.writing():
            node = self._node()
            if atime_ns is not None:
                node.atime_ns = atime_ns
            if mtime_ns is not None:
                node.mtime_ns = mtime_ns
            node.ctime_ns = now_ns()
            self._store.touch(node)

    def set_append(self, append: bool) -> None:
        """Switch O_APPEND on or off (``fcntl(F_SETFL)``)."""
        self._m = replace(self._m, append=append)

    def flush(self) -> None:
        """Data is already in the shared write-back buffer; it is published at close/fsync."""
        if self.closed:
            return

    def fsync(self) -> None:
        """Publish the file as it is now (other descriptors' writes to it included),
        commit this process's pending writes and wait until they are durable."""
        if self._dirty:
            self._dirty = False
            self._store.end_write(self._ino)
        self._store.commit(durable=True, publish=self._ino)
        self._raise_pending()

    def _raise_pending(self) -> None:
        err = self._store.pending_error(self._ino)
        if err is not None:
            raise err

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._dirty:
                self._store.end_write(self._ino)
            if self._written is not None:
                if self._record is not None:
                    self._record(AuditOp.WRITE, self.name, None, self._written)
                self._store.publish_close()
                self._raise_pending()
        finally:
            super().close()
            self._store.closed(self._ino)

    def __repr__(self) -> str:
        return f"<TarboxFile name={self.name!r} mode={self.mode!r}>"
