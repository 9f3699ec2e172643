"""Isolation is enforced by PostgreSQL row-level security, not only by Python:
raw SQL as the application role, bound to tenant A, cannot touch tenant B."""

from __future__ import annotations

import psycopg
import pytest

from suites.isolation import app_conn

TABLES = ("tenants", "tenant_state", "layers", "inodes", "dirents", "extents", "blocks")


@pytest.fixture
def two(tb, new_tenant):
    a, b = new_tenant(), new_tenant()
    for t, content in ((a, b"secret-a"), (b, b"secret-b")):
        fs = tb.filesystem(t)
        fs.mkdir("/w")
        fs.write_file("/w/f", content)
    return a, b


def test_raw_sql_sees_only_own_tenant(db_url, two):
    a, b = two
    with app_conn(db_url, a.id) as conn:
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (b.id,)).fetchone()[0] == 0
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (a.id,)).fetchone()[0] > 0
        data = [bytes(r[0]) for r in conn.execute("SELECT data FROM blocks").fetchall()]
        assert b"secret-a" in data and b"secret-b" not in data


def test_raw_sql_cannot_modify_other_tenant(db_url, two):
    a, b = two
    with app_conn(db_url, a.id) as conn:
        assert conn.execute("DELETE FROM inodes WHERE tenant_id = %s", (b.id,)).rowcount == 0
        assert conn.execute("UPDATE blocks SET data = 'x' WHERE tenant_id = %s", (b.id,)).rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO dirents (tenant_id, parent_ino, name, layer_id, ino) VALUES (%s, 1, 'evil', 1, 1)",
                (b.id,),
            )
        conn.rollback()


def test_app_role_cannot_raise_its_quota_or_bypass(db_url, two):
    a, _ = two
    with app_conn(db_url, a.id) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE tenant_state SET quota_bytes = NULL")
        conn.rollback()
        conn.execute("SET ROLE tarbox_app")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE blocks DISABLE ROW LEVEL SECURITY")
        conn.rollback()
        conn.execute("SET ROLE tarbox_app")
        row = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'tarbox_app'").fetchone()
        assert row == (False, False)


def test_no_tenant_set_sees_nothing(db_url, two):
    conn = psycopg.connect(db_url, options="-c search_path=tarbox")
    with conn:
        conn.execute("SET ROLE tarbox_app")
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_binding_needs_the_tenants_token(db_url, two):
    """Raw SQL bound to A cannot rebind itself to B: the token is signed with a key
    the application role cannot read, and A's token does not fit B."""
    a, b = two
    with app_conn(db_url, a.id) as conn:
        conn.execute("SELECT set_config('tarbox.tenant_id', %s, false)", (str(b.id),))  # keep A's token
        # on Citus a binding reaches the workers as a transaction starts (storage/citus.py)
        conn.commit()
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        conn.execute("SELECT set_config('tarbox.tenant_token', repeat('0', 64), false)")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM blocks").fetchone()[0] == 0
        for sql in ("SELECT * FROM tarbox_binding_key", "SELECT tarbox_tenant_token(%s)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql, (b.id,) if "%s" in sql else ())
            conn.rollback()
            conn.execute("SET ROLE tarbox_app")
