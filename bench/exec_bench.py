"""Native runs: each workload step run locally (a plain directory, no sandbox) and
sandboxed on Tarbox (``NativeHost``), alternating, in one process; medians of ``--runs``.

Rows: sandbox start (``true``); ``git status`` over 2,000 files; a 50-test pytest suite
of a 200-file project; a venv made and a local wheel installed with pip; the sync-in
after one file changed through the API (the tree brought forward) and the sync-out of a
run that changed one file. The sandboxed figure is the whole run as a caller waits for
it: checkpoint, sync-in, sandbox, write-back; "step itself" takes the median ``true``
run (the fixed cost of any run) away from it. The last rows run ``true`` and
``git status`` on the fallback workspace (a copy per run, where overlayfs cannot be
mounted).

    python bench/exec_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

import tarbox
from tarbox.sandbox import NativeHost, jail, unavailable_reason

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from sandbox_support import python_project  # noqa: E402

GIT = "git -c user.name=a -c user.email=a@b"


def project() -> dict[str, bytes]:
    files = python_project()
    for i in range(2000):
        files[f"lib/d{i % 40}/f{i}.txt"] = f"line {i}\n".encode()
    return files


STEPS = {
    "sandbox start (true)": "true",
    "git status, 2,000+ files": "git status --porcelain >/dev/null",
    "pytest, 50 tests": "PYTHONPATH=vendor python3 -m pytest -q -p no:cacheprovider tests >/dev/null",
    "venv + pip install wheel": (
        "rm -rf .venv wheels && python3 -m venv .venv && python3 -m pip wheel -q --no-build-isolation"
        " --no-deps ./mypkg -w wheels >/dev/null && .venv/bin/pip install -q --no-index --find-links wheels mypkg"
    ),
}


def local_run(cwd: Path, script: str) -> float:
    """The step with the sandbox's PATH (the same git, python3, gcc) and a home of its own."""
    env = {"PATH": jail.PATH, "HOME": str(cwd.parent / "home"), "LANG": "C.UTF-8"}
    t = time.perf_counter()
    subprocess.run(["bash", "-c", script], cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    why = unavailable_reason()
    if why:
        raise SystemExit(f"native runs are unavailable here: {why}")
    tb = tarbox.connect()
    tenant = tb.create_tenant(f"bench-exec-{uuid.uuid4().hex[:8]}")
    local = Path(tempfile.mkdtemp(prefix="exec-bench-")) / "workspace"
    (local.parent / "home").mkdir(parents=True)
    try:
        files = project()
        fs = tb.filesystem(tenant)
        with fs.batch():
            for rel, data in files.items():
                fs.makedirs(os.path.dirname(f"/workspace/{rel}"), exist_ok=True)
                fs.write_file(f"/workspace/{rel}", data)
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                (local / rel).write_bytes(data)
        host = NativeHost(tb, tenant)
        init = f"git init -q . && {GIT} add -A && {GIT} commit -qm init"
        local_run(local, init)
        r = host.run(init)
        assert r.ok, r.stderr
        after_init = host.run("true")  # the tree brought up to date with the repository
        init_files = len(r.changed)
        rows = []
        copy_host = NativeHost(tb, tenant, workspace="copy")
        steps = list(STEPS.items()) + [
            ("copy workspace: " + name, STEPS[name]) for name in ("sandbox start (true)", "git status, 2,000+ files")
        ]
        for name, script in steps:
            runner = copy_host if name.startswith("copy workspace") else host
            loc, box, phases = [], [], []
            for _ in range(args.runs):
                loc.append(local_run(local, script))
                r = runner.run(script)
                assert r.ok, (name, r.status, r.stderr[-500:])
                box.append(r.duration)
                phases.append(r.timings)
            rows.append((name, statistics.median(loc), statistics.median(box), phases[len(phases) // 2]))
        sync_in, sync_out = [], []
        for i in range(args.runs):
            fs.write_file("/workspace/proj/mod1.py", f"def f1(x):\n    return x + 1  # {i}\n".encode())
            sync_in.append(host.run("true").timings["sync_in"])
            sync_out.append(host.run(f"echo '# {i}' >> proj/mod2.py").timings["sync_out"])
    finally:
        tb.delete_tenant(tenant)
        shutil.rmtree(local.parent, ignore_errors=True)

    table = Table(title=f"native runs: local directory vs sandboxed on Tarbox (median of {args.runs}, seconds)")
    columns = ("step", "local", "Tarbox sandbox", "ratio", "step itself", "its ratio", "sandbox / sync-in / sync-out")
    for col in columns:
        table.add_column(col, justify="left" if col == "step" else "right")
    start = rows[0][2]
    for name, loc, box, ph in rows:
        parts = f"{ph.get('sandbox', 0):.3f} / {ph.get('sync_in', 0):.3f} / {ph.get('sync_out', 0):.3f}"
        own = "" if "true" in name or name.startswith("copy") else f"{max(0.0, box - start):.3f}"
        own_ratio = f"{max(0.0, box - start) / loc:.2f}x" if own else ""
        table.add_row(name, f"{loc:.3f}", f"{box:.3f}", f"{box / loc:.2f}x", own, own_ratio, parts)
    table.add_row(
        f"sync-in after a run that wrote {init_files:,} files (git init + commit)",
        *("", f"{after_init.timings['sync_in']:.3f}", "", "", "", ""),
    )
    table.add_row("sync-in, one file changed by the API", "", f"{statistics.median(sync_in):.3f}", "", "")
    table.add_row("sync-out, a run that changed one file", "", f"{statistics.median(sync_out):.3f}", "", "")
    Console().print(table)


if __name__ == "__main__":
    main()
