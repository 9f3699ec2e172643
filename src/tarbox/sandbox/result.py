"""How a native run ended: its status, output and what it did to the workspace."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field


class ExecStatus(enum.Enum):
    """How a native run ended. Every limit has its own status (docs/exec.md)."""

    EXITED = "exited"  # the command exited; see exit_code
    TIMEOUT = "timeout"  # wall-clock limit: the whole process tree killed
    CPU_LIMIT = "cpu_limit"
    MEMORY_LIMIT = "memory_limit"  # the kernel's OOM killer acted inside the run's cgroup
    PIDS_LIMIT = "pids_limit"  # a fork failed at the process limit: the run killed
    OUTPUT_LIMIT = "output_limit"
    CONFLICT = "conflict"  # others changed the same paths meanwhile: nothing written back
    FAILED = "failed"  # the sandbox could not start, or the write-back failed: see error


@dataclass(slots=True)
class ExecResult:
    status: ExecStatus
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float  # seconds, wall clock, start of the sandbox to the end of the write-back
    run_id: uuid.UUID
    checkpoint: int | None = None  # the frozen layer the run saw: roll back to it to undo the run
    error: str | None = None  # why the run failed or was stopped, in words
    changed: list[str] = field(default_factory=list)  # the tenant's paths it wrote back
    conflicts: list[str] = field(default_factory=list)  # with CONFLICT: the paths both changed
    bytes_written: int = 0  # file content written back
    limits_enforced: list[str] = field(default_factory=list)  # e.g. ["cgroup:memory", "rlimit:cpu"]
    network_denied: list[str] = field(default_factory=list)  # HOST:PORT the run asked for, not on its list
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase

    @property
    def ok(self) -> bool:
        return self.status is ExecStatus.EXITED and self.exit_code == 0
