"""Versioned SQL migrations, applied at connect.

Files ``migrations/NNNN_name.sql`` are applied in order inside one transaction
under an advisory lock, so two processes connecting at once cannot both apply
them; the applied versions are recorded in ``tarbox.schema_version``.
"""

from __future__ import annotations

import re
from importlib import resources

import psycopg

from tarbox.errors import SchemaVersionError
from tarbox.storage import citus

SCHEMA = "tarbox"
APP_ROLE = "tarbox_app"
_LOCK_KEY = 0x7461726278  # "tarbx"


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with this package."""
    out = []
    for entry in resources.files("tarbox.storage").joinpath("migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


def latest_version() -> int:
    return available()[-1][0]


def current_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT to_regclass('tarbox.schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM tarbox.schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection, *, distribute: bool = False) -> int:
    """Bring the schema up to date; returns the version now in place. With
    ``distribute`` (a Citus database), a schema created here is laid out distributed in
    the same transaction; an existing one is left as it is (``tarbox db distribute``).

    ``conn`` must be an autocommit connection of a role that owns (or may
    create) the schema.
    """
    target = latest_version()
    have = current_version(conn)
    if have > target:
        raise SchemaVersionError(
            f"database schema version {have} is newer than this Tarbox supports ({target}); upgrade tarbox"
        )
    if have == target:
        return have
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        _ensure_role(conn)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        have = current_version(conn)  # re-read under the lock
        conn.execute(f"SET LOCAL search_path = {SCHEMA}")
        for version, name, sql in available():
            if version <= have:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (version, name))
        # a new schema is laid out distributed; tables that later migrations add to a
        # distributed one are distributed like the others (lay_out skips what is done)
        if distribute and (have == 0 or citus.distributed(conn)):
            citus.lay_out(conn)
    return target


def _ensure_role(conn: psycopg.Connection) -> None:
    """Create the application role: no superuser, no BYPASSRLS, so policies bind it."""
    conn.execute(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """
    )
    conn.execute(f"ALTER ROLE {APP_ROLE} SET search_path = {SCHEMA}")
    # A non-superuser owner must be a member to SET ROLE to it.
    conn.execute(
        f"""
        DO $$ BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
            END IF;
        EXCEPTION WHEN others THEN NULL;
        END $$
        """
    )
