"""The quick-start demo: what Tarbox does, on the embedded database."""

from __future__ import annotations

import time
import uuid

from rich.console import Console

from tarbox.client import Tarbox


def run_demo(tb: Tarbox, out: Console) -> None:
    name = f"demo-{uuid.uuid4().hex[:8]}"
    where = "embedded PostgreSQL" if tb.db.embedded else "PostgreSQL"
    out.print(f"[bold]Tarbox demo[/] on {where} (schema v{tb.db.schema_version})")
    tenant = tb.create_tenant(name, quota_bytes=64 << 20)
    other = tb.create_tenant(name + "-b")
    try:
        fs = tb.filesystem(tenant)
        fs.mkdir("/workspace/src", parents=True)
        t = time.perf_counter()
        with fs.batch():
            for i in range(500):
                fs.write_file(f"/workspace/src/file{i:03}.py", f"print({i})\n".encode() * 20)
        dt = time.perf_counter() - t
        out.print(f"tenant [cyan]{name}[/]: wrote 500 files in {dt * 1000:.0f} ms (one write-back batch)")
        with fs.open("/workspace/data.bin", "wb") as f:
            for _ in range(16):
                f.write(b"\0" * (1 << 20))
        u = fs.usage()
        out.print(
            f"streamed a 16 MiB file of zeros: stored {u.used_bytes} bytes in total "
            "(content-addressed BLAKE3 blocks, deduplicated)"
        )
        fs.rename("/workspace/src", "/workspace/lib")
        fs.symlink("lib/file000.py", "/workspace/main.py")
        out.print(f"renamed a 500-file directory in O(1); main.py -> {fs.readlink('/workspace/main.py')}")
        out.print(f"/workspace: {fs.listdir('/workspace')}")
        out.print(f"main.py reads {fs.read_file('/workspace/main.py')[:9]!r}")
        t = time.perf_counter()
        cp = fs.checkpoint("before the risky step")
        out.print(f"checkpoint layer {cp.id} in {(time.perf_counter() - t) * 1000:.1f} ms (nothing copied)")
        fs.remove_tree("/workspace/lib")
        fs.write_file("/workspace/main.py.bak", b"oops")
        changes = fs.diff(cp)
        first = changes[0]
        out.print(f"the agent deleted and wrote things: {len(changes)} changes, e.g. {first.kind.value} {first.path}")
        fs.switch(cp)
        out.print(f"rolled back to layer {cp.id}: lib has {len(fs.listdir('/workspace/lib'))} files again")
        _run_agent(tb, tenant, fs, out)
        ofs = tb.filesystem(other)
        out.print(f"tenant [cyan]{other.name}[/] sees its own empty root: {ofs.listdir('/')}")
    finally:
        tb.delete_tenant(tenant)
        tb.delete_tenant(other)
    out.print("[green]done[/]: tenants removed. Try `tarbox tenant create me` then `tarbox -t me ls /`.")


def _run_agent(tb: Tarbox, tenant, fs, out: Console) -> None:
    """The WASI part: examples/agent.c (shipped in the package), built to wasm32-wasip1,
    runs on the tenant's files."""
    from importlib.resources import as_file, files

    from tarbox.wasi import WasiHost
    from tarbox.wasi.toolchain import build_c

    t = time.perf_counter()
    with as_file(files("tarbox") / "examples" / "agent.c") as src:
        wasm = build_c(src)
    out.print(f"built examples/agent.c to wasm32-wasip1 ({len(wasm)} bytes) in {time.perf_counter() - t:.1f} s")
    fs.write_file("/workspace/input.txt", b"".join(b"the quick brown fox %d jumps\n" % i for i in range(10_000)))
    host = WasiHost(tb, tenant, "/workspace", timeout=30, memory_limit=256 << 20, checkpoint_before=True)
    r = host.run(wasm, ["agent", "count-words"])
    out.print(f"wasm agent: exit {r.exit_code} in {r.duration * 1000:.0f} ms, said: {r.stdout.decode().strip()}")
    out.print(f"its report: {fs.read_text('/workspace/out/report.md').splitlines()[2:4]}")
    changes = ", ".join(f"{c.kind.value} {c.path}" for c in fs.diff(r.checkpoint))
    out.print(f"the run as one undoable unit (checkpoint {r.checkpoint}): {changes}")
