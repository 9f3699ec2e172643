"""Fixtures: a real PostgreSQL (the embedded server, or TARBOX_DATABASE_URL's
server) with a fresh database per test session."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

import tarbox
from tarbox.storage.server import ensure_database

# the live server's fixture and helpers (tests/server_support.py)
pytest_plugins = ["server_support"]

# Tests never touch the user's own embedded database.
if "TARBOX_HOME" not in os.environ:
    os.environ["TARBOX_HOME"] = str(Path(tempfile.gettempdir()) / f"tarbox-test-home-{os.getuid()}")


def _server_url() -> str:
    external = os.environ.get("TARBOX_TEST_DATABASE_URL")
    if external:
        return external
    external = os.environ.get("TARBOX_DATABASE_URL")
    if external:
        return external
    from tarbox.storage.server import embedded_server_url

    return embedded_server_url()


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def db_url(server_url: str):
    given = os.environ.get("TARBOX_TEST_DATABASE_URL")
    if given:  # a database made for this run (tests/test_citus.py: a fresh Citus cluster's)
        os.environ["TARBOX_TEST_DB_URL"] = given
        yield given
        return
    name = f"tarbox_test_{uuid.uuid4().hex[:10]}"
    url = ensure_database(server_url, name)
    os.environ["TARBOX_TEST_DB_URL"] = url
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def tb(db_url: str):
    client = tarbox.connect(db_url)
    yield client
    client.close()


@pytest.fixture
def tenant(tb: tarbox.Tarbox):
    t = tb.create_tenant(f"t-{uuid.uuid4().hex[:12]}")
    yield t
    try:
        tb.delete_tenant(t)
    except tarbox.TenantNotFoundError:
        pass


@pytest.fixture
def fs(tb: tarbox.Tarbox, tenant: tarbox.Tenant) -> tarbox.Filesystem:
    return tb.filesystem(tenant)


@pytest.fixture
def new_tenant(tb: tarbox.Tarbox):
    """Factory for extra tenants, deleted at teardown."""
    made: list[tarbox.Tenant] = []

    def make(**kwargs) -> tarbox.Tenant:
        t = tb.create_tenant(f"t-{uuid.uuid4().hex[:12]}", **kwargs)
        made.append(t)
        return t

    yield make
    for t in made:
        try:
            tb.delete_tenant(t)
        except tarbox.TenantNotFoundError:
            pass
