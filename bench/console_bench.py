"""Web console benchmark: how long ``tarbox serve`` takes to answer the console's two
heaviest pages, next to the REST API answering the same question as JSON, in one run
against a real server process on localhost.

    python bench/console_bench.py [--files 10000] [--layers 1000] [--repeat 20]

Pages: the first page (100 entries) of a directory of 10,000 files, and the history
(branch graph, per-layer counts) of a tenant with 1,000 layers on 4 branches. Times
are wall clock at the client over loopback (so they include HTTP), p50 and p99.
Target: each page ≤ 300 ms. Needs ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.tokens import create_token

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from server_support import start_server  # noqa: E402


def timed(client: httpx.Client, url: str, n: int) -> tuple[float, float]:
    client.get(url).raise_for_status()  # warm: connection, caches
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        client.get(url).raise_for_status()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return statistics.median(samples) * 1e3, samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()

    tb = tarbox.connect()
    big = tb.create_tenant(f"console-bench-files-{uuid.uuid4().hex[:8]}")
    deep = tb.create_tenant(f"console-bench-layers-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    fs = tb.filesystem(big)
    fs.audited = False
    fs.makedirs("/big")
    with fs.batch():
        for i in range(a.files):
            fs.write_file(f"/big/file-{i:05}.txt", b"x" * (i % 200))
    fh = tb.filesystem(deep)
    fh.audited = False
    fh.makedirs("/notes")
    per_branch = a.layers // 4
    main_line: list[int] = []
    for b in range(4):  # the main line, then three branches forking from points along it
        if b:
            fh.branch(f"feature-{b}", main_line[len(main_line) * b // 4])
            fh.switch(f"feature-{b}")
        for i in range(per_branch):
            fh.write_file(f"/notes/b{b}-{i % 50}.md", f"branch {b} step {i}\n".encode())
            layer = fh.checkpoint(f"branch {b} step {i}").id
            if not b:
                main_line.append(layer)
    setup = time.perf_counter() - t0

    server = start_server(tb.db.url, tempfile.mkdtemp(prefix="console-bench-"))
    rows = []
    try:
        for tenant, page, api_url, what in [
            (big, "/ui/files/big", "/v1/dirs/big?limit=100", f"first page of a {a.files:,}-file directory"),
            (deep, "/ui/history", "/v1/layers", f"history of {len(fh.layers()):,} layers"),
        ]:
            token, _ = create_token(tb, tenant)
            ui = httpx.Client(base_url=server.url, timeout=120)
            assert ui.post("/ui/login", data={"token": token}).status_code == 303
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
            page_p50, page_p99 = timed(ui, page, a.repeat)
            api_p50, api_p99 = timed(api, api_url, a.repeat)
            size = len(ui.get(page).content)
            rows.append(
                (
                    what,
                    f"{page_p50:.1f} / {page_p99:.1f}",
                    f"{api_p50:.1f} / {api_p99:.1f}",
                    f"{page_p50 / api_p50:.2f}x",
                    f"{size / 1024:.0f} KiB",
                    "met" if page_p99 <= 300 else "NOT met",
                )
            )
    finally:
        server.stop()
        tb.delete_tenant(big)
        tb.delete_tenant(deep)

    table = Table(title=f"Web console (setup {setup:.0f} s; p50 / p99 over {a.repeat} requests, ms)")
    for col in ("page", "console HTML", "REST JSON (baseline)", "console / REST", "HTML size", "≤ 300 ms"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
