"""The reliability suites (tests/suites) at CI size; bench/reliability.py runs them
full size. Each suite reports its cases and failures; a failure is a defect."""

from __future__ import annotations

import pytest

from suites import confinement, crash, hostile, isolation, load, quota


def test_confinement_fuzzing_finds_no_escape(tb):
    r = confinement.run(tb, examples=6, cases_per_example=150)
    assert r.ok, "\n".join(r.failures)
    assert r.cases >= 6 * 150
    hist = r.figures["errno histogram"]
    assert hist.get(0, 0) > 0 and hist.get(63, 0) > 0, hist  # some cases succeed, some are refused as escapes
    assert r.figures["cases compared with wasmtime"] > 0


def test_tenant_isolation_holds_on_every_interface(tb, db_url):
    r = isolation.run(tb, db_url, pairs=1, cli=True)
    assert r.ok, "\n".join(r.failures)
    assert set(r.figures["attempts by interface"]) == {"python", "/.tarbox", "sql", "wasi", "cli"}


def test_hostile_guests_end_cleanly_while_the_host_serves_others(tb):
    r = hostile.run(tb, truncations=8, random_modules=8)
    assert r.ok, "\n".join(r.failures)
    assert r.cases > 4 * 40 and r.figures["canary runs"] > 0


def test_concurrent_writers_at_the_quota_edge(tb, db_url):
    r = quota.run(tb, db_url, rounds=2)
    assert r.ok, "\n".join(r.failures)
    assert 0.9 < r.figures["max sampled usage / quota"] <= 1.0  # it really went to the edge


def test_eight_writers_lose_nothing(tb, db_url):
    r = load.run(tb, db_url, seconds=3.0, writers=8, tenants=50)
    assert r.ok, "\n".join(r.failures)
    assert r.cases > 100


def test_kill_9_of_a_writer_loses_nothing_acknowledged(tb, db_url):
    r = crash.kill_trials(tb, db_url, trials=3)
    assert r.ok, "\n".join(r.failures)
    assert r.figures["files acknowledged before the kills"] > 0


def test_kill_9_of_a_process_running_a_guest_shows_no_partial_file(tb, db_url):
    r = crash.guest_kill_trials(tb, db_url, trials=2)
    assert r.ok, "\n".join(r.failures)
    assert r.figures["closed files that had to survive"] > 0
    assert r.figures["visible files checked"] > 0


def test_postgresql_restarted_under_a_run(tb):
    r = crash.restart_trial(tb)
    if "skipped" in r.figures:
        pytest.skip(f"cannot restart this server: {r.figures['skipped']}")
    assert r.ok, "\n".join(r.failures)
