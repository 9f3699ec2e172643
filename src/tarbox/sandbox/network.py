"""Network for a native run that may have some: an HTTP proxy of the host's, on a unix
socket in the run's directory, that reaches only the destinations on the run's
allow-list.

The sandbox keeps its empty network namespace (only ``lo``); a small bridge inside
it (``BRIDGE``, run by the sandbox's python3) listens on 127.0.0.1:3128 and carries
each connection to the proxy's socket, and ``HTTP_PROXY``/``HTTPS_PROXY`` point the
tools there (pip, git, curl, npm honour them). The proxy serves ``CONNECT host:port``
(HTTPS, or any TCP) and absolute-form HTTP requests. A destination is allowed when an
entry names its host (or ``*.domain`` covers it) and its port (or ``*``); names are
resolved here, on the host, and an address that is loopback, private or link-local is
refused unless the entry names that address itself, so a name that resolves to the
host's own services (the database's port among them) is no way in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

PROXY_PORT = 3128  # inside the sandbox, on its own loopback
NET_DIR = "/run/tarbox"  # where the sandbox sees the proxy's socket and the bridge
HEAD_MAX = 16 << 10
CONNECT_TIMEOUT = 10.0

BRIDGE = """\
import os, socket, sys, threading
srv = socket.create_server(("127.0.0.1", %(port)d))
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
open(sys.argv[1], "w").close()
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX)
    try:
        u.connect(%(sock)r)
    except OSError:
        c.close()
        continue
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
"""


@dataclass(frozen=True, slots=True)
class Destination:
    host: str  # a name, "*.domain", or an address
    port: str  # a number, or "*"

    @classmethod
    def parse(cls, text: str) -> Destination:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError(f"a network destination is HOST:PORT (PORT a number or *), not {text!r}")
        return cls(host.strip("[]").lower(), port)

    def covers(self, host: str, port: int) -> bool:
        host = host.lower()
        if self.port != "*" and int(self.port) != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def proxy_env() -> dict[str, str]:
    """The environment that sends the sandbox's tools through the bridge."""
    url = f"http://127.0.0.1:{PROXY_PORT}"
    local = "localhost,127.0.0.1"
    return {
        **{name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
        **{name: local for name in ("NO_PROXY", "no_proxy")},
    }


class EgressProxy:
    """The proxy of one run (see the module docstring), with its socket and the bridge
    in ``net_dir`` (shown to the sandbox at NET_DIR); ``close`` ends it and every
    connection it carries."""

    def __init__(self, net_dir: Path, allow: list[str]) -> None:
        self.allow = [Destination.parse(a) for a in allow]
        self.denied: list[str] = []  # what the run asked for and did not get
        (net_dir / "bridge.py").write_text(BRIDGE % {"port": PROXY_PORT, "sock": f"{NET_DIR}/proxy.sock"})
        path = net_dir / "proxy.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        path.chmod(0o666)  # the sandbox's uid is not ours
        self._sock.listen(64)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tarbox-egress")
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._open.add(s)
        return s

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        upstream = None
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk or len(head) > HEAD_MAX:
                    return
                head += chunk
            request_line, _, rest = head.partition(b"\r\n")
            parts = request_line.decode("latin-1").split()
            if len(parts) != 3:
                return self._refuse(client, 400, "a malformed request")
            method, target, version = parts
            if method == "CONNECT":
                host, _, port_text = target.rpartition(":")
                forward = rest.partition(b"\r\n\r\n")[2]  # what came after the CONNECT head
            elif target.startswith("http://"):
                hostport, _, path = target[len("http://") :].partition("/")
                host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "80")
                forward = f"{method} /{path} {version}\r\n".encode() + rest
            else:
                return self._refuse(client, 400, "only CONNECT and absolute-form HTTP requests are proxied")
            host = host.strip("[]")
            if not port_text.isdigit():
                return self._refuse(client, 400, f"no port in {target!r}")
            port = int(port_text)
            why = self._why_not(host, port)
            if why:
                self.denied.append(f"{host}:{port}")
                return self._refuse(client, 403, why)
            try:
                upstream = self._track(socket.create_connection((host, port), timeout=CONNECT_TIMEOUT))
            except OSError as exc:
                return self._refuse(client, 502, f"cannot reach {host}:{port}: {exc}")
            upstream.settimeout(None)
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if forward:
                upstream.sendall(forward)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()
                    with self._lock:
                        self._open.discard(s)

    def _why_not(self, host: str, port: int) -> str | None:
        """None when ``host:port`` may be reached, else why not."""
        if not any(d.covers(host, port) for d in self.allow):
            return f"tarbox: {host}:{port} is not on this run's network allow-list"
        if _literal(host):
            return None  # named by address: the operator meant it
        try:
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        except OSError as exc:
            return f"tarbox: cannot resolve {host}: {exc}"
        for a in addresses:
            ip = ipaddress.ip_address(a.split("%")[0])
            if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified:
                return f"tarbox: {host} resolves to {a}, an address of this host's networks"
        return None

    @staticmethod
    def _refuse(client: socket.socket, code: int, why: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[code]
        body = (why + "\n").encode()
        client.sendall(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
