"""FUSE mount benchmark: the same commands on the local disk and through
``tarbox mount`` with each installed backend (mfusepy, pyfuse3), in one run.

    python bench/fuse_bench.py [--files 10000] [--dd-mib 1024]

untar a source-like tree of ``--files`` files (1-8 KiB text in nested
directories), ``grep -r`` over it, rename 1,000 of its files (the mount knows
every name by then), ``dd`` a ``--dd-mib`` file of random bytes
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
        local = w / "local"
        local.mkdir()
        ops = [
            (f"untar {args.files:,} files", lambda d: ["tar", "-xf", str(w / "src.tar"), "-C", str(d)]),
            ("grep -r (count matches)", lambda d: ["grep", "-rc", "needle", str(d)]),
            ("rename 1,000 files (tree walked)", lambda d: [sys.executable, "-c", _RENAMES, str(d)]),
            (f"dd write {args.dd_mib} MiB (bs=1M)", lambda d: ["dd", f"if={blob}", f"of={d}/big", "bs=1M"]),
            (f"dd read {args.dd_mib} MiB (bs=1M)", lambda d: ["dd", f"if={d}/big", "of=/dev/null", "bs=1M"]),
        ]
        times: dict[str, list[float]] = {"local": []}
        for _, make in ops:
            drop_caches()
            times["local"].append(run(make(local)))
            subprocess.run(["sync"], check=True)
        for backend in backends():
            mnt = w / f"mnt-{backend}"
            mnt.mkdir()
            t = tb.create_tenant(f"fb-{uuid.uuid4().hex[:8]}")
            mount = [sys.executable, "-m", "tarbox", "-t", t.name, "mount", str(mnt), "--backend", backend]
            subprocess.run(mount, check=True, env=env, stdout=subprocess.DEVNULL)
            times[backend] = []
            try:
                for _, make in ops:
                    drop_caches()
                    times[backend].append(run(make(mnt)))
            finally:
                subprocess.run([sys.executable, "-m", "tarbox", "umount", str(mnt)], env=env, stdout=subprocess.DEVNULL)
                tb.delete_tenant(t)
    table = Table(title="through the mount (each backend) vs local disk: seconds, ratio to local, MB/s")
    table.add_column("operation")
    for name in times:
        table.add_column(name, justify="right")
    for i, (label, _) in enumerate(ops):
        row = [label]
        for name, ts in times.items():
            cell = f"{ts[i]:.2f}"
            if name != "local":
                cell += f" ({ts[i] / times['local'][i]:.1f}x)"
            if label.startswith("dd"):
                cell += f" {args.dd_mib * 1.048576 / ts[i]:.0f} MB/s"
            row.append(cell)
        table.add_row(*row)
    Console(width=140).print(table)


# one rename in each of the first 1,000 files' directories, after grep -r made the mount
# learn every name (a backend that scans what it knows per rename pays for all of them)
_RENAMES = """
import os, sys
d = sys.argv[1]
for i in range(1000):
    p = f"{d}/pkg{i % 40}/mod{i % 7}/"
    if os.path.exists(p + f"f{i}.py"):
        os.rename(p + f"f{i}.py", p + f"r{i}.py")
"""


def backends() -> list[str]:
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return ["mfusepy"]
    return ["mfusepy", "pyfuse3"]


if __name__ == "__main__":
    main()
