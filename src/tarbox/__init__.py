"""Tarbox: a versioned, multi-tenant filesystem in PostgreSQL with a WASI host for AI agents."""

from tarbox.client import Tarbox, Tenant, connect
from tarbox.errors import (
    DatabaseError,
    DatabaseFullError,
    FilesystemError,
    InvalidNameError,
    QuotaExceededError,
    ReadOnlyDatabaseError,
    SchemaVersionError,
    TarboxError,
    TenantExistsError,
    TenantNotFoundError,
)
from tarbox.fs import (
    AuditOp,
    AuditRecord,
    Change,
    ChangeKind,
    DirEntry,
    Filesystem,
    FileType,
    Layer,
    LayerCounts,
    Stat,
    TarboxFile,
    Usage,
    WriteBack,
)

__version__ = "0.1.0"

__all__ = [
    "AuditOp",
    "AuditRecord",
    "Change",
    "ChangeKind",
    "Layer",
    "LayerCounts",
    "DatabaseError",
    "DatabaseFullError",
    "DirEntry",
    "FileType",
    "Filesystem",
    "FilesystemError",
    "InvalidNameError",
    "QuotaExceededError",
    "ReadOnlyDatabaseError",
    "SchemaVersionError",
    "Stat",
    "Tarbox",
    "TarboxFile",
    "TarboxError",
    "Tenant",
    "TenantExistsError",
    "TenantNotFoundError",
    "Usage",
    "WriteBack",
    "connect",
]
