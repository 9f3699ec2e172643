"""``tarbox serve``'s REST API: a real server process on a random localhost port, a real
HTTP client (httpx), real tokens. Files, layers, runs, tar, audit; authentication and
tenant isolation; bad input; faults (disconnects, kill -9, SIGTERM, revocation)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sandbox_support import web_server_off_loopback
from server_support import b64, client, start_server
from tarbox.tokens import create_token, revoke_token
from wasi_support import guest


@pytest.fixture
def api(server, tb, tenant):
    with client(server, tb, tenant) as c:
        yield c


@pytest.fixture
def view(tb, tenant):
    """A fresh view of the tenant, as another process sees it now (close-to-open)."""
    return lambda: tb.filesystem(tenant)


def error_of(r: httpx.Response) -> dict:
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r.json()["error"]


def test_files_round_trip(api, fs, view):
    data = os.urandom(3 << 20) + b"tail"
    r = api.put("/v1/files/workspace/dir/blob.bin", content=data, params={"parents": 1})
    assert r.status_code == 201 and r.json()["size"] == len(data)
    assert fs.read_file("/workspace/dir/blob.bin") == data  # the filesystem says so, not the server
    assert api.get("/v1/files/workspace/dir/blob.bin").content == data
    r = api.get("/v1/files/workspace/dir/blob.bin", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert api.get("/v1/files/workspace/dir/blob.bin", headers={"Range": "bytes=-4"}).content == b"tail"
    assert api.get("/v1/files/workspace/dir/blob.bin", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    head = api.head("/v1/files/workspace/dir/blob.bin")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert head.headers["x-tarbox-type"] == "file" and head.content == b""

    assert api.post("/v1/mkdir", json={"path": "/workspace/a/b", "parents": True}).status_code == 201
    assert fs.is_dir("/workspace/a/b")
    assert api.post("/v1/rename", json={"src": "/workspace/dir/blob.bin", "dst": "/workspace/a/b/x"}).status_code == 200
    assert api.post("/v1/symlink", json={"target": "b/x", "path": "/workspace/a/link"}).status_code == 201
    assert fs.readlink("/workspace/a/link") == "b/x" and fs.read_file("/workspace/a/link") == data
    st = api.get("/v1/stat/workspace/a/link", params={"follow": 0}).json()
    assert st["type"] == "symlink"
    fs.makedirs("/workspace/many")
    for i in range(25):
        fs.write_file(f"/workspace/many/f{i:02}", b"x")
    page1 = api.get("/v1/dirs/workspace/many", params={"limit": 10}).json()
    page3 = api.get("/v1/dirs/workspace/many", params={"limit": 10, "offset": 20}).json()
    assert [e["name"] for e in page1["entries"]] == [f"f{i:02}" for i in range(10)] and page1["next"] == 10
    assert page3["total"] == 25 and page3["next"] is None and len(page3["entries"]) == 5
    assert api.delete("/v1/files/workspace/a/link").status_code == 204 and not view().lexists("/workspace/a/link")
    assert error_of(api.delete("/v1/files/workspace/a"))["code"] == "ENOTEMPTY"
    assert api.delete("/v1/files/workspace/a", params={"recursive": 1}).status_code == 204
    assert not view().exists("/workspace/a")
    assert api.get("/v1/whoami").json()["tenant"] == fs.tenant_name


def test_errors_are_json_with_errno(api):
    r = api.get("/v1/files/workspace/missing")
    assert r.status_code == 404 and error_of(r) == {
        "code": "ENOENT",
        "errno": 2,
        "message": "No such file or directory: /workspace/missing",
    }
    api.post("/v1/mkdir", json={"path": "/d", "parents": True})
    assert api.post("/v1/mkdir", json={"path": "/d"}).status_code == 409
    assert error_of(api.get("/v1/files/d"))["code"] == "EISDIR"
    bad = api.post("/v1/mkdir", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and error_of(bad)["code"] == "INVALID_REQUEST"
    assert error_of(api.post("/v1/mkdir", json={"nopath": 1}))["code"] == "INVALID_REQUEST"
    assert api.get("/v1/no-such-route").status_code == 404
    assert error_of(api.post("/v1/switch", json={}))["code"] == "INVALID"
    assert error_of(api.get("/v1/diff", params={"from": "x"}))["code"] == "INVALID_REQUEST"
    assert "Traceback" not in api.get("/v1/diff", params={"from": 999_999_999}).text


def test_authentication(server, tb, tenant, new_tenant):
    url = server.url + "/v1/dirs"
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer"}):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401 and error_of(r)["code"] == "UNAUTHENTICATED"
        assert r.headers["www-authenticate"].startswith("Bearer")
    text, info = create_token(tb, tenant)
    wrong_secret = text[:-3] + ("AAA" if not text.endswith("AAA") else "BBB")
    other = new_tenant()
    wrong_tenant = text.replace(tenant.id.hex, other.id.hex)  # the id in the text only routes the lookup
    for bad in (wrong_secret, wrong_tenant):
        assert httpx.get(url, headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {text}"}).status_code == 200
    revoke_token(tb, info.id)
    assert httpx.get(url, headers={"Authorization": f"Bearer {text}"}).status_code == 401
    short, _ = create_token(tb, tenant, expires_days=0.3 / 86400)
    time.sleep(0.5)
    assert httpx.get(url, headers={"Authorization": f"Bearer {short}"}).status_code == 401
    gone = new_tenant()
    doomed, _ = create_token(tb, gone)
    tb.delete_tenant(gone)
    assert httpx.get(url, headers={"Authorization": f"Bearer {doomed}"}).status_code == 401
    assert httpx.get(server.url + "/healthz").status_code == 200  # public
    assert "/v1/files/{path}" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_read_only_and_admin_tokens(server, tb, tenant, fs):
    fs.write_file("/r.txt", b"readable")
    with client(server, tb, tenant, read_only=True) as ro:
        assert ro.get("/v1/files/r.txt").content == b"readable"
        writes = [
            ro.put("/v1/files/new.txt", content=b"x"),
            ro.post("/v1/mkdir", json={"path": "/m"}),
            ro.delete("/v1/files/r.txt"),
            ro.post("/v1/rename", json={"src": "/r.txt", "dst": "/s.txt"}),
            ro.post("/v1/checkpoints", json={}),
            ro.post("/v1/switch", json={"layer": 1}),
            ro.post("/v1/import", content=b""),
        ]
        for r in writes:
            assert r.status_code == 403 and error_of(r)["code"] == "READ_ONLY_TOKEN", r.text
        assert fs.listdir("/") == ["r.txt"]
    with client(server, tb, tenant) as user:
        assert error_of(user.get("/v1/tenants"))["code"] == "NOT_ADMIN"
    with client(server, tb, None, admin=True) as admin:
        assert error_of(admin.get("/v1/files/r.txt"))["code"] == "ADMIN_TOKEN"
        name = f"adm-{uuid.uuid4().hex[:8]}"
        made = admin.post("/v1/tenants", json={"name": name, "quota_bytes": 1 << 20})
        assert made.status_code == 201 and made.json()["quota_bytes"] == 1 << 20
        assert name in [t["name"] for t in admin.get("/v1/tenants").json()]
        assert admin.delete(f"/v1/tenants/{name}").status_code == 204
        assert error_of(admin.get(f"/v1/tenants/{name}"))["code"] == "NO_TENANT"


HOSTILE_PATHS = [
    "../{b}/secret",
    "%2e%2e/{b}/secret",
    "..%2f{b}%2fsecret",
    "/{b}/secret",
    "//{b}//secret",
    "secret%00.txt",
    ".tarbox/layers",
    "%2etarbox/layers",
    "x" * 300,
    "a/" * 3000,
]


def test_tenants_are_isolated(server, tb, new_tenant):
    a, b = new_tenant(), new_tenant()
    fb = tb.filesystem(b)
    fb.write_file("/secret", b"B's secret")
    with client(server, tb, a) as api:
        for raw in HOSTILE_PATHS:
            p = raw.format(b=b.name)
            answers = [
                api.get(f"/v1/files/{p}"),
                api.head(f"/v1/files/{p}"),
                api.get(f"/v1/stat/{p}"),
                api.get(f"/v1/dirs/{p}"),
                api.put(f"/v1/files/{p}", content=b"overwrite"),
                api.delete(f"/v1/files/{p}", params={"recursive": 1}),
                api.post("/v1/rename", json={"src": "/secret", "dst": f"/{p}"}),
                api.get(f"/v1/export/{p}"),
                api.get("/v1/dirs", params={"tenant": b.name, "tenant_id": str(b.id)}),
            ]
            for r in answers:
                assert r.status_code < 500, (p, r.status_code, r.text)
                assert b"B's secret" not in r.content
                if r.status_code >= 400 and r.request.method != "HEAD":
                    assert set(error_of(r)) == {"code", "errno", "message"}
        nul = api.get("/v1/files/secret%00.txt")
        # refused by the API's description (a path holds no NUL) before the filesystem sees it
        assert (
            nul.status_code == 400 and error_of(nul)["code"] == "INVALID_REQUEST" and "path" in error_of(nul)["message"]
        )
        assert error_of(api.get("/v1/files/.tarbox/layers"))["code"] == "ENOENT"
        assert error_of(api.get("/v1/files/" + "x" * 300))["code"] == "ENAMETOOLONG"
    assert fb.read_file("/secret") == b"B's secret" and fb.listdir("/") == ["secret"]


def test_body_limits(db_url, tmp_path, tb, tenant, fs):
    s = start_server(db_url, tmp_path, "--max-upload", "1000000")
    try:
        with client(s, tb, tenant) as api:
            r = api.put("/v1/files/big", content=b"x" * 1_000_001)
            assert r.status_code == 413 and error_of(r)["code"] == "TOO_LARGE"

            def chunked():
                for _ in range(20):
                    yield b"y" * 100_000

            r = api.put("/v1/files/big", content=chunked())  # no Content-Length: counted as it arrives
            assert r.status_code == 413
            assert not fs.exists("/big") and fs.listdir("/") == []
            r = api.post("/v1/runs", json={"python": "x" * (70 << 20)})
            assert r.status_code == 413
    finally:
        s.stop()


def test_layers_diff_and_audit(api, fs, view):
    api.put("/v1/files/w/a.txt", content=b"one\n", params={"parents": 1})
    cp = api.post("/v1/checkpoints", json={"message": "before"}).json()
    api.put("/v1/files/w/a.txt", content=b"two\n")
    api.put("/v1/files/w/b.txt", content=b"new\n")
    changes = api.get("/v1/diff", params={"from": cp["id"], "patch": 1}).json()
    assert {(c["path"], c["kind"]) for c in changes} == {("/w/a.txt", "modified"), ("/w/b.txt", "added")}
    assert "+two" in next(c for c in changes if c["path"] == "/w/a.txt")["patch"]
    layers = api.get("/v1/layers").json()
    assert cp["id"] in [layer["id"] for layer in layers] and all("counts" in layer for layer in layers)
    assert api.post("/v1/switch", json={"layer": cp["id"]}).status_code == 200
    assert view().read_file("/w/a.txt") == b"one\n" and not view().exists("/w/b.txt")
    assert api.post("/v1/branches", json={"name": "exp", "from": cp["id"]}).status_code == 201
    assert "exp" in api.get("/v1/branches").json()["branches"]
    assert api.post("/v1/switch", json={"branch": "main"}).status_code == 200
    assert view().read_file("/w/a.txt") == b"two\n"
    assert api.delete("/v1/branches/exp").status_code == 204
    records = api.get("/v1/audit", params={"path": "/w/*"}).json()
    assert [(r["op"], r["path"], r["bytes"]) for r in records] == [
        ("write", "/w/a.txt", 4),
        ("write", "/w/a.txt", 4),
        ("write", "/w/b.txt", 4),
    ]  # an upload is one write of its target; the hidden name it streamed to stays out


def test_runs_of_a_module_and_of_python(api, fs):
    wasm = guest("writeback")
    r = api.post(
        "/v1/runs",
        json={
            "wasm_base64": b64(wasm),
            "args": ["close-then-wait", "/workspace/out.txt", "0"],
            "checkpoint_before": True,
        },
    )
    body = r.json()
    assert r.status_code == 200, body
    assert (body["status"], body["exit_code"], body["stdout"]) == ("exited", 0, "closed\n")
    assert fs.read_file("/workspace/out.txt") == b"hello from the run\n"
    assert {"op": "create", "path": "/workspace/out.txt"} in body["changed"]
    assert body["checkpoint"] is not None and body["run_id"]
    fs.write_file("/workspace/in.txt", b"41")
    py = api.post(
        "/v1/runs",
        json={"python": "import sys; n = int(open('/workspace/in.txt').read()); print(n + 1); sys.exit(3)"},
    ).json()
    assert (py["exit_code"], py["stdout"]) == (3, "42\n")
    bad = api.post("/v1/runs", json={"wasm_base64": b64(b"\0asm garbage")}).json()
    assert bad["status"] == "invalid_module" and bad["exit_code"] == -1
    assert error_of(api.post("/v1/runs", json={"wasm_base64": "!!"}))["code"] == "INVALID_REQUEST"  # not base64
    assert error_of(api.post("/v1/runs", json={}))["code"] == "INVALID"
    fs.write_file("/workspace/g.wasm", wasm)
    by_path = api.post("/v1/runs", json={"wasm_path": "/workspace/g.wasm", "args": ["nothing"]}).json()
    assert by_path["status"] == "exited" and by_path["exit_code"] == 2

    # the run log: every run above, newest first, each with its outcome and output
    logged = api.get("/v1/runs").json()
    assert [(x["run_id"], x["status"], x["exit_code"]) for x in logged[:2]] == [
        (by_path["run_id"], "exited", 2),
        (py["run_id"], "exited", 3),
    ]
    assert body["run_id"] in {x["run_id"] for x in logged}
    one = api.get(f"/v1/runs/{body['run_id']}").json()
    assert (one["stdout"], one["stdout_bytes"], one["checkpoint"]) == ("closed\n", 7, body["checkpoint"])
    assert {"op": "create", "path": "/workspace/out.txt"} in one["changed"]
    older = api.get("/v1/runs", params={"limit": 1, "before": logged[0]["started_at"]}).json()
    assert [x["run_id"] for x in older] == [logged[1]["run_id"]]
    assert error_of(api.get("/v1/runs/not-a-run"))["code"] == "NO_RUN"


def test_run_output_streams_as_server_sent_events(api):
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
    events, first_at, t0 = [], None, time.monotonic()
    with api.stream("POST", "/v1/runs", json={"python": code, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, line.split(":", 1)[1].strip()))
                if first_at is None and kind == "stdout":
                    first_at = time.monotonic() - t0
    out = "".join(d + "\n" if not d.endswith("\n") else d for k, d in events if k == "stdout")
    assert "tick 0" in out and "tick 2" in out
    result = json.loads(next(d for k, d in events if k == "result"))
    assert result["exit_code"] == 0 and "tick 2" in result["stdout"]
    assert events[-1][0] == "result"


def test_tar_export_and_import(api, fs):
    fs.makedirs("/proj/src")
    fs.write_file("/proj/src/main.py", b"print(1)\n")
    fs.write_file("/proj/big.bin", os.urandom(2 << 20))
    fs.symlink("src/main.py", "/proj/link")
    r = api.get("/v1/export/proj")
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content)) as t:
        names = sorted(m.name for m in t.getmembers())
        assert {"src/main.py", "big.bin", "link"} <= set(names)
        assert t.extractfile("big.bin").read() == fs.read_file("/proj/big.bin")
    zst = api.get("/v1/export/proj", params={"compression": "zst"})
    assert zst.status_code == 200 and zst.content[:4] == b"\x28\xb5\x2f\xfd"
    imported = api.post("/v1/import/copy", content=r.content).json()
    assert imported["files"] >= 2
    assert fs.read_file("/copy/big.bin") == fs.read_file("/proj/big.bin") and fs.readlink("/copy/link") == "src/main.py"
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as t:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    bad = api.post("/v1/import/copy2", content=evil.getvalue())
    assert 400 <= bad.status_code < 500 and not fs.exists("/escape")
    assert error_of(api.get("/v1/export/nowhere"))["code"] == "ENOENT"


def _raw_request(url: str, head: bytes, body: bytes) -> None:
    """Send a request's head and part of its body, then vanish (a client that dies)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(head + body)
        time.sleep(0.3)


def test_a_client_that_disconnects_mid_upload_leaves_nothing(server, tb, tenant, fs):
    text, _ = create_token(tb, tenant)
    fs.write_file("/keep.txt", b"old content")
    for target in ("new.bin", "keep.txt"):
        head = (
            f"PUT /v1/files/{target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {text}\r\n"
            f"Content-Length: {8 << 20}\r\n\r\n"
        ).encode()
        _raw_request(server.url, head, os.urandom(3 << 20))
    deadline = time.monotonic() + 10
    while fs.listdir("/") != ["keep.txt"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fs.listdir("/") == ["keep.txt"]  # no new file, no upload left behind
    assert fs.read_file("/keep.txt") == b"old content"


def test_kill_9_mid_upload_shows_nothing_partial(db_url, tmp_path, tb, tenant, fs):
    s = start_server(db_url, tmp_path)
    text, _ = create_token(tb, tenant)
    fs.write_file("/keep.txt", b"old content")
    host, port = s.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"PUT /v1/files/keep.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {text}\r\n"
            f"Content-Length: {64 << 20}\r\n\r\n".encode()
        )
        for _ in range(12):
            sock.sendall(os.urandom(1 << 20))
        time.sleep(0.5)
        s.stop(signal.SIGKILL)
    other = tb.filesystem(tenant)
    assert other.read_file("/keep.txt") == b"old content"
    for name in other.listdir("/"):
        assert name == "keep.txt" or other.stat("/" + name).size == 0  # at most an empty upload stub
    fsck = subprocess.run(["tarbox", "fsck"], env={**os.environ, "TARBOX_DATABASE_URL": db_url}, capture_output=True)
    assert fsck.returncode == 0, fsck.stdout.decode()[-2000:]


def wait_until_running(tb, tenant, path: str = "/workspace/w", timeout: float = 60) -> None:
    """Until the writeback guest has written and closed ``path``: its run is then in
    progress (sleeping), whatever the machine's speed."""
    deadline = time.monotonic() + timeout
    while not tb.filesystem(tenant).exists(path):
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)


def test_sigterm_lets_a_run_finish_and_commits(db_url, tmp_path, tb, tenant, fs):
    s = start_server(db_url, tmp_path)
    with client(s, tb, tenant) as api:
        wasm = b64(guest("writeback"))
        results = []
        t = threading.Thread(
            target=lambda: results.append(
                api.post("/v1/runs", json={"wasm_base64": wasm, "args": ["close-then-wait", "/workspace/w", "1.5"]})
            )
        )
        t.start()
        wait_until_running(tb, tenant)
        assert s.stop(signal.SIGTERM) == 0
        t.join()
    assert results[0].status_code == 200 and results[0].json()["exit_code"] == 0
    assert tb.filesystem(tenant).read_file("/workspace/w") == b"hello from the run\n"


def test_revoked_while_a_long_request_runs(server, tb, tenant):
    text, info = create_token(tb, tenant)
    headers = {"Authorization": f"Bearer {text}"}
    wasm = b64(guest("writeback"))
    results = []
    t = threading.Thread(
        target=lambda: results.append(
            httpx.post(
                server.url + "/v1/runs",
                json={"wasm_base64": wasm, "args": ["close-then-wait", "/workspace/w", "1.5"]},
                headers=headers,
                timeout=60,
            )
        )
    )
    t.start()
    wait_until_running(tb, tenant)
    revoke_token(tb, info.id)
    assert httpx.get(server.url + "/v1/dirs", headers=headers).status_code == 401  # at once for new requests
    t.join()
    assert results[0].status_code == 200  # authorized when it began: it finishes (docs/server.md)


def test_runs_per_token_are_limited(db_url, tmp_path, tb, tenant):
    s = start_server(db_url, tmp_path, "--runs-per-token", "1")
    try:
        with client(s, tb, tenant) as api:
            wasm = b64(guest("writeback"))
            slow = threading.Thread(
                target=lambda: api.post(
                    "/v1/runs", json={"wasm_base64": wasm, "args": ["close-then-wait", "/workspace/w", "1.5"]}
                )
            )
            slow.start()
            wait_until_running(tb, tenant)
            r = api.post("/v1/runs", json={"wasm_base64": wasm, "args": ["nothing"]})
            assert r.status_code == 429 and error_of(r)["code"] == "TOO_MANY_RUNS"
            slow.join()
            assert api.post("/v1/runs", json={"wasm_base64": wasm, "args": ["nothing"]}).status_code == 200
    finally:
        s.stop()


def test_fifty_concurrent_clients(server, tb, tenant, fs):
    """Reads, writes and runs from 50 clients at once; the final tree is exactly theirs."""
    wasm = b64(guest("writeback"))
    fs.makedirs("/workspace")

    def one(i: int) -> None:
        with client(server, tb, tenant) as api:
            for j in range(4):
                r = api.put(f"/v1/files/c{i}/f{j}", content=f"{i}:{j}".encode(), params={"parents": 1})
                assert r.status_code == 201, r.text
                assert api.get(f"/v1/files/c{i}/f{j}").content == f"{i}:{j}".encode()
            if i % 5 == 0:
                args = ["close-then-wait", f"/workspace/r{i}", "0"]
                r = api.post("/v1/runs", json={"wasm_base64": wasm, "args": args})
                assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
            assert len(api.get(f"/v1/dirs/c{i}").json()["entries"]) == 4

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(one, range(50)))
    view = tb.filesystem(tenant)
    assert sorted(n for n in view.listdir("/") if n.startswith("c")) == sorted(f"c{i}" for i in range(50))
    assert all(view.read_file(f"/c{i}/f{j}") == f"{i}:{j}".encode() for i in range(50) for j in range(4))
    assert sorted(view.listdir("/workspace")) == sorted(f"r{i}" for i in range(0, 50, 5))


def test_python_sessions_over_rest(server, tb, tenant, fs):
    """/v1/sessions: a session keeps state across turns, belongs to the token that opened
    it (another token of the same tenant gets 404), is bounded per token, refuses bad
    names and a cwd outside /workspace, and after DELETE answers 410 with the reason."""
    fs.makedirs("/workspace/sub")
    with client(server, tb, tenant) as api, client(server, tb, tenant) as other:
        r = api.post("/v1/sessions", json={"name": "nb", "cwd": "/workspace/sub", "env": {"MODE": "x"}})
        assert r.status_code == 201 and r.json()["session"] == "nb", r.text
        assert api.post("/v1/sessions", json={"name": "nb"}).json()["error"]["code"] == "SESSION_EXISTS"
        r = api.post("/v1/sessions/nb/turns", json={"code": "import os\nn = 1\nopen('t.txt', 'w').write(os.getcwd())"})
        assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
        assert fs.read_file("/workspace/sub/t.txt") == b"/workspace/sub"  # committed before the answer
        assert {"op": "create", "path": "/workspace/sub/t.txt"} in r.json()["changed"]
        r = api.post(
            "/v1/sessions/nb/turns", json={"code": "n += 1\nprint(n, os.environ['MODE'], input())", "stdin": "in"}
        )
        assert r.json()["stdout"] == "2 x in\n", r.text
        assert [s["session"] for s in api.get("/v1/sessions").json()] == ["nb"]
        assert api.get("/v1/sessions/nb").json()["turns"] == 2
        assert other.get("/v1/sessions").json() == []
        assert other.post("/v1/sessions/nb/turns", json={"code": "n"}).status_code == 404
        assert other.delete("/v1/sessions/nb").status_code == 404
        assert api.post("/v1/sessions", json={"name": "../x"}).status_code == 400
        assert error_of(api.post("/v1/sessions", json={"cwd": "/etc"}))["code"] == "INVALID_PATH"
        small = api.post("/v1/sessions", json={"memory_limit": 65536})  # below the interpreter's own size
        assert small.status_code == 422 and error_of(small)["code"] == "SESSION_FAILED", small.text
        extra = [api.post("/v1/sessions", json={}) for _ in range(4)]
        assert [x.status_code for x in extra] == [201, 201, 201, 429]  # four per token, nb included
        assert extra[-1].json()["error"]["code"] == "TOO_MANY_SESSIONS"
        for x in extra[:3]:
            assert api.delete(f"/v1/sessions/{x.json()['session']}").status_code == 204
        assert api.delete("/v1/sessions/nb").status_code == 204
        r = api.post("/v1/sessions/nb/turns", json={"code": "n"})
        assert r.status_code == 410 and "closed" in error_of(r)["message"]


@pytest.mark.skipif(__import__("tarbox.sandbox").sandbox.unavailable_reason() is not None, reason="no sandbox here")
def test_native_commands_over_rest(server, tb, tenant, fs, new_tenant):
    """POST /v1/exec: a native command over the token's tenant, committed when it ends;
    bad input refused before anything runs; a read-only token and another tenant's
    files out of reach."""
    fs.makedirs("/workspace")
    fs.write_file("/workspace/in.txt", b"3 4\n")
    other = new_tenant()
    tb.filesystem(other).makedirs("/workspace")
    tb.filesystem(other).write_file("/workspace/secret", b"s")
    with client(server, tb, tenant) as api:
        r = api.post("/v1/exec", json={"command": "read a b < in.txt; echo $((a * b)) | tee out.txt; ls /workspace"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["status"], got["exit_code"], got["stdout"]) == ("exited", 0, "12\nin.txt\nout.txt\n"), got
        assert got["changed"] == ["/workspace/out.txt"] and got["checkpoint"] is not None
        assert tb.filesystem(tenant).read_file("/workspace/out.txt") == b"12\n"
        r = api.post("/v1/exec", json={"command": ["wc", "-c"], "stdin": "hello", "cwd": "/workspace"})
        assert r.json()["stdout"].split() == ["5"]
        r = api.post("/v1/exec", json={"command": "exit 3"})
        assert (r.status_code, r.json()["status"], r.json()["exit_code"]) == (200, "exited", 3)
        assert error_of(api.post("/v1/exec", json={"command": ["echo", "a\u0000b"]}))["code"] == "INVALID_REQUEST"
        assert error_of(api.post("/v1/exec", json={"command": "true", "cwd": "/etc"}))["code"] == "INVALID_PATH"
        assert error_of(api.post("/v1/exec", json={"command": "true", "cwd": "/workspace/../etc"}))["code"] == (
            "INVALID_PATH"
        )
        assert error_of(api.post("/v1/exec", json={"command": []}))["code"] == "INVALID_REQUEST"
        assert error_of(api.post("/v1/exec", json={"command": ""}))["code"] == "INVALID_REQUEST"
        r = api.post("/v1/exec", json={"command": ["ls", "/"]})
        assert set(r.json()["stdout"].split()) <= {
            "bin",
            "dev",
            "etc",
            "lib",
            "lib32",
            "lib64",
            "libx32",
            "proc",
            "sbin",
            "tmp",
            "usr",
            "workspace",
        }
        runs = api.get("/v1/runs").json()
        assert runs[0]["command"] == "exec: ls /" and runs[0]["status"] == "exited"
    with client(server, tb, tenant, read_only=True) as ro:
        r = ro.post("/v1/exec", json={"command": "touch x"})
        assert r.status_code == 403 and error_of(r)["code"] == "READ_ONLY_TOKEN"
    assert not tb.filesystem(tenant).exists("/workspace/x")


@pytest.mark.skipif(__import__("tarbox.sandbox").sandbox.unavailable_reason() is not None, reason="no sandbox here")
def test_a_tokens_network_allow_list_is_its_own(server, tb, tenant):
    """A token made with an allow-list lets its native runs reach those destinations and
    no others; another token of the same tenant gets no network; a request cannot ask
    for more."""
    with web_server_off_loopback() as (addr, port):
        _a_tokens_network_allow_list_is_its_own(server, tb, tenant, addr, port)


def _a_tokens_network_allow_list_is_its_own(server, tb, tenant, addr, port):
    url = f"http://{addr}:{port}/"
    fetch = ["python3", "-c", f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read())"]
    with pytest.raises(ValueError):
        create_token(tb, tenant, allow_net=["no port"])
    allowed, info = create_token(tb, tenant, allow_net=[f"{addr}:{port}"])
    assert info.to_dict()["allow_net"] == [f"{addr}:{port}"]
    plain, _ = create_token(tb, tenant)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {allowed}"}, timeout=60) as c:
        r = c.post("/v1/exec", json={"command": fetch})
        assert (r.json()["exit_code"], r.json()["stdout"]) == (0, "b'hello /'\n"), r.json()
        other = socket.create_server((addr, 0))
        elsewhere = f"{addr}:{other.getsockname()[1]}"
        try:  # a field the body does not have widens nothing (it is ignored)
            code = f"import urllib.request; urllib.request.urlopen('http://{elsewhere}/', timeout=5)"
            ask = ["python3", "-c", code]
            wider = c.post("/v1/exec", json={"command": ask, "allow_net": [elsewhere], "network": [elsewhere]})
        finally:
            other.close()
        assert wider.json()["exit_code"] != 0 and "403" in wider.json()["stderr"], wider.json()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {plain}"}, timeout=60) as c:
        r = c.post("/v1/exec", json={"command": fetch})
        assert r.json()["exit_code"] != 0 and "URLError" in r.json()["stderr"]
