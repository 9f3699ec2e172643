"""Tenants, migrations and database errors against a real PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

import tarbox
from tarbox.storage import migrate


def test_create_get_list_delete(tb):
    name = f"t-{uuid.uuid4().hex[:8]}"
    t = tb.create_tenant(name)
    assert tb.get_tenant(name) == t
    assert tb.get_tenant(t.id) == t
    assert tb.get_tenant(str(t.id)) == t
    assert name in [x.name for x in tb.list_tenants()]
    tb.delete_tenant(name)
    with pytest.raises(tarbox.TenantNotFoundError):
        tb.get_tenant(name)


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "-lead", "a" * 64, "semi;colon", "ü"])
def test_invalid_names_rejected(tb, bad):
    with pytest.raises(tarbox.InvalidNameError):
        tb.create_tenant(bad)


def test_duplicate_name(tb, tenant):
    with pytest.raises(tarbox.TenantExistsError):
        tb.create_tenant(tenant.name)


def test_delete_removes_every_row(tb, db_url):
    t = tb.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    fs = tb.filesystem(t)
    fs.mkdir("/d")
    fs.write_file("/d/f", b"x" * 300_000)
    fs.symlink("f", "/d/l")
    tb.delete_tenant(t)
    with psycopg.connect(db_url, options="-c search_path=tarbox") as conn:
        for table in ("tenants", "tenant_state", "layers", "inodes", "dirents", "extents", "blocks"):
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (t.id,)).fetchone()[0]
            assert n == 0, table


def test_filesystem_of_deleted_tenant_fails_cleanly(tb):
    t = tb.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    fs = tb.filesystem(t)
    fs.write_file("/a", b"1")
    tb.delete_tenant(t)
    with pytest.raises(tarbox.TenantNotFoundError):
        fs.write_file("/b", b"2")


def test_migrations_recorded_and_idempotent(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate.migrate(conn) == migrate.latest_version()
        assert migrate.migrate(conn) == migrate.latest_version()
        rows = conn.execute("SELECT version FROM tarbox.schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [v for v, _, _ in migrate.available()]


def test_concurrent_first_connect_migrates_once(server_url):
    from tarbox.storage.server import ensure_database

    name = f"tarbox_mig_{uuid.uuid4().hex[:8]}"
    url = ensure_database(server_url, name)
    errors: list[BaseException] = []

    def connect():
        try:
            tarbox.connect(url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        assert errors == []
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM tarbox.schema_version").fetchone()[0] == len(migrate.available())
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_newer_schema_refused(server_url):
    from tarbox.storage.server import ensure_database

    name = f"tarbox_new_{uuid.uuid4().hex[:8]}"
    url = ensure_database(server_url, name)
    try:
        tarbox.connect(url).close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO tarbox.schema_version (version, name) VALUES (9999, 'future')")
        with pytest.raises(tarbox.SchemaVersionError, match="9999"):
            tarbox.connect(url)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(tarbox.DatabaseError, match="cannot connect"):
        tarbox.connect(f"postgresql://nobody@/nodb?host={tmp_path}&connect_timeout=2")
