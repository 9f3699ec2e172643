"""WASI host benchmark: the same guest on wasmtime's built-in WASI over a local
temp dir (the baseline) and on Tarbox, side by side in one run. Prints a table.

    python bench/wasi_bench.py [--files 1000] [--big-mib 64] [--rounds 3] [--big-module-mib 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import wasmtime
from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.wasi import Mount, WasiHost
from tarbox.wasi.component_shim import uleb128 as leb
from tarbox.wasi.toolchain import build_c

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
from wasi_support import run_native  # noqa: E402

HELLO = b"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 6))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def parse(out: bytes) -> dict[str, float]:
    parts = out.decode().split()
    return {"small": float(parts[1]), "small_total": float(parts[3]), "big": float(parts[5])}


def big_module(mib: int) -> bytes:
    """A valid module of about ``mib`` MiB of code: functions of 10,000 additions each,
    so the compiler has real work (a stand-in for a large toolchain's output)."""

    body = b"\x00" + b"\x41\x01" + b"\x41\x03\x6a" * 10_000 + b"\x1a\x0b"  # no locals; 1 (+3)*n; drop; end
    entry = leb(len(body)) + body
    n = max(1, (mib << 20) // len(entry))

    def section(sid: int, payload: bytes) -> bytes:
        return bytes([sid]) + leb(len(payload)) + payload

    types = section(1, b"\x01\x60\x00\x00")  # one type: [] -> []
    funcs = section(3, leb(n) + b"\x00" * n)
    exports = section(7, b"\x01\x06_start\x00\x00")
    code = section(10, leb(n) + entry * n)
    return b"\x00asm\x01\x00\x00\x00" + types + funcs + exports + code


def probe(argv: list[str]) -> None:
    """Measurements that need a fresh process (peak RSS; a cold module cache)."""
    from tarbox.wasi.engine import ModuleCache

    tb = tarbox.connect()
    tenant = tb.create_tenant(f"wb-{uuid.uuid4().hex[:8]}")
    try:
        if argv[0] == "stream":
            wasm = build_c(HERE / "guests" / "workload.c")
            r = WasiHost(tb, tenant, timeout=600).run(wasm, ["workload", "10", str(int(argv[1]) << 20)])
            assert r.ok, (r.status, r.trap)
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        else:
            wasm = big_module(int(argv[1]))
            host = WasiHost(tb, tenant, timeout=600, module_cache=ModuleCache(Path(argv[2])))
            t = time.perf_counter()
            assert host.run(wasm).ok
            first = time.perf_counter() - t
            t = time.perf_counter()
            assert host.run(wasm).ok
            print(first, time.perf_counter() - t)
    finally:
        tb.delete_tenant(tenant)
        tb.close()


def concurrency(tb, wasm: bytes, files: int = 300) -> Table:
    """Throughput of N concurrent runs (asyncio.gather of run_wasm) relative to one run,
    on N tenants and on one shared tenant (each run in its own directory)."""
    import asyncio

    table = Table(title=f"Concurrent runs of the small-file phase ({files} files each), 2 cores")
    for col in ("runs at once", "tenants", "wall s", "files/s", "x one run"):
        table.add_column(col, justify="right")
    base = None
    for n in (1, 2, 4):
        for shared in (False, True) if n > 1 else (False,):
            tenants = [tb.create_tenant(f"wc-{uuid.uuid4().hex[:8]}") for _ in range(1 if shared else n)]
            hosts = [
                WasiHost(tb, tenants[0 if shared else i], mounts=[Mount("/workspace", f"/r{i}")], timeout=600)
                for i in range(n)
            ]

            async def go(hosts=hosts):
                return await asyncio.gather(*(h.run_wasm(wasm, ["workload", str(files), "0"]) for h in hosts))

            t = time.perf_counter()
            results = asyncio.run(go())
            wall = time.perf_counter() - t
            assert all(r.ok for r in results), [(r.status, r.trap) for r in results]
            rate = n * files / wall
            base = base or rate
            label = "1 shared" if shared else str(n)
            table.add_row(str(n), label, f"{wall:.2f}", f"{rate:,.0f}", f"{rate / base:.2f}")
            for t_ in tenants:
                tb.delete_tenant(t_)
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-module-mib", type=int, default=0, help="also time a module this big (0: skip)")
    ap.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return probe(args.probe)
    console = Console(width=140)
    wasm = build_c(HERE / "guests" / "workload.c")
    argv = [str(args.files), str(args.big_mib << 20)]
    tb = tarbox.connect()
    rss0 = psutil.Process().memory_info().rss
    native, ours, unaudited, walls = [], [], [], {"native": [], "tarbox": []}
    for _ in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="wasi-bench-"))
        t = time.perf_counter()
        o = run_native(wasm, root, argv)
        walls["native"].append(time.perf_counter() - t)
        native.append(parse(o.stdout))
        shutil.rmtree(root)
        # audited and unaudited runs alternate which goes first (the audit cost column)
        for audit in (True, False) if len(ours) % 2 == 0 else (False, True):
            tenant = tb.create_tenant(f"wb-{uuid.uuid4().hex[:8]}")
            host = WasiHost(tb, tenant, "/workspace", timeout=600, audit=audit)
            t = time.perf_counter()
            r = host.run(wasm, ["workload", *argv])
            assert r.ok, (r.status, r.trap, r.stderr)
            if audit:
                walls["tarbox"].append(time.perf_counter() - t)
                ours.append(parse(r.stdout))
            else:
                unaudited.append(parse(r.stdout))
            tb.delete_tenant(tenant)
    rss = psutil.Process().memory_info().rss - rss0

    def med(xs, k):
        return statistics.median(x[k] for x in xs)

    table = Table(title=f"WASI workload, median of {args.rounds} (seconds; same guest, same run)")
    for col in ("phase", "wasmtime WASI, local disk", "Tarbox", "Tarbox / native", "Tarbox, audit off", "audit cost"):
        table.add_column(col, justify="right")
    rows = [
        (f"create+read+stat {args.files} files", "small"),
        ("small-file phase (+ls, rename, delete, 1,000 appends)", "small_total"),
        (f"write + read {args.big_mib} MiB in 64 KiB chunks", "big"),
    ]
    for label, k in rows:
        a, b, c = med(native, k), med(ours, k), med(unaudited, k)
        table.add_row(label, f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}", f"{c:.3f}", f"{(b - c) / c:+.1%}")
    a, b = statistics.median(walls["native"]), statistics.median(walls["tarbox"])
    table.add_row("whole run (wall clock, incl. start)", f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}")

    # cached start of a hello-world module
    hello = bytes(wasmtime.wat2wasm(HELLO.decode()))
    tenant = tb.create_tenant(f"wb-{uuid.uuid4().hex[:8]}")
    host = WasiHost(tb, tenant, "/workspace")
    host.run(hello)  # compile once (cached)
    n_samples, t_ours = 30, []
    for _ in range(n_samples):
        t = time.perf_counter()
        host.run(hello)
        t_ours.append(time.perf_counter() - t)
    t_nat = []
    root = Path(tempfile.mkdtemp())
    for _ in range(n_samples):
        t = time.perf_counter()
        run_native(hello, root)
        t_nat.append(time.perf_counter() - t)
    tb.delete_tenant(tenant)
    a, b = statistics.median(t_nat), statistics.median(t_ours)
    table.add_row(
        "hello-world start, module cached (median of 30)",
        f"{a * 1e3:.2f} ms",
        f"{b * 1e3:.2f} ms",
        f"{(b - a) * 1e3:+.2f} ms",
    )
    console.print(table)
    console.print(concurrency(tb, wasm))
    probe_cmd = [sys.executable, __file__, "--probe"]
    streams = Table(title="Memory while streaming one file through a run (fresh process each)")
    for col in ("file size", "peak RSS of the process"):
        streams.add_column(col, justify="right")
    for mib in (64, 512):
        out = subprocess.run([*probe_cmd, "stream", str(mib)], capture_output=True, text=True, check=True).stdout
        streams.add_row(f"{mib} MiB", f"{int(out) / 2**10:.0f} MiB")
    console.print(streams)
    if args.big_module_mib:
        big = Table(title=f"A {args.big_module_mib} MiB module: first and second start (seconds)")
        for col in ("start", "seconds"):
            big.add_column(col, justify="right")
        with tempfile.TemporaryDirectory() as cache:
            for label in ("first (compiles, fills the disk cache)", "second, new process (disk cache)"):
                out = subprocess.run(
                    [*probe_cmd, "module", str(args.big_module_mib), cache], capture_output=True, text=True, check=True
                ).stdout.split()
                big.add_row(label, f"{float(out[0]):.3f}")
            big.add_row("third, same process (memory cache)", f"{float(out[1]):.4f}")
        console.print(big)
    console.print(
        f"RSS growth of this process over all runs: {rss / 2**20:.0f} MiB "
        f"(the {args.big_mib} MiB file streams through the store)"
    )
    tb.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
