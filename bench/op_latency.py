"""Where one committed operation's time goes: wall time per operation, round trips,
time spent waiting on the server (network and server work), and the rest (Python,
psycopg). The baseline in the same run is one ``SELECT 1`` round trip, and local disk.

    python bench/op_latency.py [--ops 500]

Waiting time is measured by wrapping psycopg's ``Connection.wait`` (every round trip
of every connection blocks there); this is instrumentation of the benchmark only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid

import psycopg
from rich.console import Console
from rich.table import Table

import tarbox

WAITED = [0.0]


def _instrument() -> None:
    original = psycopg.Connection.wait

    def wait(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            WAITED[0] += time.perf_counter() - t

    psycopg.Connection.wait = wait


def _local(n: int, data: bytes) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="oplat-")
    out = {}
    try:
        os.mkdir(root + "/d")
        t = time.perf_counter()
        for i in range(n):
            with open(f"{root}/d/f{i}", "wb") as f:
                f.write(data)
        out["create 4 KiB"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(n):
            os.rename(f"{root}/d/f{i}", f"{root}/d/g{i}")
        out["rename"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(n):
            with open(f"{root}/d/g{i % 50}", "rb") as f:
                f.read()
        out["read, file already seen"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(n):
            os.remove(f"{root}/d/g{i}")
        out["delete"] = time.perf_counter() - t
    finally:
        shutil.rmtree(root)
    return {k: v / n for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=500)
    ap.add_argument("--no-delegation", action="store_true", help="every open asks the server (the fallback)")
    args = ap.parse_args()
    n = args.ops
    data = os.urandom(4096)
    _instrument()
    tb = tarbox.connect()
    if args.no_delegation:
        tb.db.max_delegations = 0
    tenant = tb.create_tenant(f"oplat-{uuid.uuid4().hex[:8]}")
    try:
        fs = tb.filesystem(tenant)
        st = fs._store
        fs.mkdir("/d")
        for i in range(50):  # warm: plans, pools, the delegation
            fs.write_file(f"/d/w{i}", data)
            fs.read_file(f"/d/w{i}")
        with st.db.tenant(tenant.id) as conn:
            samples = []
            for _ in range(300):
                t = time.perf_counter()
                conn.execute("SELECT 1").fetchall()
                samples.append(time.perf_counter() - t)
        rtt = statistics.median(samples)
        ops = {
            "create 4 KiB": lambda i: fs.write_file(f"/d/f{i}", data),
            "rename": lambda i: fs.rename(f"/d/f{i}", f"/d/g{i}"),
            "read, file already seen": lambda i: fs.read_file(f"/d/w{i % 50}"),
            "delete": lambda i: fs.remove(f"/d/g{i}"),
        }
        local = _local(n, data)
        title = f"one committed operation, mean of {n} (ms); one round trip (SELECT 1) = {rtt * 1e3:.3f} ms"
        table = Table(title=title)
        columns = ("operation", "local disk", "Tarbox", "x local", "round trips", "waiting on server", "other (Python)")
        for col in columns:
            table.add_column(col, justify="right")
        for name, op in ops.items():
            rt0, w0 = fs.stats["round_trips"], WAITED[0]
            t = time.perf_counter()
            for i in range(n):
                op(i)
            wall = (time.perf_counter() - t) / n
            waited = (WAITED[0] - w0) / n
            trips = (fs.stats["round_trips"] - rt0) / n
            table.add_row(
                name,
                f"{local[name] * 1e3:.3f}",
                f"{wall * 1e3:.3f}",
                f"{wall / local[name]:.1f}x",
                f"{trips:.2f}",
                f"{waited * 1e3:.3f}",
                f"{(wall - waited) * 1e3:.3f}",
            )
        Console().print(table)
        print(f"delegation held at the end: {st.delegation.held}; stats: {fs.stats}")
    finally:
        tb.delete_tenant(tenant)
        tb.close()


if __name__ == "__main__":
    main()
