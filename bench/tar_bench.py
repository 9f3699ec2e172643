"""tar import/export benchmark: ``tarbox import``/``export`` against GNU tar
extracting to and archiving from local disk, in one run, on the same archive.

    python bench/tar_bench.py [--small 5000] [--big-mib 512]

The archive holds ``--small`` files of 4 KiB in 50 directories and one file of
``--big-mib`` MiB (random bytes, so nothing deduplicates). Each side runs as a
separate process; its peak RSS comes from the kernel (wait4).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from rich.console import Console
from rich.table import Table

import tarbox


def build_archive(path: str, small: int, big_mib: int) -> int:
    with tempfile.TemporaryDirectory() as tree:
        for i in range(small):
            d = os.path.join(tree, f"d{i % 50:02}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i:05}"), "wb") as f:
                f.write(os.urandom(4096))
        with open(os.path.join(tree, "big.bin"), "wb") as f:
            for _ in range(big_mib):
                f.write(os.urandom(1 << 20))
        subprocess.run(["tar", "-cf", path, "-C", tree, "."], check=True)
    return os.path.getsize(path)


def timed_child(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Seconds and peak RSS (MiB) of one child process (its own rusage, from wait4)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed")
    return secs, usage.ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--big-mib", type=int, default=512)
    args = ap.parse_args()
    if not shutil.which("tar"):
        sys.exit("needs GNU tar for the baseline")
    tb = tarbox.connect()
    env = {**os.environ, "TARBOX_DATABASE_URL": tb.db.url}
    tarbox_cmd = [sys.executable, "-m", "tarbox"]
    tenant = tb.create_tenant(f"tarbench-{uuid.uuid4().hex[:8]}")
    console = Console(width=140)
    try:
        with tempfile.TemporaryDirectory() as work:
            archive = os.path.join(work, "in.tar")
            size = build_archive(archive, args.small, args.big_mib)
            mib = size / (1 << 20)
            rows = []
            out_dir = os.path.join(work, "x")
            os.mkdir(out_dir)
            t_x, rss_x = timed_child(["tar", "-xf", archive, "-C", out_dir])
            t_i, rss_i = timed_child([*tarbox_cmd, "-t", tenant.name, "import", archive, "/in"], env)
            rows.append(("import (tar -x to local disk vs tarbox import)", t_x, t_i, rss_x, rss_i))
            t_c, rss_c = timed_child(["tar", "-cf", os.path.join(work, "out-local.tar"), "-C", out_dir, "."])
            out = os.path.join(work, "out.tar")
            t_e, rss_e = timed_child([*tarbox_cmd, "-t", tenant.name, "export", "/in", out], env)
            rows.append(("export (tar -c from local disk vs tarbox export)", t_c, t_e, rss_c, rss_e))
            t_cz, rss_cz = timed_child(["tar", "--zstd", "-cf", os.path.join(work, "l.tar.zst"), "-C", out_dir, "."])
            t_ez, rss_ez = timed_child([*tarbox_cmd, "-t", tenant.name, "export", "/in", out + ".zst"], env)
            rows.append(("export .tar.zst", t_cz, t_ez, rss_cz, rss_ez))
        table = Table(title=f"{args.small:,} files of 4 KiB + one {args.big_mib} MiB file ({mib:.0f} MiB archive)")
        for col in ("operation", "GNU tar, local disk (s)", "Tarbox (s)", "Tarbox / tar", "Tarbox MB/s", "peak RSS"):
            table.add_column(col, justify="right")
        for name, base, ours, rss_base, rss_ours in rows:
            rss = f"tar {rss_base} MiB, tarbox {rss_ours} MiB"
            table.add_row(name, f"{base:.2f}", f"{ours:.2f}", f"{ours / base:.1f}x", f"{size / ours / 1e6:.0f}", rss)
        console.print(table)
        console.print("peak RSS of each process; Tarbox's includes the Python interpreter and its libraries.")
    finally:
        tb.delete_tenant(tenant)


if __name__ == "__main__":
    main()
