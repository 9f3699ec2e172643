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


# where a user imports from: the package and its public subpackages (their __all__)
PUBLIC_MODULES = ("tarbox", "tarbox.wasi", "tarbox.sandbox", "tarbox.server", "tarbox.integrations.fsspec")
_IMPORT = re.compile(r"^\s*from (tarbox[\w.]*) import ([\w, ()]+)$|^\s*import (tarbox[\w.]*)", re.M)


def test_every_import_in_the_docs_is_of_a_public_name():
    import importlib

    code = [b for d in DOCS + [ROOT / "docs" / "server.md"] for b in blocks(d)]
    code += [p.read_text() for p in (ROOT / "examples").glob("*.py")]
    seen = 0
    for text in code:
        for m in _IMPORT.finditer(text):
            module = m.group(1) or m.group(3)
            assert module in PUBLIC_MODULES, f"the docs import {module}, an implementation module"
            exported = getattr(importlib.import_module(module), "__all__", None)
            for name in (m.group(2) or "").replace("(", "").replace(")", "").split(","):
                if name.strip():
                    assert exported is not None and name.strip() in exported, f"{module}.{name.strip()} is not public"
                    seen += 1
    assert seen >= 5  # the docs do import names (the pattern still matches them)
