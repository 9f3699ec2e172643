"""Quotas under pressure: concurrent writers on one tenant run into its byte quota.

Writers at once: Python API threads, a Python API writer in another process,
and WASI guests (``writeback.c fill``, with write-back windows), each writing
files of distinct content until refused. A sampler reads the committed usage
every few milliseconds. Must hold: usage never above the quota (sampled and
at the end); every writer is refused with EDQUOT (guests: the WASI error, as
errno EDQUOT); every file a writer reported complete is intact, byte for byte;
the counters equal what is stored (fsck clean).
"""

from __future__ import annotations

import errno
import subprocess
import threading
import time
import uuid

from other_process import spawn_writer
from suites import SuiteResult
from tarbox.wasi import WasiHost
from wasi_support import guest

WASI_EDQUOT = 19  # wasi-libc's errno numbers are WASI's


def content(tag: str, i: int, size: int) -> bytes:
    """What writer ``tag`` puts in its file ``i`` (the guest makes the same bytes)."""
    unit = f"{tag}:{i};".encode()
    return (unit * (size // len(unit) + 1))[:size]


_PROCESS = """
i = 0
while True:
    unit = f"{TAG}:{i};".encode()
    try:
        fs.write_file(f"{TAG}/f{i}", (unit * (SIZE // len(unit) + 1))[:SIZE])
    except OSError as exc:
        print("err", exc.errno, flush=True)
        break
    print("ok", i, flush=True)
    i += 1
"""


def run(tb, db_url: str, *, rounds: int = 1, quota: int = 4 << 20, size: int = 48 << 10) -> SuiteResult:
    result = SuiteResult("quotas under pressure")
    result.figures["max sampled usage / quota"] = 0.0
    wasm = guest("writeback")
    for _ in range(rounds):
        tenant = tb.create_tenant(f"quota-{uuid.uuid4().hex[:10]}", quota_bytes=quota)
        try:
            _round(tb, db_url, tenant, wasm, quota, size, result)
        finally:
            tb.delete_tenant(tenant)
    return result


def _round(tb, db_url, tenant, wasm, quota, size, result) -> None:
    fs = tb.filesystem(tenant)
    fs.makedirs("/workspace")
    fs.write_file("/before", b"written before the pressure")
    done: dict[str, list[int]] = {}  # writer tag -> files reported complete
    refused: dict[str, int | None] = {}  # writer tag -> errno it ended with
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        with tb.db.admin() as conn:
            while not stop.is_set():
                used = conn.execute(
                    "SELECT used_bytes FROM tenant_state WHERE tenant_id = %s", (tenant.id,)
                ).fetchone()[0]
                peak[0] = max(peak[0], used)
                time.sleep(0.005)

    def api_writer(tag: str) -> None:
        wfs = tb.filesystem(tenant)
        wfs.makedirs(f"/{tag}")
        done[tag], refused[tag] = [], None
        for i in range(100_000):
            try:
                wfs.write_file(f"/{tag}/f{i}", content(f"/{tag}", i, size))
            except OSError as exc:
                refused[tag] = exc.errno
                return
            except Exception as exc:  # noqa: BLE001 - any other error is a defect to report
                result.fail(f"writer {tag}: {type(exc).__name__}: {exc}")
                return
            done[tag].append(i)

    def guest_writer(tag: str) -> None:
        r = WasiHost(tb, tenant, "/workspace").run(wasm, ["g", "fill", f"/workspace/{tag}", str(size)])
        lines = r.stdout.decode().splitlines()
        done[tag] = [int(x.split()[1]) for x in lines if x.startswith("ok ")]
        last = lines[-1].split() if lines else []
        refused[tag] = int(last[1]) if last and last[0] == "err" else None
        if not r.ok:
            result.fail(f"guest {tag}: status={r.status} code={r.exit_code} trap={r.trap}")

    proc = spawn_writer(
        db_url,
        tenant,
        _PROCESS.replace("TAG", repr("/proc")).replace("SIZE", str(size)),
        stdout=subprocess.PIPE,
        text=True,
    )
    fs.makedirs("/proc")
    threads = [threading.Thread(target=sample)]
    threads += [threading.Thread(target=api_writer, args=(f"api{n}",)) for n in range(3)]
    threads += [threading.Thread(target=guest_writer, args=(f"guest{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    out, _ = proc.communicate(timeout=300)
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    lines = out.splitlines()
    done["/proc"] = [int(x.split()[1]) for x in lines if x.startswith("ok ")]
    refused["/proc"] = int(lines[-1].split()[1]) if lines and lines[-1].startswith("err") else None

    usage = tb.filesystem(tenant).usage()
    peak[0] = max(peak[0], usage.used_bytes)  # the end state is a sample too
    result.cases += sum(len(v) + 1 for v in done.values())
    result.figures["max sampled usage / quota"] = max(result.figures["max sampled usage / quota"], peak[0] / quota)
    result.figures["files written before the quota"] = result.figures.get("files written before the quota", 0) + sum(
        len(v) for v in done.values()
    )
    if peak[0] > quota or usage.used_bytes > quota:
        result.fail(f"usage passed the quota: sampled peak {peak[0]}, final {usage.used_bytes}, quota {quota}")
    for tag, code in refused.items():
        if code != (WASI_EDQUOT if tag.startswith("guest") else errno.EDQUOT):
            result.fail(f"writer {tag} ended with errno {code}, not EDQUOT")
    fs = tb.filesystem(tenant)
    for tag, files in done.items():
        base = f"/workspace/{tag}" if tag.startswith("guest") else (tag if tag.startswith("/") else f"/{tag}")
        for i in files:
            try:
                data = fs.read_file(f"{base}/f{i}")
            except OSError as exc:
                result.fail(f"{base}/f{i}, reported written, is gone: {exc}")
                continue
            if data != content(base, i, size):
                result.fail(f"{base}/f{i}, reported written, has other content ({len(data)} bytes)")
    if fs.read_file("/before") != b"written before the pressure":
        result.fail("the file written before the pressure changed")
    result.fsck(tb, tenant)
