"""Reliability suites at full size (issue 6): prints cases tried and failures per
suite. The test suite runs the same code small (tests/test_reliability.py).

    python bench/reliability.py [--confinement-cases 10000] [--isolation-pairs 25]
        [--malformed 200] [--quota-rounds 20] [--load-seconds 60]
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
from suites import confinement, hostile, isolation, load, quota  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--confinement-cases", type=int, default=10_000)
    ap.add_argument("--per-run", type=int, default=150, help="confinement cases per guest run")
    ap.add_argument("--isolation-pairs", type=int, default=25, help="tenant pairs (2 tenants each)")
    ap.add_argument("--malformed", type=int, default=200, help="truncated and random modules, each")
    ap.add_argument("--load-seconds", type=float, default=60.0, help="8 writers on 1 + 50 tenants")
    ap.add_argument("--quota-rounds", type=int, default=20, help="rounds of 6 writers filling a 4 MiB quota")
    args = ap.parse_args()
    tb = tarbox.connect()
    results = []
    t0 = time.monotonic()
    runs = -(-args.confinement_cases // args.per_run)
    r = confinement.run(tb, examples=runs, cases_per_example=args.per_run)
    results.append((r, time.monotonic() - t0))
    t0 = time.monotonic()
    r = isolation.run(tb, tb.db.url, pairs=args.isolation_pairs, cli=True)
    results.append((r, time.monotonic() - t0))
    t0 = time.monotonic()
    r = hostile.run(tb, truncations=args.malformed, random_modules=args.malformed)
    results.append((r, time.monotonic() - t0))
    t0 = time.monotonic()
    r = quota.run(tb, tb.db.url, rounds=args.quota_rounds)
    results.append((r, time.monotonic() - t0))
    t0 = time.monotonic()
    r = load.run(tb, tb.db.url, seconds=args.load_seconds)
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
