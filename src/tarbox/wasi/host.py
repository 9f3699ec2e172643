"""``WasiHost``: run a wasm32-wasip1 module or a WASI 0.2 command component on a tenant's
Tarbox filesystem, sandboxed and limited."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import math
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import wasmtime
import wasmtime.component as wc

from tarbox import runs
from tarbox.client import Tarbox, Tenant
from tarbox.errors import TarboxError
from tarbox.fs import Filesystem
from tarbox.wasi import component_shim
from tarbox.wasi import engine as engines
from tarbox.wasi.core import Descriptor
from tarbox.wasi.memtree import MemoryTree
from tarbox.wasi.preview1 import Preview1
from tarbox.wasi.preview2 import CloseFailed, Preview2, Refused
from tarbox.wasi.state import GuestExit, LimitExceeded, Output
from tarbox.wasi.types import RunResult, RunStatus

_shim_for: dict[str, list[str]] = {}  # component SHA-256 -> the imports its shim wraps (empty: no shim)


@dataclass(frozen=True, slots=True)
class Mount:
    """A preopened directory: ``guest`` is the name the module sees, ``path`` the tenant's directory."""

    guest: str
    path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class TreeMount:
    """A preopened directory outside the tenant's files (``memtree.MemoryTree``): ``tree``
    is one shared tree (a runtime's read-only image) or a function making one per run (a
    scratch ``/tmp``). Preview 1 modules only."""

    guest: str
    tree: MemoryTree | Callable[[], MemoryTree]


@dataclass(frozen=True, slots=True)
class Program:
    """A guest kept as a file the host has checked (a runtime it serves), not bytes a
    caller sends: compiled from ``path`` once per engine, its SHA-256 ``digest`` vouched
    for by whoever unpacked it. ``entry``: the export that runs it, ``_start`` for a
    command or ``run`` for a reactor whose ``run`` returns the exit code. ``big_stack``:
    it needs an ``engine.BIG_STACK`` wasm stack. ``stub_imports``: (module, name) pairs it
    imports beyond WASI, each answered -1 (none provided)."""

    path: Path
    digest: str
    entry: str = "_start"
    big_stack: bool = False
    stub_imports: tuple[tuple[str, str], ...] = ()


class WasiHost:
    """Runs modules against one tenant. Safe to share between concurrent ``run_wasm`` calls.

    ``guest_dir`` is preopened as the same path of the tenant's filesystem
    (created if missing), unless ``mounts`` lists the preopens explicitly.
    ``write_back`` is the longest a run's changes wait before they are committed
    together (0: every close commits on its own); others see a closed file at
    once either way (see docs/wasi.md, "Write-back").
    """

    def __init__(
        self,
        tb: Tarbox,
        tenant: Tenant | str | uuid.UUID,
        guest_dir: str = "/workspace",
        *,
        mounts: list[Mount | TreeMount] | None = None,
        read_only: bool = False,
        timeout: float | None = 30.0,
        memory_limit: int | None = 256 << 20,
        fuel: int | None = None,
        max_fds: int = 1024,
        output_limit: int = 16 << 20,
        allow_clocks: bool = True,
        allow_random: bool = True,
        checkpoint_before: bool = False,
        write_back: float = 0.05,
        module_cache: engines.ModuleCache | None = None,
        audit: bool = True,
        audit_reads: bool = False,
        record_run: bool = True,
    ) -> None:
        self.tb = tb
        self.tenant = tenant
        self.mounts = mounts if mounts is not None else [Mount(guest_dir, guest_dir, read_only)]
        self.read_only = read_only
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.fuel = fuel
        self.max_fds = max_fds
        self.output_limit = output_limit
        self.allow_clocks = allow_clocks
        self.allow_random = allow_random
        self.checkpoint_before = checkpoint_before
        self.write_back = write_back
        self.cache = module_cache if module_cache is not None else engines.default_cache
        self.audit = audit  # record the run's changes in the tenant's audit log
        self.audit_reads = audit_reads  # ... and its opens for reading
        self.record_run = record_run  # write the run's record to the run log (tarbox.runs)

    def filesystem(self) -> Filesystem:
        """The guest's view: /.tarbox hidden, read-only when the host is."""
        return self.tb.filesystem(self.tenant, read_only=self.read_only, hide_control=True)

    async def run_wasm(
        self,
        wasm: bytes | Program,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes = b"",
        *,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> RunResult:
        """Run ``wasm`` to completion in a worker thread (wasm runs without the GIL)."""
        return await asyncio.to_thread(self.run, wasm, args, env, stdin, on_stdout=on_stdout, on_stderr=on_stderr)

    def run(
        self,
        wasm: bytes | Program,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes = b"",
        *,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
        command: str | None = None,
    ) -> RunResult:
        """The blocking form of :meth:`run_wasm`. ``command``: what the run log shows as
        the command (default: the arguments)."""
        t0 = time.monotonic()
        started_at = datetime.now(UTC)
        out = Output(self.output_limit, on_stdout, on_stderr)

        def result(status: RunStatus, code: int, trap: str | None = None, p1: Preview1 | None = None) -> RunResult:
            r = RunResult(status, code, bytes(out.stdout), bytes(out.stderr), time.monotonic() - t0, trap)
            if p1 is not None:
                r.stats = p1.stats
            return r

        program = wasm if isinstance(wasm, Program) else None
        component = not isinstance(wasm, Program) and engines.is_component(wasm)
        try:
            if isinstance(wasm, Program):
                fuel = self.fuel is not None
                module = self.cache.load_file(wasm.path, wasm.digest, fuel=fuel, big_stack=wasm.big_stack)
            else:
                digest = hashlib.sha256(wasm).hexdigest()
                module = self.cache.load(wasm, fuel=self.fuel is not None, digest=digest)
                if component:
                    module = self._with_shim(wasm, digest, module)
        except wasmtime.WasmtimeError as exc:
            return result(RunStatus.INVALID_MODULE, -1, f"invalid {'component' if component else 'module'}: {exc}")
        except component_shim.ShimError as exc:
            return result(RunStatus.INVALID_MODULE, -1, str(exc))
        fs = self.filesystem()
        fs.run_id, fs.audited, fs.audit_reads = uuid.uuid4(), self.audit, self.audit_reads
        checkpoint = None
        if self.checkpoint_before:
            checkpoint = fs.checkpoint(f"before run at {time.strftime('%Y-%m-%d %H:%M:%S')}").id
        with contextlib.ExitStack() as stack:
            wb = None
            if self.write_back > 0 and not self.read_only:
                wb = stack.enter_context(fs.write_back(self.write_back))
            if component:
                status, code, trap, p1 = self._execute_component(fs, module, args, env, stdin, out, t0)
            elif program is not None and program.big_stack:
                status, code, trap, p1 = engines.on_big_stack(
                    self._execute, fs, module, args, env, stdin, out, t0, program
                )
            else:
                status, code, trap, p1 = self._execute(fs, module, args, env, stdin, out, t0, program)
            try:
                stack.close()  # commits what the run left pending
            except (OSError, TarboxError) as exc:  # e.g. the database went away
                # The run's files are closed by now, so a quota or full disk refusing this
                # last commit refused only writes not yet acknowledged (other runs' on the
                # shared store, failed at their own closes); acknowledged ones lost show
                # as a lost window below.
                refused = getattr(exc, "errno", None) in (errno.EDQUOT, errno.ENOSPC)
                if status is RunStatus.EXITED and code == 0 and not refused:
                    status, code, trap = RunStatus.EXITED, 1, f"committing the run's writes failed: {exc}"
        if wb is not None and wb.lost and status is RunStatus.EXITED and code == 0:
            status, code, trap = RunStatus.EXITED, 1, "writes lost: a write-back window failed to commit"
        r = result(status, code, trap, p1)
        r.checkpoint = checkpoint
        r.run_id = fs.run_id
        r.bind_audit(fs)
        if self.record_run:
            command = command if command is not None else shlex.join(args or [])
            runs.record_result(self.tb, fs.tenant_id, r, started_at=started_at, command=command)
        return r

    def _with_shim(self, wasm: bytes, digest: str, component):
        """The component, composed with the shim (component_shim.py) when it imports what
        wasmtime-py 50 serves badly: methods taking two descriptors, stream byte lists.
        The composition is compiled and cached like any component, under the guest's hash."""
        if digest not in _shim_for:
            _shim_for[digest] = component_shim.needs_shim(component)
        wraps = _shim_for[digest]
        if not wraps:
            return component
        return self.cache.load_derived(
            f"{digest}.shimmed-{component_shim.GENERATOR}",
            lambda: component_shim.wrap(wasm, wraps),
            fuel=self.fuel is not None,
        )

    def run_state(self, cls, fs: Filesystem, args, env, stdin: bytes, out: Output, t0: float):
        """The run's WASI state (Preview1 or Preview2): preopens, stdio, limits. This and
        the three steps below are every run's, and a ``PythonSession``'s too."""
        preopens: list[tuple[str, object]] = []
        for m in self.mounts:
            if isinstance(m, TreeMount):
                if cls is not Preview1:
                    raise TypeError("a TreeMount serves Preview 1 modules only")
                tree = m.tree if isinstance(m.tree, MemoryTree) else m.tree()
                preopens.append((m.guest, tree.descriptor()))
                continue
            if not self.read_only and not m.read_only:
                fs.mkdir(m.path, parents=True, exist_ok=True)
            preopens.append((m.guest, Descriptor.preopen(fs, m.path, read_only=self.read_only or m.read_only)))
        return cls(
            args=list(args) if args is not None else ["main.wasm"],
            env=dict(env or {}),
            stdin=stdin,
            output=out,
            preopens=preopens,
            allow_clocks=self.allow_clocks,
            allow_random=self.allow_random,
            max_fds=self.max_fds,
            deadline=None if self.timeout is None else t0 + self.timeout,
        )

    def limited_store(self, big_stack: bool = False) -> wasmtime.Store:
        """A store with this host's memory, fuel and wall-clock limits."""
        store = wasmtime.Store(engines.engine(self.fuel is not None, big_stack))
        if self.memory_limit is not None:
            store.set_limits(memory_size=self.memory_limit)
        if self.fuel is not None:
            store.set_fuel(self.fuel)
        store.set_epoch_deadline((1 << 62) if self.timeout is None else max(1, math.ceil(self.timeout / engines.TICK)))
        return store

    def instantiate(self, linker, store, module):
        """The instance, or (status, code, message) when instantiation fails."""
        try:
            return linker.instantiate(store, module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            msg = str(exc)
            if "memory" in msg and "limit" in msg:
                return RunStatus.MEMORY_LIMIT, -1, msg
            return RunStatus.INVALID_MODULE, -1, msg

    def _execute_component(self, fs: Filesystem, component, args, env, stdin: bytes, out: Output, t0: float):
        """Instantiate a command component and call its ``wasi:cli/run``; as ``_execute``."""
        p2 = self.run_state(Preview2, fs, args, env, stdin, out, t0)
        eng = engines.engine(self.fuel is not None)
        store = self.limited_store()
        status, code, trap = RunStatus.EXITED, 0, None
        try:
            linker = wc.Linker(eng)
            missing = p2.define(linker, component, eng)
            if missing:
                msg = "component imports what this host does not provide: " + ", ".join(missing)
                return RunStatus.INVALID_MODULE, -1, msg, p2
            run_iface = next((n for n in component.type.exports(eng) if n.startswith("wasi:cli/run@0.2")), None)
            if run_iface is None:
                return RunStatus.INVALID_MODULE, -1, "component exports no wasi:cli/run@0.2.x (not a command)", p2
            instance = self.instantiate(linker, store, component)
            if isinstance(instance, tuple):
                return (*instance, p2)
            at = component.get_export_index(run_iface)
            run = instance.get_func(store, instance.get_export_index(store, "run", at))
            try:
                ended = run(store)
                code = 0 if getattr(ended, "tag", "ok") == "ok" else 1
            except BaseException as exc:  # noqa: BLE001 - classified from the run's own state below
                status, code, trap = self.how_it_ended(exc, p2, store, None)
        finally:
            try:
                p2.close_all()
            except (OSError, TarboxError) as exc:
                if status is RunStatus.EXITED and code == 0:
                    status, code, trap = RunStatus.EXITED, 1, f"closing files failed: {exc}"
        return status, code, trap, p2

    def _execute(
        self, fs: Filesystem, module, args, env, stdin: bytes, out: Output, t0: float, program: Program | None = None
    ):
        """Instantiate and run; returns (status, exit code, trap message, preview1 state)."""
        p1 = self.run_state(Preview1, fs, args, env, stdin, out, t0)
        big_stack = program is not None and program.big_stack
        eng = engines.engine(self.fuel is not None, big_stack)
        store = self.limited_store(big_stack)
        linker = wasmtime.Linker(eng)
        p1.define(linker)
        for where, name in program.stub_imports if program is not None else ():
            i32 = wasmtime.ValType.i32()
            linker.define_func(where, name, wasmtime.FuncType([i32] * 4, [i32]), _no_host)
        entry = program.entry if program is not None else "_start"
        status, code, trap = RunStatus.EXITED, 0, None
        try:
            instance = self.instantiate(linker, store, module)
            if isinstance(instance, tuple):
                return (*instance, p1)
            exports = instance.exports(store)
            memory = exports.get("memory")
            p1.attach(store, memory if isinstance(memory, wasmtime.Memory) else None)
            start = exports.get(entry)
            if not isinstance(start, wasmtime.Func):
                return RunStatus.INVALID_MODULE, -1, "module has no _start function (not a WASI command)", p1
            try:
                returned = start(store)
                if entry != "_start":
                    code = returned & 0xFF if isinstance(returned, int) else 0
            except BaseException as exc:  # noqa: BLE001 - classified from the run's own state below
                status, code, trap = self.how_it_ended(exc, p1, store, memory)
        finally:
            try:
                p1.close_all()
            except (OSError, TarboxError) as exc:  # a buffered write failed at the final close (e.g. quota)
                if status is RunStatus.EXITED and code == 0:
                    status, code, trap = RunStatus.EXITED, 1, f"closing files failed: {exc}"
            finally:
                p1.detach()
        return status, code, trap, p1

    def how_it_ended(self, exc: BaseException, p1, store, memory) -> tuple[RunStatus, int, str | None]:
        """How the run ended. The run's own state decides, not the exception object:
        wasmtime-py hands host exceptions back through one process-wide slot."""
        if p1.limit is not None:
            return p1.limit.status, -1, str(p1.limit)
        if p1.exit_code is not None:  # the guest handled whatever happened and chose its exit code
            return RunStatus.EXITED, p1.exit_code, None
        if getattr(p1, "refused", None) is not None:
            return RunStatus.TRAPPED, -1, str(p1.refused)
        if getattr(p1, "close_failed", None) is not None:
            return RunStatus.EXITED, 1, str(p1.close_failed)
        if isinstance(exc, (GuestExit, LimitExceeded, Refused, CloseFailed)):
            return RunStatus.TRAPPED, -1, "trap (details lost to a concurrent run)"
        if isinstance(exc, wasmtime.Trap):
            tc = exc.trap_code
            if tc is wasmtime.TrapCode.INTERRUPT:
                return RunStatus.TIMEOUT, -1, f"wall-clock timeout after {self.timeout} s"
            if tc is wasmtime.TrapCode.OUT_OF_FUEL:
                return RunStatus.OUT_OF_FUEL, -1, f"out of fuel ({self.fuel})"
            if self._at_memory_limit(store, memory):
                return RunStatus.MEMORY_LIMIT, -1, f"memory limit {self.memory_limit} bytes: {exc.message}"
            return RunStatus.TRAPPED, -1, exc.message
        if isinstance(exc, wasmtime.WasmtimeError):
            # component calls report traps as errors; the cause is the message's last line
            cause = str(exc).strip().rsplit("\n", 1)[-1].strip()
            if cause == "wasm trap: interrupt":
                return RunStatus.TIMEOUT, -1, f"wall-clock timeout after {self.timeout} s"
            if cause == "wasm trap: all fuel consumed by WebAssembly":
                return RunStatus.OUT_OF_FUEL, -1, f"out of fuel ({self.fuel})"
            return RunStatus.TRAPPED, -1, str(exc)
        raise exc

    def _at_memory_limit(self, store, memory) -> bool:
        """A trap with memory past half the limit is taken as the limit's doing: allocators
        grow geometrically, so their last refused request is about the size of the heap.
        (wasmtime-py offers no callback on a refused ``memory.grow``.)"""
        if self.memory_limit is None or not isinstance(memory, wasmtime.Memory):
            return False
        return memory.data_len(store) * 2 > self.memory_limit


def _no_host(*_args) -> int:
    """A stubbed import (a runtime's tool door, say): -1, nothing is provided."""
    return -1
