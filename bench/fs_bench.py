"""Filesystem benchmark: local disk vs AgentFS (SQLite) vs Tarbox, side by side.

    python bench/fs_bench.py [--files 10000] [--dirs 100] [--stream-mib 256]

Needs ``pip install -e '.[bench]'``. Every scenario runs on every backend in
this one process; the table reports seconds and the ratio to local disk and to
AgentFS. Tarbox runs twice: one commit per operation (close-to-open visible at
once) and inside one ``fs.batch()`` write-back window. Streaming throughput and
peak RSS come from a child process per backend (ru_maxrss only grows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from contextlib import nullcontext

from rich.console import Console
from rich.table import Table

import tarbox

SCENARIOS = ["create", "stat", "stat again", "read", "read again", "list", "rename", "delete"]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Local:
    name = "local disk (os)"

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="fsbench-")

    def run(self, dirs, files, data, renames) -> dict[str, float]:
        r = self.root
        out = {}

        def create():
            for d in dirs:
                os.mkdir(r + d)
            for f in files:
                with open(r + f, "wb") as fh:
                    fh.write(data)

        out["create"] = timed(create)
        out["stat"] = timed(lambda: [os.stat(r + f) for f in files])
        out["stat again"] = timed(lambda: [os.stat(r + f) for f in files])

        def read():
            for f in files:
                with open(r + f, "rb") as fh:
                    fh.read()

        out["read"] = timed(read)
        out["read again"] = timed(read)
        out["list"] = timed(lambda: [os.listdir(r + d) for d in dirs])
        out["rename"] = timed(lambda: [os.rename(r + a, r + b) for a, b in renames])
        moved = {a: b for a, b in renames}
        out["delete"] = timed(lambda: [os.unlink(r + moved.get(f, f)) for f in files])
        shutil.rmtree(self.root)
        return out


class AgentFS:
    name = "AgentFS SDK (SQLite)"

    def run(self, dirs, files, data, renames) -> dict[str, float]:
        return asyncio.run(self._run(dirs, files, data, renames))

    async def _run(self, dirs, files, data, renames) -> dict[str, float]:
        from agentfs_sdk import AgentFS as AFS
        from agentfs_sdk import AgentFSOptions

        tmp = tempfile.mkdtemp(prefix="agentfs-")
        agent = await AFS.open(AgentFSOptions(path=os.path.join(tmp, "bench.db")))
        fs = agent.fs
        out = {}

        async def t(coro_fn):
            start = time.perf_counter()
            await coro_fn()
            return time.perf_counter() - start

        async def create():
            for d in dirs:
                await fs.mkdir(d)
            for f in files:
                await fs.write_file(f, data)

        async def stat():
            for f in files:
                await fs.stat(f)

        async def read():
            for f in files:
                await fs.read_file(f, encoding=None)

        async def lst():
            for d in dirs:
                await fs.readdir(d)

        async def rename():
            for a, b in renames:
                await fs.rename(a, b)

        moved = {a: b for a, b in renames}

        async def delete():
            for f in files:
                await fs.unlink(moved.get(f, f))

        for key, fn in zip(SCENARIOS, [create, stat, stat, read, read, lst, rename, delete], strict=True):
            out[key] = await t(fn)
        await agent.close()
        shutil.rmtree(tmp)
        return out


class Tarbox:
    def __init__(self, tb: tarbox.Tarbox, batch: bool) -> None:
        self.tb = tb
        self.batch = batch
        self.name = "Tarbox, batch" if batch else "Tarbox, commit per op"

    def run(self, dirs, files, data, renames) -> dict[str, float]:
        t = self.tb.create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        fs = self.tb.filesystem(t)
        ctx = fs.batch if self.batch else nullcontext
        out = {}

        def create():
            with ctx():
                for d in dirs:
                    fs.mkdir(d)
                for f in files:
                    fs.write_file(f, data)

        out["create"] = timed(create)
        out["stat"] = timed(lambda: [fs.stat(f) for f in files])
        out["stat again"] = timed(lambda: [fs.stat(f) for f in files])
        out["read"] = timed(lambda: [fs.read_file(f) for f in files])
        out["read again"] = timed(lambda: [fs.read_file(f) for f in files])
        out["list"] = timed(lambda: [fs.listdir(d) for d in dirs])

        def rename():
            with ctx():
                for a, b in renames:
                    fs.rename(a, b)

        out["rename"] = timed(rename)
        moved = {a: b for a, b in renames}

        def delete():
            with ctx():
                for f in files:
                    fs.remove(moved.get(f, f))

        out["delete"] = timed(delete)
        self.tb.delete_tenant(t)
        return out


STREAM_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, tempfile, time, uuid
    kind, mib, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    chunk = os.urandom(1 << 20)
    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    def current_rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if kind == "local":
        d = tempfile.mkdtemp(); path = os.path.join(d, "big")
        opener = lambda mode: open(path, mode)
    else:
        import tarbox
        tb = tarbox.connect(url)
        t = tb.create_tenant(f"stream-{uuid.uuid4().hex[:8]}")
        fs = tb.filesystem(t)
        opener = lambda mode: fs.open("/big", mode)
    base = current_rss()
    t0 = time.perf_counter()
    with opener("wb") as f:
        for i in range(mib):
            f.write(chunk[i:] + chunk[:i])  # every block distinct: no dedup
        if kind == "local":
            f.flush(); os.fsync(f.fileno())
    w = time.perf_counter() - t0
    peak_w = rss() - base
    t0 = time.perf_counter()
    with opener("rb") as f:
        while f.read(1 << 20):
            pass
    r = time.perf_counter() - t0
    peak_r = rss() - base
    extra = {}
    if kind == "tarbox":
        used = fs.usage().used_bytes
        with fs.open("/big", "r+b") as f:
            f.seek(mib * (1 << 20) // 2 + 7)
            f.write(b"!")
        extra["edit_growth"] = fs.usage().used_bytes - used
        tb.delete_tenant(t)
    print(json.dumps({"write": w, "read": r, "rss_w": peak_w, "rss_r": peak_r, **extra}))
    """
)


def stream(kind: str, mib: int, url: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", STREAM_CHILD, kind, str(mib), url], capture_output=True, text=True, check=True
    )
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--renames", type=int, default=1_000)
    ap.add_argument("--stream-mib", type=int, default=256)
    ap.add_argument("--skip-agentfs", action="store_true")
    args = ap.parse_args()

    dirs = [f"/d{i:03}" for i in range(args.dirs)]
    files = [f"{dirs[i % args.dirs]}/f{i:05}" for i in range(args.files)]
    renames = [(f, f + ".renamed") for f in files[: args.renames]]
    data = os.urandom(args.size)

    console = Console(width=160)
    tb = tarbox.connect()
    backends = [Local()]
    if not args.skip_agentfs:
        backends.append(AgentFS())
    backends += [Tarbox(tb, batch=False), Tarbox(tb, batch=True)]
    results = {}
    for b in backends:
        console.print(f"running {b.name} ...")
        results[b.name] = b.run(dirs, files, data, renames)

    local = results[backends[0].name]
    agent = results.get(AgentFS.name)
    table = Table(title=f"{args.files} files of {args.size} B in {args.dirs} dirs: seconds, and ratios")
    table.add_column("scenario")
    for b in backends:
        table.add_column(b.name, justify="right")
    for b in backends[1:]:
        if b.name.startswith("Tarbox"):
            table.add_column(f"{b.name.removeprefix('Tarbox, ')} / local", justify="right")
            if agent:
                table.add_column(f"AgentFS / {b.name.removeprefix('Tarbox, ')}", justify="right")
    for s in SCENARIOS:
        row = [s] + [f"{results[b.name][s]:.3f}" for b in backends]
        for b in backends[1:]:
            if b.name.startswith("Tarbox"):
                v = results[b.name][s]
                row.append(f"{v / local[s]:.1f}x")
                if agent:
                    row.append(f"{agent[s] / v:.1f}x")
        table.add_row(*row)
    console.print(table)

    mib = args.stream_mib
    st = Table(title=f"streaming a {mib} MiB file in 1 MiB chunks (child process per backend)")
    for col in ("backend", "write MB/s", "read MB/s", "peak RSS growth, write", "peak RSS growth, read", "1-byte edit"):
        st.add_column(col, justify="right")
    for kind in ("local", "tarbox"):
        m = stream(kind, mib, tb.db.url)
        st.add_row(
            kind,
            f"{mib * 1.048576 / m['write']:.0f}",
            f"{mib * 1.048576 / m['read']:.0f}",
            f"{m['rss_w'] / 2**20:.1f} MiB",
            f"{m['rss_r'] / 2**20:.1f} MiB",
            f"+{m['edit_growth']} B stored" if "edit_growth" in m else "-",
        )
    console.print(st)
    tb.close()


if __name__ == "__main__":
    main()
