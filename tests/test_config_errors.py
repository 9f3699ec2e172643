"""Database and configuration errors: each is a typed exception from the API and
one line (no traceback) with exit code 1 from the CLI, and loses nothing."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import uuid

import psycopg
import pytest

import tarbox
from tarbox.storage.server import ensure_database


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TARBOX_DATABASE_URL": url}
    return subprocess.run([shutil.which("tarbox"), *args], capture_output=True, text=True, env=env, timeout=120)


def assert_one_line(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tarbox: error:"), p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def scratch_db(server_url):
    """A database of its own (its settings change), dropped afterwards."""
    name = f"tarbox_cfg_{uuid.uuid4().hex[:10]}"
    url = ensure_database(server_url, name)
    yield url, name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://[bad", ["invalid database URL"]),
        ("not a url at all", ["invalid database URL"]),
        ("postgresql://127.0.0.1:1/tarbox", ["cannot connect to PostgreSQL", "port=1"]),
    ],
)
def test_bad_url_and_server_down(url, words):
    with pytest.raises(tarbox.DatabaseError) as info:
        tarbox.connect(url)
    for w in words:
        assert w in str(info.value)
    assert_one_line(cli(url, "tenant", "list"), *words)


def test_missing_database_and_password_never_shown(server_url):
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": f"nope_{uuid.uuid4().hex[:6]}", "password": "s3cret"})
    with pytest.raises(tarbox.DatabaseError) as exc:
        tarbox.connect(url)
    assert "does not exist" in str(exc.value) and "s3cret" not in str(exc.value)
    p = cli(url, "tenant", "list")
    assert_one_line(p, "does not exist")
    assert "s3cret" not in p.stderr


def test_schema_newer_than_this_tarbox(scratch_db):
    url, _ = scratch_db
    tarbox.connect(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tarbox.schema_version (version, name) VALUES (9999, 'from_the_future')")
    with pytest.raises(tarbox.SchemaVersionError, match="newer than this Tarbox supports"):
        tarbox.connect(url)
    assert_one_line(cli(url, "tenant", "list"), "upgrade tarbox")


def test_read_only_database(scratch_db):
    url, name = scratch_db
    with tarbox.connect(url) as tb:
        t = tb.create_tenant("ro")
        tb.filesystem(t).write_file("/kept", b"written before")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with tarbox.connect(url) as tb:
        fs = tb.filesystem("ro")
        assert fs.read_file("/kept") == b"written before"  # reads still work
        with pytest.raises(OSError) as exc:
            fs.write_file("/new", b"x")
        assert exc.value.errno == errno.EROFS
        with pytest.raises(tarbox.ReadOnlyDatabaseError):
            tb.create_tenant("another")
        assert fs.read_file("/kept") == b"written before"
    assert_one_line(cli(url, "-t", "ro", "write", "/new", "x"), "read-only")
    assert_one_line(cli(url, "tenant", "create", "x"), "read-only")


def test_read_only_database_that_needs_the_schema(scratch_db, server_url):
    url, name = scratch_db
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with pytest.raises(tarbox.ReadOnlyDatabaseError, match="schema must be created"):
        tarbox.connect(url)
    assert_one_line(cli(url, "tenant", "list"), "read-only")


def _tiny_tablespace(server_url: str, size: str = "24M"):
    """A tablespace on a small tmpfs (needs root to mount and the server's user to own it)."""
    where = tempfile.mkdtemp(prefix="tarbox-tiny-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], capture_output=True).returncode:
        os.rmdir(where)
        return None
    with psycopg.connect(server_url, autocommit=True) as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    if not os.path.isdir(data_dir):  # an external server on another machine
        subprocess.run(["umount", where], capture_output=True)
        os.rmdir(where)
        return None
    st = os.stat(data_dir)
    os.chown(where, st.st_uid, st.st_gid)
    return where


def test_disk_full_is_enospc_and_keeps_what_was_written(server_url):
    where = _tiny_tablespace(server_url)
    if where is None:
        pytest.skip("cannot mount a small tmpfs beside the server here (needs root and a local server)")
    ts, name = f"tarbox_tiny_{uuid.uuid4().hex[:6]}", f"tarbox_full_{uuid.uuid4().hex[:6]}"
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE {ts} LOCATION '{where}'")
            conn.execute(f'CREATE DATABASE "{name}" TABLESPACE {ts}')
        info = psycopg.conninfo.conninfo_to_dict(server_url)
        url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})
        with tarbox.connect(url) as tb:
            fs = tb.filesystem(tb.create_tenant("full"))
            fs.write_file("/first", b"kept")
            written = 0
            with pytest.raises(OSError) as exc:
                for i in range(1000):  # distinct 1 MiB files until the tablespace is full
                    fs.write_file(f"/f{i}", os.urandom(1 << 20))
                    written = i + 1
            assert exc.value.errno == errno.ENOSPC, exc.value
            assert fs.read_file("/first") == b"kept"
            assert [fs.stat(f"/f{i}").size for i in range(written)] == [1 << 20] * written
            assert not fs.exists(f"/f{written}")  # the failed write left nothing half-made
            assert tb.fsck("full")[0].ok
        big = os.path.join(where, "..", f"{name}.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(4 << 20))
        try:
            assert_one_line(cli(url, "-t", "full", "put", big, "/big"), "No space left")
        finally:
            os.remove(big)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP TABLESPACE IF EXISTS {ts}")
        subprocess.run(["umount", where], capture_output=True)
        os.rmdir(where)


@pytest.mark.parametrize("wait", ["abc", "0", "-5", "inf", "nan"])
def test_a_bad_db_wait_is_one_clear_line(server_url, monkeypatch, wait):
    monkeypatch.setenv("TARBOX_DB_WAIT", wait)
    assert_one_line(cli(server_url, "tenant", "list"), "TARBOX_DB_WAIT", "above 0")
