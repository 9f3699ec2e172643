"""``tarbox serve`` benchmark: the REST API and MCP next to the in-process Python API,
in one run, against a real server process on localhost.

    python bench/serve_bench.py [--ops 300] [--transfer-mib 1024] [--clients 16]

Prints one table: latency p50/p99 of stat, 4 KiB read and 4 KiB write (in-process,
REST, MCP), throughput of 16 concurrent REST clients, upload and download of one
large file (MB/s, in-process streaming as the baseline) with the server's peak RSS,
and ``run_python`` of ``print(1)`` end to end. Needs ``pip install -e '.[test,bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import httpx2
import psutil
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.tokens import create_token

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from server_support import start_server  # noqa: E402

MiB = 1 << 20


def pcts(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3


def timed_each(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


class PeakRss:
    """The largest RSS of a process, sampled every 20 ms while running."""

    def __init__(self, pid: int) -> None:
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self.base = self.proc.memory_info().rss
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        time.sleep(0.05)
        return (self.peak - self.base) / MiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--transfer-mib", type=int, default=1024)
    ap.add_argument("--clients", type=int, default=16)
    a = ap.parse_args()

    tb = tarbox.connect()
    tenant = tb.create_tenant(f"serve-bench-{uuid.uuid4().hex[:8]}")
    fs = tb.filesystem(tenant)
    fs.audited = False
    fs.makedirs("/workspace")
    data = os.urandom(4096)
    for i in range(a.ops):
        fs.write_file(f"/workspace/r{i}", data)
    rows: list[tuple[str, str, str, str]] = []
    tmp = tempfile.mkdtemp(prefix="serve-bench-")
    server = start_server(tb.db.url, tmp, "--run-timeout", "120")
    token, _ = create_token(tb, tenant)
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=600)
    try:
        # ---- latency: in-process, REST, MCP
        inproc = {
            "stat": timed_each(lambda i: fs.stat(f"/workspace/r{i}"), a.ops),
            "read 4 KiB": timed_each(lambda i: fs.read_file(f"/workspace/r{i}"), a.ops),
            "write 4 KiB": timed_each(lambda i: fs.write_file(f"/workspace/w{i}", data), a.ops),
        }
        rest = {
            "stat": timed_each(lambda i: api.get(f"/v1/stat/workspace/r{i}").raise_for_status(), a.ops),
            "read 4 KiB": timed_each(lambda i: api.get(f"/v1/files/workspace/r{i}").raise_for_status(), a.ops),
            "write 4 KiB": timed_each(
                lambda i: api.put(f"/v1/files/workspace/x{i}", content=data).raise_for_status(), a.ops
            ),
        }
        mcp = asyncio.run(mcp_latency(server.url, token, a.ops, data))
        for op in ("stat", "read 4 KiB", "write 4 KiB"):
            (ip50, ip99), (rp50, rp99), (mp50, mp99) = pcts(inproc[op]), pcts(rest[op]), pcts(mcp[op])
            rows.append(
                (
                    f"{op}: p50 / p99 (ms)",
                    f"{ip50:.2f} / {ip99:.2f}",
                    f"REST {rp50:.2f} / {rp99:.2f} (+{rp50 - ip50:.2f} at p50)",
                    f"MCP {mp50:.2f} / {mp99:.2f}",
                )
            )

        # ---- throughput: concurrent REST clients reading 4 KiB
        per = max(50, a.ops // 2)

        def client_loop(c: int) -> None:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as cl:
                for i in range(per):
                    cl.get(f"/v1/files/workspace/r{(c * per + i) % a.ops}").raise_for_status()

        t = time.perf_counter()
        with ThreadPoolExecutor(a.clients) as pool:
            list(pool.map(client_loop, range(a.clients)))
        conc = a.clients * per / (time.perf_counter() - t)
        one = a.ops / sum(rest["read 4 KiB"])
        rows.append(
            (
                f"{a.clients} REST clients, 4 KiB reads (ops/s)",
                f"1 client: {one:.0f}",
                f"{conc:.0f}",
                f"{conc / one:.2f}x",
            ),
        )

        # ---- large transfer: in-process streaming vs REST, with the server's RSS
        size = a.transfer_mib * MiB
        pool = os.urandom(2 * MiB)

        def chunk(i: int) -> bytes:  # every 128 KiB block distinct: nothing deduplicates
            at = (i * 16) % MiB
            return pool[at : at + MiB]

        t = time.perf_counter()
        with fs.open("/workspace/big-local.bin", "wb") as f:
            for i in range(a.transfer_mib):
                f.write(chunk(i))
        in_up = size / (time.perf_counter() - t) / 1e6
        with tarbox.connect() as cold:  # a fresh client, as the server is: no block in its cache
            t = time.perf_counter()
            with cold.filesystem(tenant).open("/workspace/big-local.bin", "rb") as f:
                while f.read(MiB):
                    pass
            in_down = size / (time.perf_counter() - t) / 1e6

        def body():
            for i in range(a.transfer_mib):
                yield chunk(i + a.transfer_mib)

        rss = PeakRss(server.proc.pid)
        t = time.perf_counter()
        api.put("/v1/files/workspace/big.bin", content=body()).raise_for_status()
        up = size / (time.perf_counter() - t) / 1e6
        up_rss = rss.stop()
        rss = PeakRss(server.proc.pid)
        t = time.perf_counter()
        got = 0
        with api.stream("GET", "/v1/files/workspace/big.bin") as r:
            for piece in r.iter_raw(MiB):
                got += len(piece)
        down = size / (time.perf_counter() - t) / 1e6
        down_rss = rss.stop()
        assert got == size
        rows.append(
            (
                f"upload {a.transfer_mib} MiB (MB/s)",
                f"{in_up:.0f}",
                f"{up:.0f} ({up / in_up:.0%}); server RSS +{up_rss:.0f} MiB",
                "",
            )
        )
        rows.append(
            (
                f"download {a.transfer_mib} MiB (MB/s)",
                f"{in_down:.0f}",
                f"{down:.0f} ({down / in_down:.0%}); server RSS +{down_rss:.0f} MiB",
                "",
            )
        )

        # ---- run_python print(1), end to end
        from tarbox.wasi.python import PythonRuntime

        py = PythonRuntime()
        py.run(tb, tenant, "print(1)")  # fetches and compiles the runtime once per machine (cached on disk)
        api.post("/v1/runs", json={"python": "print(1)"}).raise_for_status()  # warms the server's
        local = timed_each(lambda i: py.run(tb, tenant, "print(1)"), 5)
        remote = timed_each(lambda i: api.post("/v1/runs", json={"python": "print(1)"}).raise_for_status(), 5)
        rows.append(
            (
                "run_python print(1) (ms, median of 5)",
                f"{statistics.median(local) * 1e3:.0f}",
                f"REST {statistics.median(remote) * 1e3:.0f}",
                "",
            )
        )
    finally:
        api.close()
        server.stop()
        tb.delete_tenant(tenant)
        tb.close()

    table = Table("measure", "in-process API (baseline)", "through the server", "")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    print(json.dumps(rows))


async def mcp_latency(url: str, token: str, n: int, data: bytes) -> dict[str, list[float]]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=600)
    out: dict[str, list[float]] = {"stat": [], "read 4 KiB": [], "write 4 KiB": []}
    text = data.hex()[:4096]
    async with Client(streamable_http_client(url + "/mcp", http_client=http)) as c:
        for i in range(n):
            for op, tool, args in (
                ("stat", "stat", {"path": f"/workspace/r{i}"}),
                ("read 4 KiB", "read_file", {"path": f"/workspace/r{i}"}),
                ("write 4 KiB", "write_file", {"path": f"/workspace/m{i}", "content": text}),
            ):
                t = time.perf_counter()
                r = await c.call_tool(tool, args)
                out[op].append(time.perf_counter() - t)
                assert not r.is_error, r
    return out


if __name__ == "__main__":
    main()
