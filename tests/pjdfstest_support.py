"""pjdfstest (the POSIX filesystem suite of FreeBSD, ZFS and FUSE; source in
``../shared/pjdfstest``): built once from its archive, run with its TAP output read
subtest by subtest, in a directory of the filesystem under test.

    python tests/pjdfstest_support.py [--tenant T] [--backend B]

runs it on local disk and through a fresh ``tarbox mount`` of a new tenant (root
only, ``allow_other``) and prints the table of docs/fuse.md: subtests passed per
directory, Tarbox beside local.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SHARED = Path(os.environ.get("TARBOX_PJDFSTEST") or Path(__file__).resolve().parents[2] / "shared" / "pjdfstest")
_TAP = re.compile(r"^(not )?ok (\d+)(.*)$")
_PLAN = re.compile(r"^1\.\.(\d+)")


def archive() -> Path | None:
    found = sorted(SHARED.glob("pjdfstest-*.tar.gz"))
    return found[-1] if found else None


def build(into: Path) -> Path:
    """The built suite's directory (its ``pjdfstest`` binary beside ``tests/``); raises
    ``RuntimeError`` saying why it could not be built."""
    src = archive()
    if src is None:
        raise RuntimeError(f"no pjdfstest archive in {SHARED} (set TARBOX_PJDFSTEST)")
    for tool in ("autoreconf", "make", "cc"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install autoconf automake gcc make)")
    root = into / "pjdfstest"
    if (root / "pjdfstest").exists():
        return root
    with tarfile.open(src) as tf:
        tf.extractall(into, filter="data")
    for cmd in (["autoreconf", "-ifs"], ["./configure"], ["make", "pjdfstest"]):
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"pjdfstest build failed at {' '.join(cmd)}: {(p.stderr or p.stdout)[-800:]}")
    return root


@dataclass
class FileResult:
    """One ``.t`` file's run: its plan, and each subtest's outcome and line."""

    name: str  # e.g. "chmod/00.t"
    planned: int = 0
    outcomes: dict[int, tuple[bool, str]] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(ok for ok, _ in self.outcomes.values())

    def failures(self) -> dict[int, str]:
        """Subtests that failed or never ran (a script that died before them)."""
        out = {n: line for n, (ok, line) in self.outcomes.items() if not ok}
        for n in range(1, self.planned + 1):
            if n not in self.outcomes:
                out[n] = "did not run"
        return out


# pjdfstest decides some of its steps by the file system's type, read off `df -PT .`
# (it runs rename/22.t, rename's ctime, only on ext4, UFS and ZFS: POSIX does not ask
# for it). Tarbox means to behave as ext4 does, so it is asked the same: this `df`
# answers "ext4" for every directory.
_DF_AS_EXT4 = """#!/bin/sh
echo "Filesystem Type 1024-blocks Used Available Capacity Mounted on"
echo "tarbox ext4 0 0 0 0% /"
"""


def _df_shim(where: Path) -> dict[str, str]:
    shim = where / ".df-as-ext4"
    shim.mkdir(exist_ok=True)
    (shim / "df").write_text(_DF_AS_EXT4)
    (shim / "df").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def _run_one(root: Path, test: Path, where: Path, timeout: float, env: dict[str, str] | None = None) -> FileResult:
    name = str(test.relative_to(root / "tests"))
    cwd = where / name.replace("/", "_").removesuffix(".t")
    cwd.mkdir()
    result = FileResult(name)
    try:
        p = subprocess.run(["sh", str(test)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        lines = p.stdout.splitlines()
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode(errors="replace").splitlines() if isinstance(exc.stdout, bytes) else []
    for line in lines:
        if m := _PLAN.match(line):
            result.planned = int(m.group(1))
        elif m := _TAP.match(line):
            # "# TODO" subtests are ones the suite itself expects to fail here
            ok = not m.group(1) or "# TODO" in m.group(3)
            result.outcomes[int(m.group(2))] = (ok, line)
    return result


def run(
    root: Path, where: Path, *, workers: int = 8, timeout: float = 600, only: str | None = None
) -> list[FileResult]:
    """Every test file of the suite (or of its directory ``only``), ``workers`` at a
    time, each in a new directory of its own under ``where`` (the suite's names are
    random, but a directory each keeps one file's leftovers from another's)."""
    tests = sorted((root / "tests" / (only or "")).rglob("*.t"))
    env = _df_shim(where.parent)  # outside ``where``: nothing of the harness in the tested tree
    # the largest scripts first (chown/00.t alone sleeps for 80 s): the run ends sooner
    longest_first = sorted(tests, key=lambda t: -t.stat().st_size)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda t: _run_one(root, t, where, timeout, env), longest_first)
        done = dict(zip(longest_first, results, strict=True))
    return [done[t] for t in tests]


def by_directory(results: list[FileResult]) -> dict[str, tuple[int, int]]:
    """(passed, planned) per directory of the suite."""
    out: dict[str, tuple[int, int]] = {}
    for r in results:
        d = r.name.split("/")[0]
        p, n = out.get(d, (0, 0))
        out[d] = (p + r.passed, n + r.planned)
    return out


def main() -> None:
    import argparse
    import uuid

    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default=None, help="pyfuse3 or mfusepy (default: tarbox mount's)")
    ap.add_argument("--no-local", action="store_true", help="only through the mount")
    ap.add_argument("--only", default=None, help="one directory of the suite, e.g. rename")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pjdfstest-"))
    root = build(work)
    local = work / "local"
    local.mkdir()
    local_results = [] if a.no_local else run(root, local, only=a.only)
    tenant = f"pjdfstest-{uuid.uuid4().hex[:8]}"
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["tarbox", "tenant", "create", tenant], check=True, capture_output=True)
    backend = ["--backend", a.backend] if a.backend else []
    subprocess.run(["tarbox", "-t", tenant, "mount", str(mnt), "--allow-other", *backend], check=True)
    try:
        ours = run(root, mnt, only=a.only)
    finally:
        subprocess.run(["tarbox", "umount", str(mnt)], check=False)
        subprocess.run(["tarbox", "tenant", "delete", tenant, "--yes"], check=False, capture_output=True)
    mine, theirs = by_directory(ours), by_directory(local_results)
    print("| directory | Tarbox | local ext4 |")
    print("|---|---|---|")
    tp = tn = lp = ln = 0
    for d in sorted(theirs or mine):
        p, n = mine.get(d, (0, 0))
        q, m = theirs.get(d, (0, 0))
        tp, tn, lp, ln = tp + p, tn + n, lp + q, ln + m
        print(f"| {d} | {p}/{n} | {q}/{m} |")
    print(f"| **all** | **{tp}/{tn}** ({100 * tp / max(1, ln):.1f} % of local's passes) | **{lp}/{ln}** |")
    planned = {r.name: r.planned for r in local_results}
    for r in ours:
        if r.name in planned and planned[r.name] != r.planned:
            print(f"PLAN {r.name}: {r.planned} subtests planned here, {planned[r.name]} on local disk")
        for n, line in sorted(r.failures().items()):
            print(f"FAIL {r.name} {n}: {line}")


if __name__ == "__main__":
    main()
