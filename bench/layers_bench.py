"""Layers benchmark: Tarbox checkpoints vs what a user would do on local disk.

    python bench/layers_bench.py [--sizes 1000,10000,100000] [--depth 1000]

For each tree size, the same tree (files of 1 KiB in directories of 100) is
built in Tarbox and in a local temp dir; then a checkpoint is timed against
``cp -a`` and ``tar -cf`` of the local tree. Also: switching to a layer 100
checkpoints back, cold stat+read latency of one file at history depth 1 vs
``--depth``, and the rows and bytes an empty checkpoint adds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid

import psycopg
from rich.console import Console
from rich.table import Table

import tarbox


def build(fs: tarbox.Filesystem, root: str, n: int) -> None:
    data = os.urandom(1024)
    with fs.batch():
        for d in range((n + 99) // 100):
            fs.mkdir(f"/d{d:04}")
            os.mkdir(f"{root}/d{d:04}")
            for i in range(min(100, n - d * 100)):
                path = f"/d{d:04}/f{i:03}"
                fs.write_file(path, data)
                with open(root + path, "wb") as f:
                    f.write(data)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def cold_stat_read(fs: tarbox.Filesystem, path: str, rounds: int = 200) -> float:
    """Median seconds for stat + read of ``path`` with every metadata cache dropped first."""
    st = fs._store
    samples = []
    for _ in range(rounds):
        with st.lock:
            st.drop_clean_caches()
            st.inode_cache.clear()
            st.extent_cache.clear()
        t = time.perf_counter()
        fs.stat(path)
        fs.read_file(path)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def layer_rows(url: str, tenant_id) -> int:
    with psycopg.connect(url, options="-c search_path=tarbox") as conn:
        return sum(
            conn.execute(f"SELECT count(*) FROM {t} WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]
            for t in ("layers", "inodes", "dirents", "extents", "blocks")
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--depth", type=int, default=1000)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    console = Console(width=160)
    tb = tarbox.connect()

    table = Table(title="checkpoint (median of 9) of a tree of N files vs copying it on local disk (seconds)")
    for col in ("files", "Tarbox checkpoint", "cp -a", "tar -cf", "cp -a / checkpoint", "switch 100 back"):
        table.add_column(col, justify="right")
    counts = Table(title="layer counts (from the layer's rows) vs a path diff of the same two layers (seconds)")
    for col in ("files", "changed in layer", "counts", "diff walk", "diff / counts"):
        counts.add_column(col, justify="right")
    for n in sizes:
        t = tb.create_tenant(f"lb-{uuid.uuid4().hex[:8]}")
        fs = tb.filesystem(t)
        root = tempfile.mkdtemp(prefix="layers-bench-")
        console.print(f"building {n} files ...")
        build(fs, root, n)
        # median of 9: one sample on this VM ranged 1.4-10 ms for the same work
        cp = statistics.median(timed(lambda fs=fs: fs.checkpoint("bench")) for _ in range(9))
        # counts of a layer that changed 1% of the files, cold (not yet stored), vs diffing it
        base = fs.current_layer().parent_id
        with fs.batch():
            for i in range(0, n, 100):
                fs.write_file(f"/d{i // 100:04d}/f{i % 100:03d}", b"changed")
        changed = fs.checkpoint("1% changed")
        with tarbox.connect(tb.db.url) as other:
            ofs = other.filesystem(t.id)
            c_time = timed(lambda ofs=ofs, changed=changed: ofs.layer_counts(changed))
        with tarbox.connect(tb.db.url) as other:
            ofs = other.filesystem(t.id)
            d_time = timed(lambda ofs=ofs, changed=changed, base=base: ofs.diff(base, changed))
        counts.add_row(str(n), str(n // 100), f"{c_time:.4f}", f"{d_time:.3f}", f"{d_time / c_time:.0f}x")
        copy_dir = root + ".copy"
        cpa = run_timed(["cp", "-a", root, copy_dir])
        tar = run_timed(["tar", "-cf", root + ".tar", "-C", root, "."])
        switch = "-"
        if n == max(sizes):
            target = fs.current_layer().parent_id
            for i in range(100):
                fs.write_file("/d0000/f000", b"v%d" % i)
                fs.checkpoint(f"step {i}")
            warm = timed(lambda fs=fs, target=target: (fs.switch(target), fs.stat("/d0000/f001")))
            fs.switch(fs.layers()[-1].id)
            with tarbox.connect(tb.db.url) as other:  # a process that has not cached the tree
                ofs = other.filesystem(t.id)
                cold = timed(lambda ofs=ofs, target=target: (ofs.switch(target), ofs.stat("/d0000/f001")))
            switch = f"{warm:.4f} (fresh process {cold:.4f})"
        table.add_row(str(n), f"{cp:.4f}", f"{cpa:.3f}", f"{tar:.3f}", f"{cpa / cp:.0f}x", switch)
        shutil.rmtree(root)
        shutil.rmtree(copy_dir)
        os.unlink(root + ".tar")
        tb.delete_tenant(t)
    console.print(table)
    console.print(counts)

    # resolution cost vs history depth
    t = tb.create_tenant(f"lb-{uuid.uuid4().hex[:8]}")
    fs = tb.filesystem(t)
    fs.mkdir("/w/deep", parents=True)
    fs.write_file("/w/deep/target", os.urandom(4096))
    shallow = cold_stat_read(fs, "/w/deep/target")
    console.print(f"making {args.depth} checkpoints ...")
    t0 = time.perf_counter()
    for i in range(args.depth):
        fs.write_file(f"/w/churn{i % 10}", b"%d" % i)  # every layer has changes
        fs.checkpoint(f"{i}")
    per_checkpoint = (time.perf_counter() - t0) / args.depth
    deep = cold_stat_read(fs, "/w/deep/target")
    rows_before = layer_rows(tb.db.url, t.id)
    used_before = fs.usage().used_bytes
    empty = timed(lambda: fs.checkpoint("empty"))
    rows_added = layer_rows(tb.db.url, t.id) - rows_before
    bytes_added = fs.usage().used_bytes - used_before
    tb.delete_tenant(t)

    t2 = Table(title="history depth and checkpoint cost")
    t2.add_column("measure")
    t2.add_column("value", justify="right")
    t2.add_row("cold stat+read, depth 1 (median)", f"{shallow * 1e6:.0f} µs")
    t2.add_row(f"cold stat+read, depth {args.depth} (median)", f"{deep * 1e6:.0f} µs")
    t2.add_row("ratio deep / shallow", f"{deep / shallow:.2f}")
    t2.add_row("write + checkpoint, mean", f"{per_checkpoint * 1e3:.2f} ms")
    t2.add_row("empty checkpoint: time", f"{empty * 1e3:.2f} ms")
    t2.add_row("empty checkpoint: rows added", str(rows_added))
    t2.add_row("empty checkpoint: bytes of file data added", str(bytes_added))
    console.print(t2)
    tb.close()


if __name__ == "__main__":
    main()
