"""The resource limits of one native run: a cgroup (v1 memory, pids and cpuacct
controllers) when this machine lets us make one, shell ``ulimit``s otherwise.

A cgroup holds the whole process tree, whatever it forks, so its memory and pids
limits are the run's own and its CPU use is the tree's sum; the processes join it
before the sandbox starts (the launcher shell writes its own pid), so nothing runs
outside it. Where there is none, per-process rlimits stand in: address space for
memory, CPU seconds per process; the result says which were in force.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup")
PARENT = "tarbox"  # our runs' cgroups live under <controller>/tarbox/


@dataclass(frozen=True, slots=True)
class Limits:
    """What one run may use. None: no limit of that kind."""

    wall_seconds: float | None = 60.0
    cpu_seconds: float | None = None
    memory_bytes: int | None = 1 << 30
    pids: int | None = 256
    output_bytes: int = 16 << 20  # stdout + stderr
    file_bytes: int | None = 1 << 30  # one file's size (RLIMIT_FSIZE)
    tmp_bytes: int = 256 << 20  # the run's /tmp (a tmpfs; its pages count as memory)


class Cgroup:
    """One run's cgroup v1 directories (memory, pids, cpuacct: those that exist)."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.dirs: dict[str, Path] = {}
        for controller in ("memory", "pids", "cpuacct"):
            base = V1_ROOT / controller
            if not (base / "cgroup.procs").exists():
                continue
            path = base / PARENT / name
            try:
                path.mkdir(parents=True)
            except OSError:
                continue
            self.dirs[controller] = path
        memory = self.dirs.get("memory")
        if memory is not None and limits.memory_bytes is not None:
            (memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            swap = memory / "memory.memsw.limit_in_bytes"
            if swap.exists():  # no escape into swap
                swap.write_text(str(limits.memory_bytes))
        pids = self.dirs.get("pids")
        if pids is not None and limits.pids is not None:
            (pids / "pids.max").write_text(str(limits.pids))

    @property
    def controls(self) -> set[str]:
        return set(self.dirs)

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def cpu_seconds(self) -> float | None:
        d = self.dirs.get("cpuacct")
        return None if d is None else int((d / "cpuacct.usage").read_text()) / 1e9

    def memory_limit_hit(self) -> bool:
        d = self.dirs.get("memory")
        if d is None:
            return False
        for line in (d / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                return True
        return False

    def pids_limit_hit(self) -> bool:
        d = self.dirs.get("pids")
        if d is None:
            return False
        events = d / "pids.events"
        return events.exists() and any(
            line.startswith("max ") and int(line.split()[1]) > 0 for line in events.read_text().splitlines()
        )

    def kill_all(self) -> None:
        """SIGKILL every process in the run's cgroup until none is left (a fork racing
        the kill is caught on the next pass)."""
        for pause in _backoff(passes=100):
            pids: set[int] = set()
            for d in self.dirs.values():
                try:
                    pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
                except OSError:
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(pause)

    @classmethod
    def leftover(cls, name: str) -> None:
        """Remove the cgroups of a run whose host died (kill -9) before removing them,
        killing whatever is still in them."""
        found = cls.__new__(cls)
        found.dirs = {c: V1_ROOT / c / PARENT / name for c in ("memory", "pids", "cpuacct")}
        found.dirs = {c: d for c, d in found.dirs.items() if d.is_dir()}
        found.kill_all()
        found.remove()

    def remove(self) -> None:
        for d in self.dirs.values():
            for pause in _backoff(passes=60):  # the last processes may still be exiting
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(pause)


def _backoff(passes: int, first: float = 0.0005, most: float = 0.02):
    """Pauses for a retry loop: short at first (a process is usually gone within a
    millisecond of its kill), never longer than ``most``."""
    pause = first
    for _ in range(passes):
        yield pause
        pause = min(most, pause * 2)


def ulimit_script(limits: Limits, cgroup_controls: set[str]) -> str:
    """The ``ulimit`` lines the launcher shell runs first: what the cgroup does not cover."""
    lines = ["ulimit -c 0"]
    if limits.file_bytes is not None:
        lines.append(f"ulimit -f {max(1, limits.file_bytes // 512)}")  # 512-byte blocks in sh
    if limits.memory_bytes is not None and "memory" not in cgroup_controls:
        lines.append(f"ulimit -v {max(1, limits.memory_bytes // 1024)}")
    if limits.cpu_seconds is not None and "cpuacct" not in cgroup_controls:
        lines.append(f"ulimit -t {max(1, int(limits.cpu_seconds + 0.999))}")
    return "; ".join(lines)
