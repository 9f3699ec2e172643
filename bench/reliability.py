"""Reliability suites at full size (issue 6): prints cases tried and failures per
suite. The test suite runs the same code small (tests/test_reliability.py).

    python bench/reliability.py [--confinement-cases 10000] [--isolation-pairs 25]
        [--malformed 200] [--quota-rounds 20] [--load-seconds 60] [--kill-trials 100]
        [--guest-kill-trials 100] [--restarts 5]
        [--only confinement,isolation,hostile,quota,load,kill,guestkill,restart]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import tarbox

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from suites import confinement, crash, hostile, isolation, load, quota  # noqa: E402


def _restarts(tb, args) -> list:
    out = []
    for _ in range(args.restarts):
        out.append(crash.restart_trial(tb))
    merged = out[0]
    for r in out[1:]:
        merged.cases += r.cases
        merged.failures += r.failures
    return [merged]


SUITES = {
    "confinement": lambda tb, a: [
        confinement.run(tb, examples=-(-a.confinement_cases // a.per_run), cases_per_example=a.per_run)
    ],
    "isolation": lambda tb, a: [isolation.run(tb, tb.db.url, pairs=a.isolation_pairs, cli=True)],
    "hostile": lambda tb, a: [hostile.run(tb, truncations=a.malformed, random_modules=a.malformed)],
    "quota": lambda tb, a: [quota.run(tb, tb.db.url, rounds=a.quota_rounds)],
    "load": lambda tb, a: [load.run(tb, tb.db.url, seconds=a.load_seconds)],
    "kill": lambda tb, a: [crash.kill_trials(tb, tb.db.url, trials=a.kill_trials)],
    "guestkill": lambda tb, a: [crash.guest_kill_trials(tb, tb.db.url, trials=a.guest_kill_trials)],
    "restart": _restarts,
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--confinement-cases", type=int, default=10_000)
    ap.add_argument("--per-run", type=int, default=150, help="confinement cases per guest run")
    ap.add_argument("--isolation-pairs", type=int, default=25, help="tenant pairs (2 tenants each)")
    ap.add_argument("--malformed", type=int, default=200, help="truncated and random modules, each")
    ap.add_argument("--quota-rounds", type=int, default=20, help="rounds of 6 writers filling a 4 MiB quota")
    ap.add_argument("--load-seconds", type=float, default=60.0, help="8 writers on 1 + 50 tenants")
    ap.add_argument("--kill-trials", type=int, default=100, help="kill -9 of an API writer")
    ap.add_argument("--guest-kill-trials", type=int, default=100, help="kill -9 of a process running a guest")
    ap.add_argument("--restarts", type=int, default=5, help="PostgreSQL restarts under a run")
    ap.add_argument("--only", default="", help="comma-separated suites: " + ",".join(SUITES))
    args = ap.parse_args()
    tb = tarbox.connect()
    chosen = [x for x in SUITES if not args.only or x in args.only.split(",")]
    results = []
    for name in chosen:
        t0 = time.monotonic()
        for r in SUITES[name](tb, args):
            results.append((r, time.monotonic() - t0))

    table = Table(title="Reliability suites")
    for col in ("suite", "cases", "failures", "seconds", "figures"):
        table.add_column(col)
    for r, secs in results:
        figures = "; ".join(f"{k}: {v}" for k, v in r.figures.items())
        table.add_row(r.name, f"{r.cases:,}", str(len(r.failures)), f"{secs:.1f}", figures)
    console = Console(width=200)
    console.print(table)
    for r, _ in results:
        for f in r.failures:
            console.print(f"[red]{r.name}[/]: {f}")
    return 1 if any(not r.ok for r, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
