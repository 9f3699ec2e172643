"""Agents in C and Rust: one run of each example agent
on Tarbox against the same module on wasmtime's own WASI over a local
directory, in one run; median of ``--runs`` after a warm-up (compiled modules
cached), seconds. Python agents: bench/python_bench.py.

    python bench/agents_bench.py [--runs 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.wasi import WasiHost
from tarbox.wasi.toolchain import build_c, build_rust, rustc

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from wasi_support import run_native  # noqa: E402

FILES = {f"notes/n{i}.txt": f"note {i} with a few words\n".encode() * 20 for i in range(50)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    tb = tarbox.connect()
    agents = [("C (examples/agent.c, needs input.txt)", build_c(ROOT / "examples" / "agent.c"), ["agent", "t"], {})]
    if rustc() is not None:
        agents.append(("Rust (examples/agent.rs)", build_rust(ROOT / "examples" / "agent.rs"), ["agent", "t"], {}))
    table = Table(title=f"example agents over 50 small files, median of {args.runs} runs (seconds)")
    for col in ("agent", "wasmtime WASI, local disk", "Tarbox", "Tarbox / native"):
        table.add_column(col, justify="right")
    for label, wasm, argv, env in agents:
        work = Path(tempfile.mkdtemp())
        tenant = tb.create_tenant(f"ab-{uuid.uuid4().hex[:8]}")
        fs = tb.filesystem(tenant)
        seed = {**FILES, "input.txt": b"one two\nthree\n"}
        for rel, data in seed.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(data)
            fs.makedirs(str(Path("/workspace", rel).parent))
            fs.write_file(f"/workspace/{rel}", data)
        host = WasiHost(tb, tenant)
        native, ours = [], []
        for i in range(args.runs + 1):
            t = time.perf_counter()
            o = run_native(wasm, work, argv[1:], env, argv0=argv[0])
            native.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = host.run(wasm, argv, env)
            ours.append(time.perf_counter() - t)
            assert r.exit_code == o.exit_code == 0, (label, r.stderr[-300:], o.stderr[-300:])
            if i == 0:
                native.clear()
                ours.clear()
        a, b = statistics.median(native), statistics.median(ours)
        table.add_row(label, f"{a:.4f}", f"{b:.4f}", f"{b / a:.2f}")
        tb.delete_tenant(tenant)
        shutil.rmtree(work)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
