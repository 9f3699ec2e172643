"""FUSE mount benchmark: the same commands through ``tarbox mount`` and on the local
disk, in one run (seconds, and the ratio).

    python bench/fuse_bench.py [--files 10000] [--dd-mib 1024]

untar a source-like tree of ``--files`` files (1-8 KiB text in nested
directories), ``grep -r`` over it, ``dd`` a ``--dd-mib`` file of random bytes
in (bs=1M) and out again (after dropping the kernel's page cache where allowed;
Tarbox's own block cache stays warm, as a long-lived mount's would).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

import tarbox


def run(cmd: list[str], cwd: Path | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def drop_caches() -> None:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dd-mib", type=int, default=1024)
    args = ap.parse_args()
    rng = random.Random(7)
    tb = tarbox.connect()
    tenant = tb.create_tenant(f"fb-{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "TARBOX_DATABASE_URL": tb.db.url}
    with tempfile.TemporaryDirectory() as work:
        w = Path(work)
        src = w / "src"
        words = [f"word{i}" for i in range(500)] + ["needle"]
        for i in range(args.files):
            d = src / f"pkg{i % 40}" / f"mod{i % 7}"
            d.mkdir(parents=True, exist_ok=True)
            text = " ".join(rng.choice(words) for _ in range(rng.randrange(150, 1200)))
            (d / f"f{i}.py").write_text(text + "\n")
        subprocess.run(["tar", "-cf", str(w / "src.tar"), "-C", str(src), "."], check=True)
        blob = w / "blob"
        with open(blob, "wb") as f:
            for _ in range(args.dd_mib):
                f.write(os.urandom(1 << 20))
        local, mnt = w / "local", w / "mnt"
        local.mkdir()
        mnt.mkdir()
        subprocess.run([sys.executable, "-m", "tarbox", "-t", tenant.name, "mount", str(mnt)], check=True, env=env)
        rows = []
        try:
            for label, make in [
                (f"untar {args.files:,} files", lambda d: ["tar", "-xf", str(w / "src.tar"), "-C", str(d)]),
                ("grep -r (count matches)", lambda d: ["grep", "-rc", "needle", str(d)]),
                (f"dd write {args.dd_mib} MiB (bs=1M)", lambda d: ["dd", f"if={blob}", f"of={d}/big", "bs=1M"]),
                (f"dd read {args.dd_mib} MiB (bs=1M)", lambda d: ["dd", f"if={d}/big", "of=/dev/null", "bs=1M"]),
            ]:
                drop_caches()
                a = run(make(local))
                if label.startswith("dd write"):
                    subprocess.run(["sync"], check=True)
                drop_caches()
                b = run(make(mnt))
                rows.append((label, a, b))
        finally:
            subprocess.run([sys.executable, "-m", "tarbox", "umount", str(mnt)], env=env, stdout=subprocess.DEVNULL)
    tb.delete_tenant(tenant)
    table = Table(title="through the mount vs local disk (seconds)")
    for col in ("operation", "local disk", "tarbox mount", "mount / local", "mount MB/s"):
        table.add_column(col, justify="right")
    for label, a, b in rows:
        rate = f"{args.dd_mib * 1.048576 / b:.0f}" if label.startswith("dd") else ""
        table.add_row(label, f"{a:.2f}", f"{b:.2f}", f"{b / a:.1f}x", rate)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
