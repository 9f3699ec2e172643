"""One exception hierarchy for all of Tarbox.

Filesystem errors carry a POSIX errno and subclass the matching Python built-in
(``FileNotFoundError`` ...), so callers can catch either; the WASI layer maps the
errno to a WASI error code through a single table.
"""

from __future__ import annotations

import errno as _errno
import os


class TarboxError(Exception):
    """Root of every error Tarbox raises on purpose."""


class DatabaseError(TarboxError):
    """The database could not be reached or answered with an unexpected error."""


class ConnectionLostError(DatabaseError):
    """A connection to PostgreSQL broke (the server restarted, the backend was terminated)."""


class ReadOnlyDatabaseError(DatabaseError, OSError):
    """The database refuses writes (a read-only replica, or default_transaction_read_only).
    Also an ``OSError`` with errno EROFS, which is what a filesystem caller (and a guest) sees."""

    def __init__(self, message: str) -> None:
        OSError.__init__(self, _errno.EROFS, message)


class DatabaseFullError(DatabaseError, OSError):
    """The database server ran out of disk space; what was committed before is intact.
    Also an ``OSError`` with errno ENOSPC."""

    def __init__(self, message: str) -> None:
        OSError.__init__(self, _errno.ENOSPC, message)


class SchemaVersionError(DatabaseError):
    """The database schema is newer than this version of Tarbox understands."""


class InvalidNameError(TarboxError, ValueError):
    """A tenant, branch or similar name does not follow the naming rules."""


class TenantNotFoundError(TarboxError, LookupError):
    """No tenant has this name or id."""


class TenantExistsError(TarboxError, ValueError):
    """A tenant with this name already exists."""


class FilesystemError(TarboxError, OSError):
    """A filesystem operation failed; ``errno`` says why (POSIX numbering)."""

    def __init__(self, code: int, message: str | None = None, path: str | None = None) -> None:
        OSError.__init__(self, code, message or os.strerror(code), path)


class NotFoundError(FilesystemError, FileNotFoundError):
    pass


class ExistsError(FilesystemError, FileExistsError):
    pass


class IsADirectoryFsError(FilesystemError, IsADirectoryError):
    pass


class NotADirectoryFsError(FilesystemError, NotADirectoryError):
    pass


class PermissionFsError(FilesystemError, PermissionError):
    pass


class SandboxEscapeError(PermissionFsError):
    """A path would leave the directory it must stay beneath (absolute, ``..`` above it,
    or a symlink out). EPERM, as wasmtime's WASI reports it; WASI Preview 2 calls it not-capable."""

    def __init__(self, path: str) -> None:
        super().__init__(_errno.EPERM, "path escapes the sandbox", path)


class QuotaExceededError(FilesystemError):
    """The tenant's byte or inode quota would be exceeded (EDQUOT)."""


class NoSpaceError(FilesystemError):
    """The database itself is out of space (ENOSPC)."""


_BY_ERRNO: dict[int, type[FilesystemError]] = {
    _errno.ENOENT: NotFoundError,
    _errno.EEXIST: ExistsError,
    _errno.EISDIR: IsADirectoryFsError,
    _errno.ENOTDIR: NotADirectoryFsError,
    _errno.EACCES: PermissionFsError,
    _errno.EPERM: PermissionFsError,
    _errno.EROFS: PermissionFsError,
    _errno.EDQUOT: QuotaExceededError,
    _errno.ENOSPC: NoSpaceError,
}


def fs_error(code: int, path: str | None = None, message: str | None = None) -> FilesystemError:
    """Build the right ``FilesystemError`` subclass for a POSIX errno."""
    return _BY_ERRNO.get(code, FilesystemError)(code, message, path)
