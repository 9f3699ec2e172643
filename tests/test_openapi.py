"""The API's description is true: schemathesis (its own CLI, a fixed seed, every
check on but the response-time limit, stateful phase included) generates requests from ``/openapi.json`` and
checks every answer against it, for a tenant token and for an admin token, against
a live ``tarbox serve`` on a database of its own (the stateful phase deletes the
tenants it finds). tests/schemathesis.toml says which 400s a schema cannot state."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

import tarbox
from server_support import start_server
from tarbox.storage.server import ensure_database
from tarbox.tokens import create_token

HERE = Path(__file__).parent
# every check schemathesis 4 has, but the response-time limit that "--checks all" adds:
# speed is measured in bench/, never asserted in a test
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
)


@pytest.fixture(scope="module")
def described(server_url, tmp_path_factory):
    name = f"tarbox_openapi_{uuid.uuid4().hex[:8]}"
    url = ensure_database(server_url, name)
    s = start_server(url, tmp_path_factory.mktemp("openapi"), "--run-timeout", "20")
    tb = tarbox.connect(url)
    try:
        yield s, tb
    finally:
        s.stop()
        tb.close()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schemathesis(server, token: str, *only: str) -> subprocess.CompletedProcess:
    exe = shutil.which("st") or shutil.which("schemathesis")
    assert exe, "schemathesis is a test dependency"
    cmd = [
        exe,
        "run",
        f"{server.url}/openapi.json",
        "-H",
        f"Authorization: Bearer {token}",
        "--checks",
        ",".join(CHECKS),
        "--seed",
        "20261202",
        "--max-examples",
        "10",
        "--workers",
        "1",  # hypothesis's ast.parse is not thread-safe on CPython 3.11
        "--request-timeout",
        "120",
        "--generation-database",
        "none",
        "--no-color",
        *only,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(HERE)}
    return subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=900)


def test_the_description_holds_for_a_tenant_token(described):
    server, tb = described
    tenant = tb.create_tenant("described")
    token, _ = create_token(tb, tenant)
    p = schemathesis(server, token, "--exclude-path-regex", "^/v1/tenants")
    assert p.returncode == 0, p.stdout[-12000:] + p.stderr[-3000:]


def test_the_description_holds_for_an_admin_token(described):
    server, tb = described
    token, _ = create_token(tb, None, admin=True)
    # every phase: the quotas' bounds are JSON Schema's minimum/maximum (pydantic had written
    # them as bare "ge"/"le", which schemathesis rightly took for no bound at all)
    only = ("--include-path-regex", "^/v1/(tenants|whoami)")
    p = schemathesis(server, token, *only)
    assert p.returncode == 0, p.stdout[-12000:] + p.stderr[-3000:]
