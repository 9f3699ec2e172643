"""Public value types of the filesystem API."""

from __future__ import annotations

import stat as _stat
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, IntEnum, StrEnum
from typing import Any


class FileType(IntEnum):
    """What an inode is. Values are stored in the database; never renumber."""

    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4  # special files (mknod, mkfifo, bind): a name and metadata, no content
    SOCKET = 5
    CHAR_DEVICE = 6
    BLOCK_DEVICE = 7

    @property
    def mode_bits(self) -> int:
        return _MODE_BITS[self]

    @property
    def is_special(self) -> bool:
        """A FIFO, socket or device node: the kernel serves its I/O, Tarbox only its entry."""
        return self.value >= 4

    @classmethod
    def of_mode(cls, mode: int) -> FileType:
        """The type ``mode``'s ``S_IFMT`` bits name (ValueError for none of them)."""
        try:
            return _OF_MODE_BITS[_stat.S_IFMT(mode)]
        except KeyError:
            raise ValueError(f"no file type in mode {mode:#o}") from None


_MODE_BITS = {
    FileType.FILE: _stat.S_IFREG,
    FileType.DIRECTORY: _stat.S_IFDIR,
    FileType.SYMLINK: _stat.S_IFLNK,
    FileType.FIFO: _stat.S_IFIFO,
    FileType.SOCKET: _stat.S_IFSOCK,
    FileType.CHAR_DEVICE: _stat.S_IFCHR,
    FileType.BLOCK_DEVICE: _stat.S_IFBLK,
}
_OF_MODE_BITS = {bits: kind for kind, bits in _MODE_BITS.items()}


@dataclass(frozen=True, slots=True)
class Stat:
    """Metadata of one inode, as ``os.stat_result`` would give it."""

    ino: int
    type: FileType
    mode: int  # permission bits only (0o7777)
    nlink: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    uid: int = 0  # owner, as Linux keeps them (docs/fuse.md)
    gid: int = 0
    rdev: int = 0  # a device node's device number (os.makedev)

    @property
    def st_mode(self) -> int:
        return self.type.mode_bits | self.mode

    @property
    def st_size(self) -> int:
        return self.size

    @property
    def st_mtime(self) -> float:
        return self.mtime_ns / 1e9

    @property
    def is_dir(self) -> bool:
        return self.type is FileType.DIRECTORY

    @property
    def is_file(self) -> bool:
        return self.type is FileType.FILE

    @property
    def is_symlink(self) -> bool:
        return self.type is FileType.SYMLINK


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    ino: int
    type: FileType


@dataclass(frozen=True, slots=True)
class Usage:
    """Storage a tenant uses: distinct block bytes and inode versions, history included."""

    used_bytes: int
    used_inodes: int
    quota_bytes: int | None
    quota_inodes: int | None


class Durability(Enum):
    """When a commit must be on disk before returning (see docs/consistency.md)."""

    ASYNC = "async"  # crash-consistent; the last moments may be lost if PostgreSQL crashes
    SYNC = "sync"  # every commit waits for the WAL flush


@dataclass(frozen=True, slots=True)
class LayerCounts:
    """What one layer changed relative to its parent, counted per directory entry
    (see docs/design.md): a renamed directory is one deleted and one added entry,
    not every path below it, so this can differ from ``diff`` for directory moves
    and hard links. ``bytes`` is the total size of the files the layer added or modified."""

    added: int
    modified: int
    deleted: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "modified": self.modified, "deleted": self.deleted, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class Layer:
    """A point in a tenant's history. Frozen layers never change."""

    id: int
    parent_id: int | None
    message: str
    created_at: datetime
    frozen: bool
    is_head: bool
    counts: LayerCounts | None = None  # filled when asked for (``layers(counts=True)``)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, shared by the CLI and /.tarbox/layers."""
        d: dict[str, object] = {
            "id": self.id,
            "parent": self.parent_id,
            "message": self.message,
            "created_at": self.created_at.isoformat(),
            "frozen": self.frozen,
            "head": self.is_head,
        }
        if self.counts is not None:
            d["counts"] = self.counts.to_dict()
        return d


class ChangeKind(Enum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Change:
    """One path that differs between two layers (a rename is a delete plus an add)."""

    path: str
    kind: ChangeKind
    type: FileType
    size_before: int | None
    size_after: int | None
    patch: str | None = None  # unified diff, for text files when asked
    patch_omitted: bool = False  # asked for, but past the caller's patch_limit


@dataclass(slots=True)
class WriteBack:
    """What a ``Filesystem.write_back`` scope did: windows committed, and windows lost
    (their commit failed after the operations had reported success)."""

    windows: int = 0
    lost: int = 0


class AuditOp(StrEnum):
    """What an audit record says happened (stored as this text)."""

    CREATE = "create"  # a file created by open(O_CREAT)
    WRITE = "write"  # a file's content replaced, or written through a descriptor (bytes: written)
    APPEND = "append"
    TRUNCATE = "truncate"  # bytes: the new size
    MKDIR = "mkdir"
    REMOVE = "remove"
    RMDIR = "rmdir"
    RENAME = "rename"  # path2: the new name
    SYMLINK = "symlink"  # path2: the target
    LINK = "link"  # path2: the existing name
    CHMOD = "chmod"
    CHOWN = "chown"
    MKNOD = "mknod"  # a FIFO, socket or device node
    UTIME = "utime"
    OPEN = "open"  # an open for reading (only when reads are audited)
    CHECKPOINT = "checkpoint"  # layer_id: the frozen layer
    SWITCH = "switch"
    BRANCH = "branch"
    DELETE_BRANCH = "delete-branch"
    DROP_LAYER = "drop-layer"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One committed operation of a tenant, in commit order (``seq``)."""

    seq: int
    at: datetime
    run_id: uuid.UUID | None  # the WASI run or CLI command that did it (None: direct API use)
    op: AuditOp
    path: str | None
    path2: str | None
    bytes: int | None
    layer_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "run_id": None if self.run_id is None else str(self.run_id),
            "op": str(self.op),
            "path": self.path,
            "path2": self.path2,
            "bytes": self.bytes,
            "layer": self.layer_id,
        }
