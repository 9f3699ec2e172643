"""The embedded default: no URL starts a private PostgreSQL, the next process
reuses it, and `tarbox db stop` stops it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import psycopg

from tarbox.storage.server import DATABASE_NAME


def test_embedded_lifecycle(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "TARBOX_DATABASE_URL"}
    env["TARBOX_HOME"] = str(home)
    exe = shutil.which("tarbox")

    def run(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([exe, *args], capture_output=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr.decode()
        return p

    assert json.loads(run("--json", "db", "status").stdout)["initialized"] is False
    first = json.loads(run("--json", "init").stdout)
    assert first["embedded"] is True and first["schema_version"] >= 1
    status = json.loads(run("--json", "db", "status").stdout)
    assert status["running"] and status["initialized"]
    pid = status["pid"]
    t = time.perf_counter()
    run("tenant", "create", "e1")
    run("-t", "e1", "write", "/x", "kept")
    assert json.loads(run("--json", "db", "status").stdout)["pid"] == pid  # reused, not restarted
    assert time.perf_counter() - t < 60
    run("db", "stop")
    assert json.loads(run("--json", "db", "status").stdout)["running"] is False
    # data survives a restart of the server
    assert run("-t", "e1", "cat", "/x").stdout == b"kept"
    # A running server's URL is read from its pid file (no pgserver, no extra
    # connections); when it does not connect -- here Tarbox's database was dropped by
    # hand -- the process falls back to the path that creates it.
    lines = (home / "pgdata" / "postmaster.pid").read_text().splitlines()
    with psycopg.connect(host=lines[4], port=int(lines[3]), user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE "{DATABASE_NAME}" WITH (FORCE)')
    assert json.loads(run("--json", "tenant", "list").stdout) == []
    run("db", "stop")
