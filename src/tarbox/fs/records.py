"""The records a tenant's store keeps in memory (inodes, directory entries, a file's
dirty extent map, a stage) and its block cache, with the sizes and thresholds the
store's modules share. Data only: no database access."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from tarbox.fs.types import FileType, Stat

ROOT_INO = 1
DEFAULT_BLOCK_SIZE = 128 * 1024
FLUSH_BYTES = 16 << 20  # dirty block bytes that force a flush
FLUSH_ROWS = 20_000  # dirty metadata rows that force a flush
_INO_RANGE = 1024
_PIPELINE_MAX_BYTES = 64 << 10
_PIPELINE_MAX_ROWS = 2_000
# an operation writing at most this many bytes may run ahead of the lock (Store.operation)
RUN_AHEAD_MAX_BYTES = _PIPELINE_MAX_BYTES
_SLICE_BYTES = 4 << 20  # block data per statement in large flushes
_READ_AHEAD = 8  # blocks fetched past a sequential read's last one (1 MiB at the default size)
_STREAM_CACHE_BYTES = 8 << 20
# A window runs ahead of the quota check only with this much room left (its
# dirty bytes stay below about twice FLUSH_BYTES plus one write); closer to the
# quota every operation commits on its own, so EDQUOT comes where it did.
_WINDOW_ROOM_BYTES = 4 * FLUSH_BYTES
_WINDOW_ROOM_INODES = 2 * FLUSH_ROWS
_AUDIT_PRUNE_EVERY = 3600.0  # seconds between a store's deletions of audit records past retention


@dataclass(slots=True)
class Inode:
    ino: int
    kind: FileType
    mode: int
    nlink: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: str | None
    layer_id: int  # layer of the version this record is (head once modified)
    content_layer: int | None  # layer whose extents hold the bytes
    uid: int = 0
    gid: int = 0
    rdev: int = 0

    def to_stat(self) -> Stat:
        return Stat(
            self.ino,
            self.kind,
            self.mode,
            self.nlink,
            self.size,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns,
            self.uid,
            self.gid,
            self.rdev,
        )

    @property
    def owned(self) -> bool:
        """Owner or device number other than the default (root's, none): stored apart."""
        return bool(self.uid or self.gid or self.rdev)


@dataclass(slots=True)
class Dentry:
    """What the chain holds for one name. Stores layer ids, not 'is at the head'
    flags, so moving the head to a new child invalidates nothing."""

    ino: int | None  # None: no such name
    top: int | None  # layer of the newest row for this name in the chain (None: no row)
    below: bool  # another row exists in the chain below ``top``

    def at(self, head: int) -> bool:
        """A row for this name exists in layer ``head``."""
        return self.top == head

    def under(self, head: int) -> bool:
        """A row for this name exists in an ancestor of ``head``."""
        return self.top is not None and (self.top != head or self.below)


@dataclass(slots=True)
class ExtDirty:
    """A file's content changes since its last commit. Applied at the head as: copy
    ``base``'s rows if ``base`` is not the head (copy-on-write), delete rows with
    idx >= ``trunc_from``, upsert ``sets``; then release ``release``."""

    base: int | None  # layer whose committed extents rows the changes apply to
    base_size: int  # the committed size: what others see until the changes are published
    trunc_from: int | None = None
    sets: dict[int, bytes] = field(default_factory=dict)
    release: set[bytes] = field(default_factory=set)  # blocks the published change stops using
    drop: bool = False  # delete every head row (the inode is gone)


@dataclass(slots=True)
class Stage:
    """Blocks of a file being written that a commit already stored: extents rows at
    layer ``-sid`` (and a ``stages`` row) keep release and gc off them until the
    file is published (see "Staged publication" in docs/design.md)."""

    sid: int
    rows: dict[int, bytes] = field(default_factory=dict)  # what the staging rows hold


_DELETE = object()  # dirent marker: delete the head row physically


class BlockCache:
    """LRU of immutable blocks, bounded in bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._d: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, h: bytes) -> bytes | None:
        data = self._d.get(h)
        if data is not None:
            self._d.move_to_end(h)
        return data

    def put(self, h: bytes, data: bytes) -> None:
        if h in self._d or len(data) > self.capacity // 4:
            return
        self._d[h] = data
        self.size += len(data)
        while self.size > self.capacity:
            _, old = self._d.popitem(last=False)
            self.size -= len(old)


def now_ns() -> int:
    """A timestamp for atime, mtime and ctime: nanoseconds since the epoch."""
    return time.time_ns()
