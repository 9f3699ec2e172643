"""Every Python example in the README and docs/ runs: each file's ```python
blocks are executed in order, in one namespace, from the repository root, against
a database of their own (so the tenants they create cannot collide)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

import tarbox
import tarbox.integrations.fsspec as tarbox_fsspec
from tarbox.storage.server import ensure_database

ROOT = Path(__file__).parent.parent
# docs/server.md's examples talk to a running server: tests/test_server_docs.py runs them
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "server.md")]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


@pytest.mark.parametrize("doc", [d for d in DOCS if blocks(d)], ids=lambda d: d.name)
def test_python_examples_run(doc, server_url, monkeypatch):
    name = f"tarbox_docs_{uuid.uuid4().hex[:8]}"
    url = ensure_database(server_url, name)
    monkeypatch.setenv("TARBOX_DATABASE_URL", url)
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "__docs__"}
    try:
        for i, code in enumerate(blocks(doc)):
            try:
                exec(compile(code, f"{doc.name} block {i + 1}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"{doc.name}, python block {i + 1} failed: {exc!r}") from exc
    finally:
        for value in list(namespace.values()):
            if isinstance(value, tarbox.Tarbox):
                value.close()
        for client in tarbox_fsspec._clients.values():
            client.close()
        tarbox_fsspec._clients.clear()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SHELL = re.compile(r"^```bash\n(tarbox .*?)^```$", re.S | re.M)  # command examples (not install lines)


def shell_blocks(path: Path) -> list[str]:
    return SHELL.findall(path.read_text())


@pytest.mark.parametrize("doc", [d for d in DOCS if shell_blocks(d)], ids=lambda d: d.name)
def test_cli_examples_run(doc, server_url, tmp_path):
    """Each ```bash block that starts with a ``tarbox`` command runs under ``bash -e``
    in a fresh database, from a directory holding a small ``src/`` tree."""
    name = f"tarbox_docs_{uuid.uuid4().hex[:8]}"
    url = ensure_database(server_url, name)
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "src" / "README").write_text("source\n")
    env = {**os.environ, "TARBOX_DATABASE_URL": url}
    try:
        for i, script in enumerate(shell_blocks(doc)):
            p = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=300
            )
            assert p.returncode == 0, f"{doc.name}, bash block {i + 1}: {p.stderr.decode()[-2000:]}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_doc_with_examples_is_covered():
    assert sum(len(blocks(d)) for d in DOCS) >= 7
    assert sum(len(shell_blocks(d)) for d in DOCS) >= 1
