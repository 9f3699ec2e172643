"""docs/server.md's examples run against a real ``tarbox serve``: its ```bash block
(tenant and token), then its ```sh blocks (curl) and ```python blocks (httpx, the MCP
SDK's client), with TARBOX_URL and TARBOX_TOKEN as the page sets them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from server_support import start_server

DOC = Path(__file__).parent.parent / "docs" / "server.md"


def fenced(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(), re.S | re.M)


def test_server_doc_examples_run(db_url, tmp_path):
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    for script in fenced("bash"):
        script = script.replace("agent-1", "docs-agent")  # the suite's database may have an agent-1
        p = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr.decode()
    server = start_server(db_url, tmp_path)
    try:
        env["TARBOX_URL"] = server.url
        env["TARBOX_TOKEN"] = (tmp_path / "token.txt").read_text().strip()
        sh = "\n".join(fenced("sh")).replace("http://127.0.0.1:8765", server.url)  # the page's default port
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", sh], cwd=tmp_path, env=env, capture_output=True)
        assert p.returncode == 0, p.stderr.decode()
        assert b'"exit_code":0' in p.stdout and b"hi" in p.stdout and b"hello.py" in p.stdout
        for i, code in enumerate(fenced("python")):
            p = subprocess.run(["python", "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=300)
            assert p.returncode == 0, f"python block {i + 1}: {p.stderr.decode()[-3000:]}"
            assert p.stdout.strip(), f"python block {i + 1} printed nothing"
    finally:
        server.stop()
