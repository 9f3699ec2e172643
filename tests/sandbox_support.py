"""The workspace native runs are tested and measured on (tests/test_sandbox.py,
bench/exec_bench.py): a 200-file Python project with a 50-test pytest suite, a local
package to build a wheel of, and pytest itself (pure Python, copied from this
environment: the sandbox has no network to install it)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from pathlib import Path

import _pytest
import iniconfig
import packaging
import pluggy
import pytest


def python_project() -> dict[str, bytes]:
    """Workspace-relative path -> content."""
    files = {f"proj/mod{i}.py": f"def f{i}(x):\n    return x + {i}\n".encode() for i in range(150)}
    files["proj/__init__.py"] = b""
    files["tests/test_all.py"] = "".join(
        f"from proj.mod{i} import f{i}\ndef test_{i}():\n    assert f{i}(1) == {i + 1}\n" for i in range(50)
    ).encode()
    files["mypkg/pyproject.toml"] = (
        b'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        b'[project]\nname = "mypkg"\nversion = "1.0"\n'
    )
    files["mypkg/mypkg/__init__.py"] = b"ANSWER = 42\n"
    for mod in (_pytest, pytest, pluggy, iniconfig, packaging):
        top = Path(mod.__file__).parent
        for p in top.rglob("*.py"):
            files[f"vendor/{top.name}/{p.relative_to(top)}"] = p.read_bytes()
    files["vendor/py.py"] = Path(pytest.__file__).parent.parent.joinpath("py.py").read_bytes()
    return files


@contextlib.contextmanager
def web_server_off_loopback():
    """A web server answering ``hello PATH`` on this host's own address outside the
    loopback (inside a sandbox, 127.0.0.1 is the sandbox's own), as ``(address, port)``;
    the test is skipped where the host has no such address."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("10.255.255.255", 1))  # no packet: the address this host would send from
    addr = probe.getsockname()[0]
    probe.close()
    if addr.startswith("127."):
        pytest.skip("no address outside the loopback to serve the test's web server on")

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = f"hello {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    web = http.server.ThreadingHTTPServer((addr, 0), Hello)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        yield addr, web.server_address[1]
    finally:
        web.shutdown()
