"""WASI host: run WebAssembly agents on a tenant's Tarbox filesystem (see docs/wasi.md)."""

from tarbox.wasi.host import Mount, WasiHost
from tarbox.wasi.types import (
    DescriptorFlags,
    DescriptorStat,
    DescriptorType,
    DirectoryEntry,
    ErrorCode,
    OpenFlags,
    PathFlags,
    RunResult,
    RunStats,
    RunStatus,
)

__all__ = [
    "DescriptorFlags",
    "DescriptorStat",
    "DescriptorType",
    "DirectoryEntry",
    "ErrorCode",
    "Mount",
    "OpenFlags",
    "PathFlags",
    "RunResult",
    "RunStats",
    "RunStatus",
    "WasiHost",
]
