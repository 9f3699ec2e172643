"""WASI host benchmark: the same guest on wasmtime's built-in WASI over a local
temp dir (the baseline) and on Tarbox, side by side in one run. Prints a table.

    python bench/wasi_bench.py [--files 1000] [--big-mib 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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
from tarbox.wasi import WasiHost
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    console = Console(width=140)
    wasm = build_c(HERE / "guests" / "workload.c")
    argv = [str(args.files), str(args.big_mib << 20)]
    tb = tarbox.connect()
    rss0 = psutil.Process().memory_info().rss
    native, ours, walls = [], [], {"native": [], "tarbox": []}
    for _ in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="wasi-bench-"))
        t = time.perf_counter()
        o = run_native(wasm, root, argv)
        walls["native"].append(time.perf_counter() - t)
        native.append(parse(o.stdout))
        shutil.rmtree(root)
        tenant = tb.create_tenant(f"wb-{uuid.uuid4().hex[:8]}")
        host = WasiHost(tb, tenant, "/workspace", timeout=600)
        t = time.perf_counter()
        r = host.run(wasm, ["workload", *argv])
        walls["tarbox"].append(time.perf_counter() - t)
        assert r.ok, (r.status, r.trap, r.stderr)
        ours.append(parse(r.stdout))
        tb.delete_tenant(tenant)
    rss = psutil.Process().memory_info().rss - rss0

    def med(xs, k):
        return statistics.median(x[k] for x in xs)

    table = Table(title=f"WASI workload, median of {args.rounds} (seconds; same guest, same run)")
    for col in ("phase", "wasmtime WASI, local disk", "Tarbox", "Tarbox / native"):
        table.add_column(col, justify="right")
    rows = [
        (f"create+read+stat {args.files} files", "small"),
        ("small-file phase (+ls, rename, delete, 1,000 appends)", "small_total"),
        (f"write + read {args.big_mib} MiB in 64 KiB chunks", "big"),
    ]
    for label, k in rows:
        a, b = med(native, k), med(ours, k)
        table.add_row(label, f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}")
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
        f"+{(b - a) * 1e3:.2f} ms",
    )
    console.print(table)
    console.print(
        f"RSS growth of this process over all runs: {rss / 2**20:.0f} MiB "
        f"(the {args.big_mib} MiB file streams through the store)"
    )
    tb.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
