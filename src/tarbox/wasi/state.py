"""What every WASI binding (Preview 1 ABI, Preview 2 components) keeps for one run:
arguments, environment, stdin, captured output, preopens, capabilities, and the
exit or limit that ended it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tarbox.wasi.core import Descriptor
from tarbox.wasi.types import RunStats, RunStatus


class GuestExit(Exception):
    """The guest exited: unwinds it; the code is kept in the run state (not in the exception)."""


class LimitExceeded(Exception):
    def __init__(self, status, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Output:
    """Captured stdout/stderr with one shared cap and optional streaming callbacks."""

    limit: int
    on_stdout: Callable[[bytes], None] | None = None
    on_stderr: Callable[[bytes], None] | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def emit(self, which: str, data: bytes) -> None:
        """Append to stdout or stderr; past the cap, keep what fits and raise the limit."""
        if len(self.stdout) + len(self.stderr) + len(data) > self.limit:
            room = max(0, self.limit - len(self.stdout) - len(self.stderr))
            (self.stdout if which == "stdout" else self.stderr).extend(data[:room])
            raise LimitExceeded(RunStatus.OUTPUT_LIMIT, f"output passed {self.limit} bytes")
        (self.stdout if which == "stdout" else self.stderr).extend(data)
        cb = self.on_stdout if which == "stdout" else self.on_stderr
        if cb is not None:
            cb(data)


class RunState:
    """The parts of a run's state both bindings share."""

    def __init__(
        self,
        *,
        args: list[str],
        env: dict[str, str],
        stdin: bytes,
        output: Output,
        preopens: list[tuple[str, Descriptor]],
        allow_clocks: bool = True,
        allow_random: bool = True,
        max_fds: int = 1024,
        deadline: float | None = None,
    ) -> None:
        self.argv, self.environ, self.stdin = list(args), dict(env), stdin
        self.out = output
        self.preopens = preopens
        self.allow_clocks = allow_clocks
        self.allow_random = allow_random
        self.max_fds = max_fds
        self.deadline = deadline
        self.exit_code: int | None = None
        self.limit: LimitExceeded | None = None  # the limit that ended the run, if any
        self.stats = RunStats()

    def write_output(self, which: str, data: bytes) -> None:
        """The guest wrote ``data`` to stdout or stderr (``which``); a limit reached ends the run."""
        try:
            self.out.emit(which, data)
        except LimitExceeded as exc:
            self.limit = exc
            raise

    def sleep_within_deadline(self, seconds: float) -> None:
        """Sleeping never outlives the run's wall-clock deadline."""
        if self.deadline is not None and time.monotonic() + seconds > self.deadline:
            time.sleep(max(0.0, self.deadline - time.monotonic()))
            self.limit = LimitExceeded(RunStatus.TIMEOUT, "wall-clock timeout (while sleeping)")
            raise self.limit
        time.sleep(seconds)
