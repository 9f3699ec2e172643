"""``NativeHost``: runs a native command (git, bash, python, gcc, node, whatever the
host's /usr holds) sandboxed over a tenant's workspace, as one undoable unit.

A run: freeze the tenant (a checkpoint: the run's base and its undo point); lease
the workspace at that layer from the local trees (lower.py); start the sandbox
(jail.py) with an overlay of a fresh upper directory on it, under the run's limits
(limits.py); when it ends, read what it changed from the upper directory (upper.py;
where overlayfs cannot be mounted, the run works on a private copy instead, compared
afterwards: copied.py)
and commit all of it in one atomic batch, after checking that nobody changed the
same paths meanwhile; record the run in the run log. Others see the run's changes
all at once when it ends, or never (docs/exec.md: the consistency contract).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from tarbox import runs
from tarbox.client import Tarbox, Tenant
from tarbox.errors import TarboxError
from tarbox.sandbox import caches, copied, jail, network, seccomp, upper
from tarbox.sandbox.limits import Cgroup, Limits, ulimit_script
from tarbox.sandbox.lower import LowerTrees
from tarbox.sandbox.network import Destination
from tarbox.sandbox.result import ExecResult, ExecStatus
from tarbox.storage.server import home_dir

log = logging.getLogger("tarbox.sandbox")
POLL = 0.02  # seconds between limit checks


class SandboxUnavailable(RuntimeError):
    """This machine cannot run native commands sandboxed (what is missing is said)."""


WORKSPACE_KINDS = ("auto", "overlay", "copy")


@functools.cache
def overlay_unavailable_reason() -> str | None:
    """Why an overlay cannot be mounted in a user namespace here (then runs work on a
    copy), or None; tried once."""
    with tempfile.TemporaryDirectory(prefix="tarbox-overlay-probe-") as d:
        for part in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(d, part))
        options = f"lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work,{jail.OVERLAY_OPTIONS}"
        argv = [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--mount", "--"]
        argv += ["mount", "-t", "overlay", "overlay", "-o", options, f"{d}/merged"]
        return _why_it_fails(argv, "overlayfs cannot be mounted in a user namespace")


def _why_it_fails(argv: list[str], failing: str) -> str | None:
    """Run a probe; why it failed (``failing``, then what it said last), or None."""
    try:
        p = subprocess.run(argv, capture_output=True, timeout=10, env={"PATH": jail.PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{Path(argv[0]).name} cannot run: {exc}"
    if p.returncode != 0:
        said = p.stderr.decode(errors="replace").strip().splitlines()
        return f"{failing}: {said[-1] if said else p.returncode}"
    return None


@functools.cache
def unavailable_reason() -> str | None:
    """Why native runs cannot work here, or None: the tools are looked for, and user
    namespaces and bubblewrap tried once (a kernel or container may forbid them)."""
    if jail.bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        seccomp.deny_list_program()
    except seccomp.SeccompUnavailable as exc:
        return str(exc)
    bwrap = jail.bwrap_path() or "bwrap"
    argv = [bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "--", "/bin/true"]
    return _why_it_fails(argv, f"{Path(bwrap).name} cannot make a user namespace here")


class NativeHost:
    """Runs native commands over ``tenant``'s ``guest_dir`` (seen as /workspace)."""

    def __init__(
        self,
        tb: Tarbox,
        tenant: Tenant | str | uuid.UUID,
        guest_dir: str = "/workspace",
        *,
        limits: Limits | None = None,
        network: list[str] | None = None,
        record_run: bool = True,
        audit: bool = True,
        home: Path | None = None,
        workspace: str = "auto",
    ) -> None:
        self.tb = tb
        self.tenant = tb.get_tenant(tenant)
        self.guest_dir = "/" + guest_dir.strip("/") if guest_dir.strip("/") else "/"
        self.limits = limits or Limits()
        # HOST:PORT destinations the run may reach through the egress proxy; None or
        # empty: no network at all (network.py)
        self.network = list(network or [])
        for destination in self.network:
            Destination.parse(destination)  # a malformed entry is refused here, before any run
        # how the run's workspace is made: an overlay on the local tree, or a copy of it
        # where overlays cannot be mounted ("auto" tells which, once per process)
        if workspace not in WORKSPACE_KINDS:
            raise ValueError(f"workspace must be one of {', '.join(WORKSPACE_KINDS)}: {workspace!r}")
        self.workspace = workspace
        self.record_run = record_run
        self.audit = audit
        self.base = (home or home_dir()) / "exec" / str(self.tenant.id)
        self.trees = LowerTrees(self.base, tb, self.tenant.id, self.guest_dir)
        self.spares = copied.Spares(self.base)

    def run(
        self,
        command: list[str] | str,
        *,
        stdin: bytes = b"",
        env: dict[str, str] | None = None,
        cwd: str = jail.WORKSPACE,
    ) -> ExecResult:
        """Run ``command`` (an argv, or a string for ``bash -c``) to its end."""
        why = unavailable_reason()
        if why:
            raise SandboxUnavailable(why)
        argv = ["/bin/bash", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("an empty command")
        if not (cwd == jail.WORKSPACE or cwd.startswith(jail.WORKSPACE + "/")) or "\0" in cwd:
            raise ValueError(f"cwd must be inside {jail.WORKSPACE}: {cwd!r}")
        t0, started_at = time.monotonic(), datetime.now(UTC)
        run_id = uuid.uuid4()
        timings: dict[str, float] = {}
        fs = self.tb.filesystem(self.tenant, isolated=True, hide_control=True)
        fs.run_id, fs.audited = run_id, self.audit
        rundir = self.base / "runs" / f"{run_id}-{os.getpid()}"
        try:
            caches.mark_used(self.base)
            self._collect_dead_runs()
            if not fs.is_dir(self.guest_dir):
                fs.makedirs(self.guest_dir)
            layer, base_gen = self._base(fs, argv)
            timings["checkpoint"] = time.monotonic() - t0
            t = time.monotonic()
            lease = self.trees.lease(layer, history=fs)
            spare, result = None, None
            try:
                if self.copies:
                    try:
                        spare = self.spares.take(lease.path)
                    except OSError as exc:  # space, permissions: the run does not start
                        result = ExecResult(ExecStatus.FAILED, -1, b"", b"", 0.0, run_id, error=f"the copy: {exc}")
                    lease.release()  # the copy is the run's own: the tree may move on
                timings["sync_in"] = time.monotonic() - t
                t = time.monotonic()
                if result is None:
                    workspace = lease.path if spare is None else spare.path
                    result = self._sandbox(run_id, rundir, workspace, argv, cwd, stdin, env or {}, t0)
            finally:
                lease.release()
            timings["sandbox"] = time.monotonic() - t
            result.checkpoint = layer
            t = time.monotonic()
            in_tree = False
            try:
                if result.status is not ExecStatus.FAILED:
                    if spare is not None:
                        ops = copied.scan(spare.path, spare.manifest, self.guest_dir)
                    else:
                        ops = upper.scan(rundir / "upper", self.guest_dir)
                    in_tree = self._write_back(fs, ops, result, layer, base_gen)
            finally:
                if spare is not None:
                    self.spares.give_back(spare, clean=in_tree)
            timings["sync_out"] = time.monotonic() - t
        finally:
            _remove_run_dir(rundir)
        result.duration = time.monotonic() - t0
        result.timings.update(timings)
        if self.record_run:
            runs.record(
                self.tb,
                self.tenant.id,
                run_id=run_id,
                started_at=started_at,
                duration=result.duration,
                command="exec: " + shlex.join(argv),
                status=result.status.value,
                exit_code=result.exit_code,
                trap=result.error,
                checkpoint=result.checkpoint,
                stdout=result.stdout,
                stderr=result.stderr,
            )
        return result

    @property
    def copies(self) -> bool:
        """Does a run work on a copy of the tree (no overlay)?"""
        if self.workspace == "auto":
            return overlay_unavailable_reason() is not None
        return self.workspace == "copy"

    def _base(self, fs, argv) -> tuple[int, int | None]:
        """The frozen layer the run sees (and undoes to), with the tenant's generation it
        was seen at: the last checkpoint when nothing changed since (no layer added for
        a run that follows another or a checkpoint), else a new checkpoint."""
        gen = fs.generation  # read before the check below: a commit after it shows at the write-back
        head = fs.current_layer()
        if head.frozen:
            return head.id, gen
        if head.parent_id is not None and fs.rows_changed(head.parent_id, head) == ({}, set()):
            return head.parent_id, gen
        return fs.checkpoint(f"before exec: {shlex.join(argv)[:200]}").id, fs.generation

    # ------------------------------------------------------------ the sandbox

    def _sandbox(self, run_id, rundir: Path, lower: Path, argv, cwd, stdin: bytes, env, t0) -> ExecResult:
        """``lower``: the overlay's lower tree, or the run's own copy (``copies``)."""
        limits = self.limits
        if self.copies:
            overlay, workspace = None, lower  # the run's own copy, bound as it is
        else:
            for part in ("upper", "work", "merged"):
                (rundir / part).mkdir(parents=True, mode=0o700)
            os.chmod(rundir / "upper", os.stat(lower).st_mode & 0o7777)  # the merged root shows the upper's
            overlay = jail.Overlay(lower=lower, upper=rundir / "upper", work=rundir / "work")
            workspace = rundir / "merged"
        jail.write_etc(rundir / "etc")
        cgroup = Cgroup(f"{run_id}", limits)
        enforced = [f"cgroup:{c}" for c in sorted(cgroup.controls)]
        ulimits = ulimit_script(limits, cgroup.controls)
        enforced += [f"rlimit:{w}" for w, c in (("memory", "memory"), ("cpu", "cpuacct")) if c not in cgroup.controls]
        net_dir = None
        if self.network:
            net_dir = Path(tempfile.mkdtemp(prefix="tarbox-net-"))  # short: a socket's path has 108 bytes
            env = {**network.proxy_env(), **env}
        filter_r, filter_w = os.pipe()
        status_r, status_w = os.pipe()
        os.write(filter_w, seccomp.deny_list_program())
        os.close(filter_w)
        argv_full = jail.command_line(
            overlay=overlay,
            workspace=workspace,
            etc=rundir / "etc",
            argv=argv,
            cwd=cwd,
            env=jail.base_env(env),
            cgroup_procs=cgroup.procs_files(),
            ulimits=ulimits,
            seccomp_fd=filter_r,
            status_fd=status_w,
            tmp_bytes=limits.tmp_bytes,
            net_dir=net_dir,
        )
        out = _Output(limits.output_bytes)
        status, error = ExecStatus.EXITED, None
        proxy = None if net_dir is None else network.EgressProxy(net_dir, self.network)
        try:
            proc = subprocess.Popen(
                argv_full,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(filter_r, status_w),
                start_new_session=True,
                env={"PATH": jail.PATH},
            )
        finally:
            os.close(filter_r)
            os.close(status_w)
        threads = [
            threading.Thread(target=out.read, args=(proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=out.read, args=(proc.stderr, "stderr"), daemon=True),
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True),
        ]
        for th in threads:
            th.start()
        status_lines = _StatusReader(status_r)
        exited = _ExitWatch(proc)
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - t0
                stop = None
                if limits.wall_seconds is not None and elapsed > limits.wall_seconds:
                    stop = ExecStatus.TIMEOUT, f"wall-clock limit of {limits.wall_seconds:g} s"
                elif out.over:
                    stop = ExecStatus.OUTPUT_LIMIT, f"output limit of {limits.output_bytes} bytes"
                elif cgroup.pids_limit_hit():
                    stop = ExecStatus.PIDS_LIMIT, f"process limit of {limits.pids}"
                elif cgroup.memory_limit_hit():
                    stop = ExecStatus.MEMORY_LIMIT, f"memory limit of {limits.memory_bytes} bytes"
                elif limits.cpu_seconds is not None and (cgroup.cpu_seconds() or 0) > limits.cpu_seconds:
                    stop = ExecStatus.CPU_LIMIT, f"CPU limit of {limits.cpu_seconds:g} s"
                if stop:
                    status, error = stop
                    _kill(proc, cgroup)
                    break
                exited.wait(POLL)
            proc.wait()
            cgroup.kill_all()  # whatever outlived the command (a daemonised child)
            for th in threads[:2]:
                th.join(5)
        finally:
            _kill(proc, cgroup)
            memory_hit = cgroup.memory_limit_hit()
            cgroup.remove()
            status_lines.close()
            exited.close()
            if proxy is not None and net_dir is not None:
                proxy.close()
                shutil.rmtree(net_dir, ignore_errors=True)
        code = proc.returncode
        if status is ExecStatus.EXITED:
            if memory_hit:
                status, error = ExecStatus.MEMORY_LIMIT, f"memory limit of {limits.memory_bytes} bytes"
            elif "exit-code" not in status_lines.seen:  # bubblewrap failed before the command ran
                status = ExecStatus.FAILED
                error = "the sandbox did not start: " + out.text("stderr")[-500:].strip()
            else:
                code = status_lines.seen["exit-code"]
        result = ExecResult(
            status,
            code if code is not None else -1,
            bytes(out.stdout),
            bytes(out.stderr),
            0.0,
            run_id,
            error=error,
            limits_enforced=enforced,
        )
        if proxy is not None:
            result.network_denied = proxy.denied
        return result

    # ------------------------------------------------------------ write-back

    def _write_back(self, fs, ops: list[upper.Op], result: ExecResult, base_layer: int, base_gen) -> bool:
        """Commit the run's changes in one atomic batch, or nothing: on a conflict with
        what others committed since the base, or a failure (quota, database). Says
        whether the local tree at ``base_layer`` holds them now (merged, or none made).

        Under the tenant's write lock, the generation tells whether anyone committed since
        the run's checkpoint; if so, each path the run changed is compared between the
        checkpoint and now, still under the lock, so nothing can slip in between."""
        if not ops:
            return True
        try:
            with fs.atomic():
                if fs.generation is not None and fs.generation - 1 == base_gen:
                    result.bytes_written = upper.apply(fs, ops)
                    placed = upper.placed(fs, ops)
                    applied = True
                else:
                    applied = False
            if not applied:  # others committed meanwhile: compare path by path
                base = self.tb.filesystem(self.tenant, layer=base_layer, hide_control=True)
                before = upper.fingerprints(base, ops)
                with fs.atomic():
                    found = upper.conflicts(ops, before, upper.fingerprints(fs, ops))
                    if found:
                        result.status, result.conflicts = ExecStatus.CONFLICT, found
                        result.error = f"{len(found)} paths were changed by others during the run; nothing written back"
                        return False
                    result.bytes_written = upper.apply(fs, ops)
                    placed = upper.placed(fs, ops)
        except (TarboxError, OSError) as exc:
            result.status, result.error = ExecStatus.FAILED, f"writing the run's changes back failed: {exc}"
            return False
        result.changed = [op.path for op in ops if op.kind is not upper.OpKind.DIR]
        t = time.monotonic()
        merged = False
        try:
            merged = self.trees.merge(base_layer, ops, placed)
        except OSError as exc:  # committed all the same; the tree stays dirty and is rebuilt
            log.warning("could not merge run %s into the local tree: %s", result.run_id, exc)
        result.timings["merge"] = time.monotonic() - t
        return merged

    def _collect_dead_runs(self) -> None:
        """Run directories (and copies) of processes that died (kill -9) before cleaning up."""
        self.spares.collect()
        runs_dir = self.base / "runs"
        if not runs_dir.is_dir():
            return
        for entry in runs_dir.iterdir():
            if caches.run_owner_alive(entry) is False:  # this process is alive: its runs stay
                _remove_run_dir(entry)
                Cgroup.leftover(entry.name.rsplit("-", 1)[0])


class _Output:
    """stdout and stderr as they come, up to the run's output limit together."""

    def __init__(self, limit: int) -> None:
        self.limit, self.stdout, self.stderr, self.over = limit, bytearray(), bytearray(), False
        self._lock = threading.Lock()

    def read(self, pipe, which: str) -> None:
        buf = getattr(self, which)
        while chunk := pipe.read1(1 << 16):
            with self._lock:
                room = self.limit - len(self.stdout) - len(self.stderr)
                buf += chunk[: max(0, room)]
                if len(chunk) > room:
                    self.over = True

    def text(self, which: str) -> str:
        return bytes(getattr(self, which)).decode(errors="replace")


class _StatusReader:
    """bubblewrap's JSON status lines (child-pid when the command started, exit-code
    when it ended), read as they come."""

    def __init__(self, fd: int) -> None:
        self.seen: dict = {}
        self._file = os.fdopen(fd, "rb")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._file:
            with contextlib.suppress(ValueError):
                self.seen.update(json.loads(line))

    def close(self) -> None:
        self._thread.join(5)
        self._file.close()


class _ExitWatch:
    """Wakes the moment the launcher exits (a pidfd), where ``Popen.wait(timeout)``
    would poll with sleeps and notice up to a poll interval late."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._proc, self._poll, self._fd = proc, None, -1
        with contextlib.suppress(AttributeError, OSError):  # pidfds: Linux 5.3
            self._fd = os.pidfd_open(proc.pid)
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        if self._poll is not None:
            self._poll.poll(timeout * 1000)
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _feed(pipe, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        if data:
            pipe.write(data)
        pipe.close()


def _kill(proc: subprocess.Popen, cgroup: Cgroup) -> None:
    """The whole tree: the launcher's session (bubblewrap's --die-with-parent takes the
    sandbox's PID namespace with it) and whatever is left in the cgroup."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    cgroup.kill_all()


def _remove_run_dir(path: Path) -> None:
    def unlock_then_retry(func, p, info):  # overlayfs leaves work/work at mode 000
        for d in (p, os.path.dirname(p)):
            with contextlib.suppress(OSError):
                os.chmod(d, 0o700)
        with contextlib.suppress(FileNotFoundError):
            func(p)

    if path.exists():
        shutil.rmtree(path, onerror=unlock_then_retry)
