"""Public types of the WASI host, named after WASI Preview 2 (wasi:filesystem/types)
so a Preview 2 binding can sit on the same core as the Preview 1 ABI."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field


class DescriptorType(enum.Enum):
    UNKNOWN = "unknown"
    DIRECTORY = "directory"
    REGULAR_FILE = "regular-file"
    SYMBOLIC_LINK = "symbolic-link"
    BLOCK_DEVICE = "block-device"
    CHARACTER_DEVICE = "character-device"
    FIFO = "fifo"
    SOCKET = "socket"


class ErrorCode(enum.Enum):
    """wasi:filesystem error-code names; ``errno`` is the Linux errno they stand for."""

    ACCESS = "access"
    BAD_DESCRIPTOR = "bad-descriptor"
    BUSY = "busy"
    EXIST = "exist"
    FILE_TOO_LARGE = "file-too-large"
    ILLEGAL_BYTE_SEQUENCE = "illegal-byte-sequence"
    INSUFFICIENT_SPACE = "insufficient-space"
    INVALID = "invalid"
    IO = "io"
    IS_DIRECTORY = "is-directory"
    LOOP = "loop"
    NAME_TOO_LONG = "name-too-long"
    NO_SUCH_DEVICE = "no-such-device"  # ENXIO: opening a FIFO, socket or device node
    NO_ENTRY = "no-entry"
    NOT_DIRECTORY = "not-directory"
    NOT_EMPTY = "not-empty"
    NOT_PERMITTED = "not-permitted"
    READ_ONLY = "read-only"
    CROSS_DEVICE = "cross-device"
    UNSUPPORTED = "unsupported"
    QUOTA = "quota"
    NOT_CAPABLE = "not-capable"  # Preview 1's ENOTCAPABLE: outside the sandbox


class OpenFlags(enum.IntFlag):
    CREATE = 1
    DIRECTORY = 2
    EXCLUSIVE = 4
    TRUNCATE = 8


class DescriptorFlags(enum.IntFlag):
    READ = 1
    WRITE = 2
    FILE_INTEGRITY_SYNC = 4
    DATA_INTEGRITY_SYNC = 8
    REQUESTED_WRITE_SYNC = 16
    MUTATE_DIRECTORY = 32


class PathFlags(enum.IntFlag):
    SYMLINK_FOLLOW = 1


@dataclass(frozen=True, slots=True)
class DescriptorStat:
    type: DescriptorType
    ino: int
    link_count: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    type: DescriptorType
    name: str
    ino: int


class RunStatus(enum.Enum):
    """How a run ended. Every limit has its own status (docs/wasi.md)."""

    EXITED = "exited"  # returned from _start or called proc_exit; see exit_code
    TRAPPED = "trapped"  # the guest trapped (unreachable, out-of-bounds access, ...)
    TIMEOUT = "timeout"  # wall-clock timeout (epoch interruption)
    OUT_OF_FUEL = "out_of_fuel"
    MEMORY_LIMIT = "memory_limit"  # linear memory would grow past memory_limit
    OUTPUT_LIMIT = "output_limit"  # stdout+stderr passed output_limit
    INVALID_MODULE = "invalid_module"  # not valid wasm, or imports we do not provide


@dataclass(slots=True)
class RunStats:
    """What a run did to the filesystem (counted by the host, per run)."""

    files_opened: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    host_calls: int = 0


@dataclass(slots=True)
class RunResult:
    status: RunStatus
    exit_code: int  # 0 on success; 128+ style codes are never invented: see status
    stdout: bytes
    stderr: bytes
    duration: float  # seconds, wall clock
    trap: str | None = None  # message of the trap or error that ended the run, if any
    checkpoint: int | None = None  # layer frozen before the run (checkpoint_before=True)
    stats: RunStats = field(default_factory=RunStats)
    run_id: uuid.UUID | None = None  # names the run's records in the audit log
    _audit_of: object = field(default=None, repr=False, compare=False)

    def bind_audit(self, view: object) -> None:
        """Where :attr:`audit` reads the run's records from (the run's filesystem view)."""
        self._audit_of = view

    @property
    def audit(self) -> list:
        """What the run did, from the tenant's audit log (fetched when asked)."""
        if self._audit_of is None or self.run_id is None:
            return []
        return self._audit_of.audit(run_id=self.run_id)  # type: ignore[attr-defined]

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.EXITED and self.exit_code == 0
