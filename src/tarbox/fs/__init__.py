"""Tenant-scoped POSIX-like filesystem over PostgreSQL."""

from tarbox.fs.file import TarboxFile
from tarbox.fs.filesystem import Filesystem
from tarbox.fs.types import (
    AuditOp,
    AuditRecord,
    Change,
    ChangeKind,
    DirEntry,
    FileType,
    Layer,
    LayerCounts,
    Stat,
    Usage,
    WriteBack,
)

__all__ = [
    "AuditOp",
    "AuditRecord",
    "Change",
    "ChangeKind",
    "DirEntry",
    "FileType",
    "Filesystem",
    "Layer",
    "LayerCounts",
    "Stat",
    "TarboxFile",
    "Usage",
    "WriteBack",
]
