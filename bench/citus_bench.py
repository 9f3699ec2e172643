"""Tarbox on Citus against Tarbox on one PostgreSQL 15 server, in the same run.

    python bench/citus_bench.py [--files 2000] [--wasi-files 300] [--rounds 2]

Starts both itself (tests/citus_cluster.py: PostgreSQL 15 with the Citus extension
built by ../shared/citus/build.sh): a plain server, and a coordinator with 2 workers,
all on this machine. Runs the fs_bench small-file scenarios (one commit per operation,
and in one batch) and the WASI workload (bench/guests/workload.c) on each, and prints
seconds and the Citus / single ratio. Then counts, with Citus's own statistics
(citus_stat_counters), how many statements of the hot path (operations and a WASI run
on an existing tenant) were single-shard router queries, prints the plan of the hot
lookups, and the per-statement cost through the coordinator (the capacity model's
input, docs/scaling.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import psutil
import psycopg
from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.wasi import WasiHost
from tarbox.wasi.toolchain import build_c

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from citus_cluster import CitusCluster, unavailable_reason  # noqa: E402
from fs_bench import SCENARIOS  # noqa: E402
from fs_bench import Tarbox as FsScenarios  # noqa: E402
from wasi_bench import parse as parse_workload  # noqa: E402


def fs_scenarios(tb: tarbox.Tarbox, args) -> dict[str, dict[str, float]]:
    dirs = [f"/d{i:03}" for i in range(args.dirs)]
    files = [f"{dirs[i % args.dirs]}/f{i:05}" for i in range(args.files)]
    renames = [(f, f + ".renamed") for f in files[: args.files // 10]]
    data = b"x" * 4096
    return {
        mode: FsScenarios(tb, batch=batch).run(dirs, files, data, renames)
        for mode, batch in (("per op", False), ("batch", True))
    }


def wasi_workload(tb: tarbox.Tarbox, wasm: bytes, args) -> dict[str, float]:
    runs = []
    for _ in range(args.rounds):
        t = tb.create_tenant(f"wb-{uuid.uuid4().hex[:8]}")
        start = time.perf_counter()
        r = WasiHost(tb, t, "/workspace", timeout=600).run(wasm, ["workload", str(args.wasi_files), str(8 << 20)])
        wall = time.perf_counter() - start
        assert r.ok, (r.status, r.stderr)
        runs.append({**parse_workload(r.stdout), "wall": wall})
        tb.delete_tenant(t)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def hot_path_counts(tb: tarbox.Tarbox, url: str, wasm: bytes) -> tuple[int, int]:
    """(single-shard, multi-shard) statements of operations and a WASI run on an
    existing tenant, as the coordinator counted them."""
    t = tb.create_tenant(f"hot-{uuid.uuid4().hex[:8]}")
    fs = tb.filesystem(t)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT citus_stat_counters_reset()")
        fs.mkdir("/d")
        for i in range(100):
            fs.write_file(f"/d/f{i}", b"x" * 5000)
            fs.stat(f"/d/f{i}")
            fs.read_file(f"/d/f{i}")
        fs.listdir("/d")
        for i in range(50):
            fs.rename(f"/d/f{i}", f"/d/g{i}")
        with fs.batch():
            for i in range(50, 100):
                fs.remove(f"/d/f{i}")
        fs.checkpoint("bench")
        fs.diff(fs.layers()[0].id)
        WasiHost(tb, t, "/workspace").run(wasm, ["workload", "50", str(1 << 20)])
        single, multi = conn.execute(
            "SELECT query_execution_single_shard, query_execution_multi_shard FROM citus_stat_counters"
            " WHERE name = current_database()"
        ).fetchone()
    tb.delete_tenant(t)
    return single, multi


def plans(tb: tarbox.Tarbox, url: str) -> list[str]:
    """EXPLAIN of the hot lookups, as the application role bound to a tenant."""
    t = tb.create_tenant(f"plan-{uuid.uuid4().hex[:8]}")
    tb.filesystem(t).write_file("/f", b"x")
    out = []
    with psycopg.connect(url, autocommit=True, options="-c search_path=tarbox") as conn:
        conn.execute("SET citus.propagate_set_commands = 'local'")
        token = tb.db.tenant_token(t.id)
        for label, sql in (
            (
                "directory entry lookup",
                "SELECT layer_id, ino FROM dirents WHERE tenant_id = %s AND parent_ino = 1"
                " AND name = 'f' ORDER BY layer_id DESC LIMIT 3",
            ),
            ("inode lookup", "SELECT * FROM inodes WHERE tenant_id = %s AND ino = 1 ORDER BY layer_id DESC LIMIT 3"),
            ("tenant state", "SELECT gen, head_layer FROM tenant_state WHERE tenant_id = %s"),
        ):
            with conn.transaction():
                conn.execute(f"SET LOCAL tarbox.tenant_id = '{t.id}'")
                conn.execute(f"SET LOCAL tarbox.tenant_token = '{token}'")
                conn.execute("SET LOCAL ROLE tarbox_app")
                rows = conn.execute("EXPLAIN (COSTS OFF) " + sql, (t.id,)).fetchall()
            out.append(f"-- {label}\n" + "\n".join(r[0] for r in rows))
    tb.delete_tenant(t)
    return out


def statement_cost(tb: tarbox.Tarbox, n: int = 2000) -> float:
    """Median seconds of one router SELECT through Tarbox's own connection (bound, carried)."""
    t = tb.create_tenant(f"rt-{uuid.uuid4().hex[:8]}")
    times = []
    with tb.db.tenant(t.id) as conn:
        for _ in range(n):
            s = time.perf_counter()
            conn.execute("SELECT gen FROM tenant_state WHERE tenant_id = %s", (t.id,)).fetchone()
            times.append(time.perf_counter() - s)
    tb.delete_tenant(t)
    return statistics.median(times)


def _cpu_seconds(node) -> float:
    """CPU time used so far by a node's postmaster and all its processes."""
    pid = int((node.dir / "postmaster.pid").read_text().split()[0])
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_per_op(tb: tarbox.Tarbox, cluster, n: int = 500) -> dict[str, float]:
    """Server CPU milliseconds per committed 4 KiB create, per node (the capacity
    model's input). Backends that exit meanwhile are lost to the count, so the pool
    stays open throughout and the figure is a lower bound."""
    t = tb.create_tenant(f"cpu-{uuid.uuid4().hex[:8]}")
    fs = tb.filesystem(t)
    fs.write_file("/warm", b"x")
    nodes = [cluster.coordinator, *cluster.workers]
    before = [_cpu_seconds(nd) for nd in nodes]
    for i in range(n):
        fs.write_file(f"/f{i}", b"x" * 4096)
    after = [_cpu_seconds(nd) for nd in nodes]
    tb.delete_tenant(t)
    return {nd.name: (a - b) / n * 1e3 for nd, a, b in zip(nodes, after, before, strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--dirs", type=int, default=20)
    ap.add_argument("--wasi-files", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot start the clusters: {reason}")
    console = Console(width=150)
    wasm = build_c(HERE / "guests" / "workload.c")
    results, extra = {}, {}
    for label, cluster in (
        ("PostgreSQL 15, one server", CitusCluster(workers=0, citus=False)),
        ("Citus: coordinator + 2 workers", CitusCluster(workers=2)),
    ):
        with cluster:
            console.print(f"running on {label} ...")
            tb = tarbox.connect(cluster.url)
            try:
                results[label] = {"fs": fs_scenarios(tb, args), "wasi": wasi_workload(tb, wasm, args)}
                extra[label] = {"stmt": statement_cost(tb), "cpu": cpu_per_op(tb, cluster)}
                if cluster.citus:
                    extra[label]["counts"] = hot_path_counts(tb, cluster.url, wasm)
                    extra[label]["plans"] = plans(tb, cluster.url)
            finally:
                tb.close()
    single, dist = list(results)
    table = Table(title=f"{args.files} files of 4 KiB in {args.dirs} dirs, and the WASI workload: seconds")
    for col in ("scenario", single, dist, "Citus / single", "target"):
        table.add_column(col, justify="right")
    for mode, target in (("per op", 2.0), ("batch", 1.5)):
        for s in SCENARIOS:
            a, b = results[single]["fs"][mode][s], results[dist]["fs"][mode][s]
            table.add_row(f"{s} ({mode})", f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}", f"<= {target}")
    for key, label in (
        ("small_total", f"WASI small-file phase ({args.wasi_files} files)"),
        ("big", "WASI 8 MiB write + read"),
        ("wall", "WASI whole run (wall clock)"),
    ):
        a, b = results[single]["wasi"][key], results[dist]["wasi"][key]
        table.add_row(label, f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}", "<= 1.5")
    a, b = extra[single]["stmt"], extra[dist]["stmt"]
    table.add_row("one router SELECT (ms, median)", f"{a * 1e3:.3f}", f"{b * 1e3:.3f}", f"{b / a:.2f}", "-")
    console.print(table)
    cpu = Table(title="Server CPU per committed 4 KiB create (ms; one commit per operation)")
    for col in ("deployment", "node", "CPU ms / op"):
        cpu.add_column(col, justify="right")
    for label in results:
        for node, ms in extra[label]["cpu"].items():
            cpu.add_row(label, node, f"{ms:.3f}")
    console.print(cpu)
    one, many = extra[dist]["counts"]
    console.print(
        f"hot path on Citus: {one} single-shard (router) statements, {many} multi-shard:"
        f" {100 * one / max(1, one + many):.1f} % router (target 100 %)"
    )
    for p in extra[dist]["plans"]:
        console.print(p, highlight=False)


if __name__ == "__main__":
    main()
