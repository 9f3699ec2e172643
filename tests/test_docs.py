"""Every Python example in the README and docs/ runs: each file's ```python
blocks are executed in order, in one namespace, from the repository root, against
a database of their own (so the tenants they create cannot collide)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pytest

import tarbox
import tarbox.integrations.fsspec as tarbox_fsspec
from tarbox.storage.server import ensure_database

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
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


def test_every_doc_with_examples_is_covered():
    assert sum(len(blocks(d)) for d in DOCS) >= 6
