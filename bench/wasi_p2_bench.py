"""WASI Preview 2 benchmark: the WASI workload (bench/guests/workload.c) built as a
command component, on wasmtime's built-in WASIp2 over a local temp dir (the
baseline) and on Tarbox, side by side in one run; the same workload as a Preview 1
module on Tarbox beside them shows what the component path costs. Prints a table.

    python bench/wasi_p2_bench.py [--files 1000] [--big-mib 64] [--rounds 3]

The component runs composed with the component shim (renames and stream bytes go
through it; docs/wasi.md, "Preview 2"); --no-renames leaves the 250 renames out.
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

import wasmtime
from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.wasi import WasiHost
from tarbox.wasi.toolchain import build_c, componentize

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
from wasi_bench import HELLO  # noqa: E402
from wasi_support import run_native_component  # noqa: E402


def parse(out: bytes) -> dict[str, float]:
    parts = out.decode().split()
    return {"small": float(parts[1]), "small_total": float(parts[3]), "big": float(parts[5])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-renames", action="store_true", help="skip the renames (argv norename)")
    args = ap.parse_args()
    module = build_c(HERE / "guests" / "workload.c")
    component = componentize(module, "workload")
    argv = [str(args.files), str(args.big_mib << 20)] + (["norename"] if args.no_renames else [])
    tb = tarbox.connect()
    cols: dict[str, list[dict[str, float]]] = {"native": [], "p2": [], "p1": []}
    walls: dict[str, list[float]] = {k: [] for k in cols}
    for _ in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="wasi-p2-bench-"))
        t = time.perf_counter()
        o = run_native_component(component, root, argv, argv0="workload")
        walls["native"].append(time.perf_counter() - t)
        assert o.exit_code == 0, o.stderr
        cols["native"].append(parse(o.stdout))
        shutil.rmtree(root)
        for key, wasm in (("p2", component), ("p1", module)):
            tenant = tb.create_tenant(f"wp2-{uuid.uuid4().hex[:8]}")
            t = time.perf_counter()
            r = WasiHost(tb, tenant, timeout=600).run(wasm, ["workload", *argv])
            walls[key].append(time.perf_counter() - t)
            assert r.ok, (r.status, r.trap, r.stderr)
            cols[key].append(parse(r.stdout))
            tb.delete_tenant(tenant)

    def med(key, k):
        return statistics.median(x[k] for x in cols[key])

    table = Table(title=f"WASI workload as a component, median of {args.rounds} (seconds, measured in the guest)")
    for col in ("phase", "wasmtime WASIp2, local disk", "Tarbox, component", "Tarbox / wasmtime", "Tarbox, p1 module"):
        table.add_column(col, justify="right")
    rows = [
        (f"create+read+stat {args.files} files", "small"),
        ("small-file phase (+ls, renames, delete, 1,000 appends)", "small_total"),
        (f"write + read {args.big_mib} MiB in 64 KiB chunks", "big"),
    ]
    for label, k in rows:
        a, b, c = med("native", k), med("p2", k), med("p1", k)
        table.add_row(label, f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}", f"{c:.3f}")
    a, b, c = (statistics.median(walls[k]) for k in ("native", "p2", "p1"))
    table.add_row("whole run (wall clock, incl. start)", f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}", f"{c:.3f}")

    # cached start of a hello-world component (and the same module, preview 1)
    hello_module = bytes(wasmtime.wat2wasm(HELLO.decode()))
    hello = componentize(hello_module, "hello")
    tenant = tb.create_tenant(f"wp2-{uuid.uuid4().hex[:8]}")
    host = WasiHost(tb, tenant)
    starts: dict[str, list[float]] = {"native": [], "p2": [], "p1": []}
    root = Path(tempfile.mkdtemp())
    for wasm in (hello, hello_module):
        assert host.run(wasm).stdout == b"hello\n"  # compile once (cached)
    for _ in range(30):
        for key, run in (
            ("native", lambda: run_native_component(hello, root)),
            ("p2", lambda: host.run(hello)),
            ("p1", lambda: host.run(hello_module)),
        ):
            t = time.perf_counter()
            run()
            starts[key].append(time.perf_counter() - t)
    tb.delete_tenant(tenant)
    a, b, c = (statistics.median(starts[k]) * 1e3 for k in ("native", "p2", "p1"))
    table.add_row(
        "hello-world start, cached (median of 30)", f"{a:.2f} ms", f"{b:.2f} ms", f"{b - a:+.2f} ms", f"{c:.2f} ms"
    )
    Console(width=140).print(table)
    tb.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
