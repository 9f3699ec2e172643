"""Can one tenant stop another? Tenant B's latency on ``tarbox serve`` while tenant A
does nothing, then the worst it can: slow imports, runs at their limits, greps of
exponential-time patterns. And the server's memory over a soak of runs.

    python bench/serve_load.py [--probes 300] [--soak 200]

B's probe is one request after another (a 4 KiB GET, a 4 KiB PUT, a stat, in turn)
over one keep-alive connection; its p50 and p99 in each scenario are set beside the
idle figures of the same run (target: p99 at most 2x idle). A's load per scenario:

* slow imports: 100 connections send an import's headers and 512 bytes, then one
  byte every 2 s (they never finish);
* runs at their limits: 20 threads, each running in a loop a guest that spins until
  the run timeout (2 s) or allocates until the memory limit (64 MiB);
* ReDoS greps: 8 MCP clients grep ``^(a+)+$`` over a 5,000-byte line in a loop.

Then a soak of runs through the API (a third normal, a third at the memory limit, a
third timing out): the server's RSS after 20 runs and after all of them.
Needs ``pip install -e '.[test,bench]'``; uses the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.storage.server import embedded_server_url, ensure_database
from tarbox.tokens import create_token

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from server_support import start_server  # noqa: E402
from wasi_support import guest  # noqa: E402


def pcts(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3


def probe(url: str, token: str, n: int) -> list[float]:
    """Tenant B's requests, one after another; each one's wall time."""
    data = os.urandom(4096)
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as api:
        api.put("/v1/files/b/r", content=data, params={"parents": 1}).raise_for_status()
        for i in range(n):
            t = time.perf_counter()
            if i % 3 == 0:
                r = api.get("/v1/files/b/r")
            elif i % 3 == 1:
                r = api.put(f"/v1/files/b/w{i % 50}", content=data)
            else:
                r = api.get("/v1/stat/b/r")
            out.append(time.perf_counter() - t)
            assert r.status_code < 300, r.text
    return out


def slow_imports(url: str, token: str, stop: threading.Event, n: int = 100) -> None:
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(
            f"POST /v1/import/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {1 << 20}\r\n\r\n".encode()
            + os.urandom(512)
        )
        socks.append(s)
    while not stop.wait(2):
        for s in socks:
            try:
                s.sendall(b"x")
            except OSError:
                pass
    for s in socks:
        s.close()


def runs_at_limits(url: str, tokens: list[str], stop: threading.Event, n: int = 20) -> None:
    wasm = base64.b64encode(guest("limits")).decode()

    def loop(i: int) -> None:
        args = ["spin"] if i % 2 else ["alloc"]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"}) as api:
            while not stop.is_set():
                r = api.post(
                    "/v1/runs",
                    json={"wasm_base64": wasm, "args": args, "timeout": 2, "memory_limit": 64 << 20},
                    timeout=120,
                )
                if r.status_code == 429:  # the tenant has its share: ask again, as a client would
                    stop.wait(0.2)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(30)


def redos_greps(url: str, token: str, stop: threading.Event, n: int = 8) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "grep", "arguments": {"pattern": "^(a+)+$", "path": "/evil"}},
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }

    def loop() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as api:
            while not stop.is_set():
                r = api.post("/mcp", json=call)
                assert r.status_code == 200, r.text

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(30)


LOADS = {"imports": slow_imports, "runs": runs_at_limits, "greps": redos_greps}


def _load_process(kind: str, args: tuple, stop, nice: int) -> None:
    """A's load in a process of its own (its clients share no interpreter with B's)."""
    if nice:
        os.nice(nice)
    LOADS[kind](*args, stop)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--soak", type=int, default=200)
    ap.add_argument("--only", default="", help="comma-separated scenario numbers (1-3), e.g. 2")
    ap.add_argument(
        "--load-in",
        choices=("process", "thread"),
        default="process",
        help="A's clients in a process of their own (default), or in threads of B's (shared GIL)",
    )
    ap.add_argument("--load-nice", type=int, default=0, help="nice level of A's load process")
    a = ap.parse_args()

    url = ensure_database(embedded_server_url(), f"tarbox_load_{uuid.uuid4().hex[:8]}")
    tb = tarbox.connect(url)
    tenant_a, tenant_b = tb.create_tenant("load-a"), tb.create_tenant("load-b")
    fs_a = tb.filesystem(tenant_a)
    fs_a.write_file("/evil", b"a" * 5000 + b"!\n")
    server = start_server(url, tempfile.mkdtemp(prefix="serve-load-"), "--run-timeout", "30")
    proc = psutil.Process(server.proc.pid)
    tokens_a = [create_token(tb, tenant_a)[0] for _ in range(5)]
    token_b, _ = create_token(tb, tenant_b)
    wasm = base64.b64encode(guest("limits")).decode()
    scenarios = [
        ("idle", None),
        ("A: 100 slow imports", ("imports", (server.url, tokens_a[0]))),
        ("A: 20 runs at their limits", ("runs", (server.url, tokens_a))),
        ("A: ReDoS greps (8 MCP clients)", ("greps", (server.url, tokens_a[0]))),
    ]
    if a.only:
        keep = {int(x) for x in a.only.split(",")}
        scenarios = [scenarios[0]] + [sc for i, sc in enumerate(scenarios[1:], 1) if i in keep]
    rows = []
    try:
        probe(server.url, token_b, 30)  # warm-up
        idle_p99 = None
        spawn = multiprocessing.get_context("spawn")
        for name, load in scenarios:
            t = None
            if load is None:
                stop = threading.Event()
            elif a.load_in == "thread":
                stop = threading.Event()
                t = threading.Thread(target=LOADS[load[0]], args=(*load[1], stop), daemon=True)
            else:
                stop = spawn.Event()
                t = spawn.Process(target=_load_process, args=(load[0], load[1], stop, a.load_nice), daemon=True)
            if t:
                t.start()
                time.sleep(3)  # let the load take hold
            samples = probe(server.url, token_b, a.probes)
            stop.set()
            if t:
                t.join(60)
            p50, p99 = pcts(samples)
            idle_p99 = idle_p99 or p99
            ratio = p99 / idle_p99
            rows.append((name, f"{p50:.1f}", f"{p99:.1f}", f"{ratio:.2f}x", "met" if ratio <= 2 else "NOT met"))
        # ---- soak: the server's RSS over runs
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token_b}"}, timeout=120)
        modes = [["exit", "0"], ["alloc"], ["spin"]]
        warm = None
        t0 = time.monotonic()
        for i in range(a.soak):
            body = {"wasm_base64": wasm, "args": modes[i % 3], "timeout": 0.5, "memory_limit": 64 << 20}
            r = api.post("/v1/runs", json=body)
            assert r.status_code == 200, r.text
            if i == 19:
                warm = proc.memory_info().rss
        end = proc.memory_info().rss
        soak_s = time.monotonic() - t0
    finally:
        server.stop()
        tb.close()
    where = "A's clients in a process of their own" if a.load_in == "process" else "A's clients in threads of B's"
    where += f", nice {a.load_nice}" if a.load_nice else ""
    table = Table(title=f"tenant B's latency while tenant A loads the server (ms, one client, sequential; {where})")
    for col in ("scenario", "B p50", "B p99", "p99 / idle p99", "target <= 2x"):
        table.add_column(col, justify="right" if col != "scenario" else "left")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    grown = (end - (warm or end)) / (1 << 20)
    console.print(
        f"soak: {a.soak} runs through the API in {soak_s:.0f} s (a third each: normal, memory limit 64 MiB, "
        f"timeout 0.5 s); server RSS after 20: {(warm or 0) / (1 << 20):.0f} MiB, after {a.soak}: "
        f"{end / (1 << 20):.0f} MiB ({grown:+.0f} MiB; flat means within 64 MiB: "
        f"{'met' if abs(grown) <= 64 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
