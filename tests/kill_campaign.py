"""kill -9 under mixed load: does a 2xx from ``tarbox serve`` mean committed, and does
a crash ever leave a file or an archive half-made?

Each round starts a server, then at once: a client that PUTs files one after another
(small ones, and large ones that are spooled and applied in one commit) and records
each 201; a client importing archives (each a directory of files, one commit each);
a client trickling an import that never ends; sandbox runs writing files; an export
read slowly; checkpoints. After the chosen number of acknowledged PUTs the server is
killed with SIGKILL, restarted, and the tenant is read back through the Python API:

* lost: an acknowledged upload or import that is missing or has other bytes;
* partial: a file whose bytes are not all the bytes its writer sent, or an imported
  directory with some of its files but not all.

``campaign()`` is what tests/test_serve_hardening.py runs (2 kills) and what
``python tests/kill_campaign.py --kills 20`` runs for docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field

import httpx

from server_support import b64, start_server
from tarbox.tokens import create_token


def content(name: str, size: int) -> bytes:
    """The bytes a file of this name must hold: a pure function of the name, so that a
    reader can tell a whole file from a part of one."""
    seed = hashlib.sha256(name.encode()).digest()
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


def archive(prefix: str, n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(n):
            name = f"{prefix}/f{i}"
            data = content(name, 20_000 + 1000 * i)
            info = tarfile.TarInfo(f"f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Report:
    kills: int = 0
    acknowledged: int = 0
    imports_acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    seen_unacknowledged: int = 0  # written whole but killed before the answer: allowed


def _load(url: str, token: str, stop: threading.Event, target: int, acked: list, imported: list, wasm: str):
    """The mixed load; returns once ``target`` PUTs were acknowledged (or ``stop``)."""
    headers = {"Authorization": f"Bearer {token}"}
    threads = []

    def guard(fn):
        def run():
            try:
                fn()
            except (httpx.HTTPError, OSError):
                pass  # the server was killed under it

        t = threading.Thread(target=run, daemon=True)
        threads.append(t)
        t.start()

    def uploads():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
            i = 0
            while not stop.is_set() and len(acked) < target:
                name = f"up/{uuid_part()}-{i}"
                size = 3 << 20 if i % 7 == 3 else 500 + i  # some go the spooled way
                r = api.put(f"/v1/files/{name}", content=content(name, size), params={"parents": 1})
                if r.status_code == 201:
                    acked.append((name, size))
                i += 1

    def imports():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
            i = 0
            while not stop.is_set():
                prefix = f"imp/{uuid_part()}-{i}"
                r = api.post(f"/v1/import/{prefix}", content=archive(prefix, 12))
                if r.status_code == 200:
                    imported.append(prefix)
                i += 1

    def trickle():
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            body = archive("trickle", 30)
            sock.sendall(
                f"POST /v1/import/trickle HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for i in range(0, len(body), 4096):
                if stop.is_set():
                    return
                sock.sendall(body[i : i + 4096])
                time.sleep(0.05)

    def runs():
        with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
            while not stop.is_set():
                api.post("/v1/runs", json={"wasm_base64": wasm, "args": ["churn", "20", "5"]})

    def export():
        with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
            while not stop.is_set():
                with api.stream("GET", "/v1/export") as r:
                    for _ in r.iter_bytes(4096):
                        time.sleep(0.01)
                        if stop.is_set():
                            return

    def checkpoints():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
            while not stop.is_set():
                api.post("/v1/checkpoints", json={"message": "campaign"})
                time.sleep(0.2)

    for fn in (uploads, imports, trickle, runs, export, checkpoints):
        guard(fn)
    return threads


_counter = iter(range(1 << 62))


def uuid_part() -> str:
    return f"{os.getpid()}-{next(_counter)}"


def campaign(db_url: str, tmp_dir, tb, tenant, *, kills: int = 20, acks_per_round: int = 40, seed: int = 1) -> Report:
    from wasi_support import guest

    rng = random.Random(seed)
    wasm = b64(guest("writeback"))
    report = Report()
    acked: list[tuple[str, int]] = []
    imported: list[str] = []
    for _ in range(kills):
        s = start_server(db_url, tmp_dir)
        token, _ = create_token(tb, tenant)
        stop = threading.Event()
        target = len(acked) + rng.randint(acks_per_round // 2, acks_per_round)
        threads = _load(s.url, token, stop, target, acked, imported, wasm)
        deadline = time.monotonic() + 120
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        s.stop(signal.SIGKILL)
        report.kills += 1
        stop.set()
        for t in threads:
            t.join(30)
    report.acknowledged, report.imports_acknowledged = len(acked), len(imported)
    _check(tb, tenant, acked, imported, report)
    fsck = subprocess.run(["tarbox", "fsck"], env={**os.environ, "TARBOX_DATABASE_URL": db_url}, capture_output=True)
    if fsck.returncode != 0:
        report.partial.append("fsck: " + fsck.stdout.decode()[-500:])
    return report


def _check(tb, tenant, acked, imported, report: Report) -> None:
    fs = tb.filesystem(tenant)
    for name, size in acked:
        path = "/" + name
        if not fs.exists(path) or fs.read_file(path) != content(name, size):
            report.lost.append(path)
    acked_names = {"/" + n for n, _ in acked}
    if fs.exists("/up"):
        for entry in fs.listdir("/up"):
            path = "/up/" + entry
            if path in acked_names:
                continue
            data = fs.read_file(path)
            report.seen_unacknowledged += 1
            # its bytes must be all the bytes one of the two sizes the writer uses
            i = int(entry.rsplit("-", 1)[1])
            whole = content(path[1:], 3 << 20 if i % 7 == 3 else 500 + i)
            if data != whole:
                report.partial.append(path)
    for prefix in imported:
        for i in range(12):
            path = f"/{prefix}/f{i}"
            if not fs.exists(path) or fs.read_file(path) != content(f"{prefix}/f{i}", 20_000 + 1000 * i):
                report.lost.append(path)
    if fs.exists("/imp"):
        for entry in fs.listdir("/imp"):
            prefix = f"imp/{entry}"
            names = set(fs.listdir("/" + prefix))
            if names != {f"f{i}" for i in range(12)}:
                report.partial.append(f"/{prefix} ({len(names)} of 12 files)")
                continue
            for i in range(12):
                if fs.read_file(f"/{prefix}/f{i}") != content(f"{prefix}/f{i}", 20_000 + 1000 * i):
                    report.partial.append(f"/{prefix}/f{i}")
    if fs.exists("/trickle"):
        report.partial.append("/trickle (an import that never finished)")


def main() -> None:
    import argparse
    import uuid

    import tarbox
    from tarbox.storage.server import embedded_server_url, ensure_database

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--acks", type=int, default=40, help="acknowledged PUTs per round, at most")
    args = ap.parse_args()
    server = os.environ.get("TARBOX_DATABASE_URL") or embedded_server_url()
    url = ensure_database(server, f"tarbox_kill_{uuid.uuid4().hex[:8]}")
    os.environ["TARBOX_TEST_DB_URL"] = url
    tmp = f"/tmp/tarbox-kill-{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    with tarbox.connect(url) as tb:
        tenant = tb.create_tenant(f"kill-{uuid.uuid4().hex[:6]}")
        t0 = time.monotonic()
        r = campaign(url, tmp, tb, tenant, kills=args.kills, acks_per_round=args.acks)
        took = time.monotonic() - t0
    print("| kills | acknowledged PUTs | acknowledged imports | written, killed before the answer | lost | partial |")
    print("|---|---|---|---|---|---|")
    row = (r.kills, r.acknowledged, r.imports_acknowledged, r.seen_unacknowledged, len(r.lost), len(r.partial))
    print("| " + " | ".join(map(str, row)) + " |")
    print(f"({took:.0f} s)")
    for what in r.lost + r.partial:
        print("  ", what)
    sys.exit(1 if r.lost or r.partial else 0)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
