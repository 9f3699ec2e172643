"""Concurrency and load: 8 writers (half threads, half processes) for a while.

Each writer loops over operations, timing each:

* on the shared tenant: create ``/w{id}/f{n}``, rename it to ``/w{id}/r{n}``,
  append the line ``w{id}:{n}`` to ``/shared.log`` (O_APPEND), and every 25th
  round a checkpoint;
* on one of its own tenants (50 tenants dealt round-robin to the writers):
  write ``/data/{n}``, append to ``/own.log``, and every 10th round a
  checkpoint followed by a switch to it (the tenant's only writer, so the switch
  loses nothing).

Afterwards every acknowledged operation must be there exactly once: each
writer's directory holds exactly ``r0..r{n-1}`` with their content, the shared
log holds exactly the acknowledged lines, whole, each once; the own tenants
hold their files and logs; every tenant is fsck-clean. Reported: operations per
second held and the p50/p99 latency of one operation.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import tarbox
from suites import SuiteResult

TESTS = str(Path(__file__).resolve().parent.parent)


def worker(url: str, wid: int, shared: str, own: list[str], seconds: float) -> dict:
    """One writer's loop; returns what it did and how long each operation took."""
    tb = tarbox.connect(url)
    try:
        fs = tb.filesystem(shared)
        fs.makedirs(f"/w{wid}")
        owned = [tb.filesystem(t) for t in own]
        for o in owned:
            o.makedirs("/data")
        lat: list[float] = []
        errors: list[str] = []
        n = 0
        own_files: dict[str, int] = {t: 0 for t in own}
        deadline = time.monotonic() + seconds

        def timed(fn, *args):
            t0 = time.perf_counter()
            try:
                fn(*args)
            finally:
                lat.append(time.perf_counter() - t0)

        while time.monotonic() < deadline:
            try:
                timed(fs.write_file, f"/w{wid}/f{n}", f"w{wid}:{n}".encode())
                timed(fs.rename, f"/w{wid}/f{n}", f"/w{wid}/r{n}")
                timed(fs.append_file, "/shared.log", f"w{wid}:{n}\n".encode())
                if n % 25 == 24:
                    timed(fs.checkpoint, f"w{wid} round {n}")
                if owned:
                    t, o = own[n % len(own)], owned[n % len(own)]
                    k = own_files[t]
                    timed(o.write_file, f"/data/{k}", f"{t}:{k}".encode())
                    timed(o.append_file, "/own.log", f"{k}\n".encode())
                    own_files[t] = k + 1
                    if k % 10 == 9:
                        cp = o.checkpoint(f"round {k}")
                        timed(o.switch, cp.id)
            except Exception as exc:  # noqa: BLE001 - reported, and the round is not counted
                errors.append(f"{type(exc).__name__}: {exc}")
                break
            n += 1
        return {"wid": wid, "rounds": n, "own": own_files, "lat": lat, "errors": errors}
    finally:
        tb.close()


def _process_main() -> None:
    url, wid, shared, own, seconds = json.loads(sys.argv[1])
    print(json.dumps(worker(url, wid, shared, own, seconds)))


def run(tb, db_url: str, *, seconds: float = 5.0, writers: int = 8, tenants: int = 50) -> SuiteResult:
    result = SuiteResult("concurrency and load")
    tag = uuid.uuid4().hex[:8]
    shared = tb.create_tenant(f"load-{tag}")
    owns = [tb.create_tenant(f"load-{tag}-{i}") for i in range(tenants)]
    try:
        dealt = [[t.name for t in owns[w::writers]] for w in range(writers)]
        reports: list[dict] = []
        procs = []
        threads = []
        t0 = time.monotonic()
        for w in range(writers):
            if w % 2:
                args = json.dumps([db_url, w, shared.name, dealt[w], seconds])
                code = (
                    f"import sys; sys.path.insert(0, {TESTS!r}); from suites.load import _process_main; _process_main()"
                )
                procs.append(subprocess.Popen([sys.executable, "-c", code, args], stdout=subprocess.PIPE, text=True))
            else:
                th = threading.Thread(
                    target=lambda w=w: reports.append(worker(db_url, w, shared.name, dealt[w], seconds))
                )
                threads.append(th)
                th.start()
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 300)
            if p.returncode:
                result.fail(f"a writer process exited with {p.returncode}")
                continue
            reports.append(json.loads(out.strip().splitlines()[-1]))
        for th in threads:
            th.join()
        wall = time.monotonic() - t0
        _check(tb, shared, reports, result)
        lat = sorted(x for r in reports for x in r["lat"])
        result.cases = len(lat)
        if lat:
            result.figures["writers"] = f"{writers} ({(writers + 1) // 2} threads, {writers // 2} processes)"
            result.figures["tenants"] = 1 + tenants
            result.figures["ops/s"] = round(len(lat) / wall)
            result.figures["p50 ms"] = round(statistics.median(lat) * 1000, 2)
            result.figures["p99 ms"] = round(lat[int(len(lat) * 0.99) - 1] * 1000, 2)
            result.figures["seconds"] = round(wall, 1)
    finally:
        for t in [shared, *owns]:
            tb.delete_tenant(t)
    return result


def _check(tb, shared, reports: list[dict], result: SuiteResult) -> None:
    for r in reports:
        for e in r["errors"]:
            result.fail(f"writer {r['wid']}: {e}")
    fs = tb.filesystem(shared)
    log = fs.read_file("/shared.log").decode().splitlines() if fs.exists("/shared.log") else []
    expected_log = sorted(f"w{r['wid']}:{n}" for r in reports for n in range(r["rounds"]))
    if sorted(log) != expected_log:
        missing = set(expected_log) - set(log)
        extra = [x for x in log if x not in set(expected_log)]
        result.fail(
            f"shared log: {len(log)} lines, {len(expected_log)} acknowledged;"
            f" missing {sorted(missing)[:5]}, extra {extra[:5]}"
        )
    for r in reports:
        wid, n = r["wid"], r["rounds"]
        names = sorted(fs.listdir(f"/w{wid}"))
        if names != sorted(f"r{i}" for i in range(n)):
            result.fail(f"/w{wid}: {len(names)} entries, {n} acknowledged renames")
            continue
        for i in range(n):
            if fs.read_file(f"/w{wid}/r{i}") != f"w{wid}:{i}".encode():
                result.fail(f"/w{wid}/r{i}: wrong content")
        for t, k in r["own"].items():
            ofs = tb.filesystem(t)
            files = sorted(int(x) for x in ofs.listdir("/data"))
            log_lines = ofs.read_file("/own.log").decode().splitlines() if k else []
            if files != list(range(k)) or log_lines != [str(i) for i in range(k)]:
                result.fail(f"tenant {t}: {len(files)} files and {len(log_lines)} log lines, {k} acknowledged")
    result.fsck(tb, shared.name, *[t for r in reports for t in r["own"]])
