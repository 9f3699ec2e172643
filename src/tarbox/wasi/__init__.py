"""WASI host: run WebAssembly agents on a tenant's Tarbox filesystem (see docs/wasi.md),
Python agents on it (docs/agents.md), and the toolchain that builds C, Rust and
component guests. What the docs import is here; the submodules are the implementation."""

from tarbox.wasi.host import Mount, WasiHost
from tarbox.wasi.python import PythonRuntime, RuntimeMissing
from tarbox.wasi.python_session import PythonSession, SessionBusy, SessionEnded, SessionFailed
from tarbox.wasi.toolchain import build_c, build_component, build_rust
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
    "PythonRuntime",
    "PythonSession",
    "RunResult",
    "RunStats",
    "RunStatus",
    "RuntimeMissing",
    "SessionBusy",
    "SessionEnded",
    "SessionFailed",
    "WasiHost",
    "build_c",
    "build_component",
    "build_rust",
]
