"""Shared by the server tests (a pytest plugin, loaded by conftest.py): a real
``tarbox serve`` process on a free localhost port against the test database, the
one ``server`` fixture that every test of REST, MCP and the console shares, and
HTTP clients holding real tokens."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import httpx
import pytest

from tarbox.tokens import create_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    url: str
    proc: subprocess.Popen
    log: str

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_server(db_url: str, tmp_dir, *args: str) -> Running:
    """``tarbox serve`` in a subprocess; returns once /healthz answers."""
    exe = shutil.which("tarbox")
    assert exe, "the tarbox console script is not installed"
    port = free_port()
    log = os.path.join(tmp_dir, f"serve-{port}.log")
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "serve", "--port", str(port), "--log-level", "warning", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return Running(url, proc, log)
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            with open(log) as f:
                raise AssertionError(f"tarbox serve did not start: {f.read()[-2000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def server(db_url, tmp_path_factory):
    """One ``tarbox serve`` for the session's tests of the API, MCP and the console
    (a module that needs other options defines a ``server`` of its own). It must
    stop cleanly at the end: whatever the tests did, SIGTERM ends it with 0."""
    s = start_server(db_url, tmp_path_factory.mktemp("serve"), "--run-timeout", "60")
    yield s
    assert s.stop() == 0


def client(server: Running, tb, tenant=None, **token_args) -> httpx.Client:
    """An HTTP client holding a new token for ``tenant`` (``admin=True``: an admin token)."""
    text, _ = create_token(tb, tenant, **token_args)
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {text}"}, timeout=120)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
