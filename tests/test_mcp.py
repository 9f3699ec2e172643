"""The MCP server with the ``mcp`` SDK's own client: over streamable HTTP against a real
``tarbox serve`` process (tokens in the Authorization header), and over stdio by
spawning ``tarbox mcp``. The agent's whole loop: write, run Python that reads and
writes, checkpoint, diff, roll back; read-only tokens; errors; isolation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tarbox.sandbox import unavailable_reason
from tarbox.server.mcp import ALL_TOOLS, READ_TOOLS
from tarbox.tokens import create_token


def over_http(server, token: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return Client(streamable_http_client(server.url + "/mcp", http_client=http))


def value(result):
    """A tool's answer: its JSON text (tools answer with JSON), or the error text."""
    text = result.content[0].text if result.content else ""
    if result.is_error:
        return text
    return json.loads(text)


async def call(client: Client, tool: str, **args):
    return value(await client.call_tool(tool, args))


def test_an_agent_loop_over_http(server, tb, tenant):
    """The issue's acceptance test: write a file, run Python that reads it and writes
    another, checkpoint, diff, roll back; each step checked in the filesystem itself."""
    token, _ = create_token(tb, tenant)

    async def agent():
        async with over_http(server, token) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == set(ALL_TOOLS) - ({"bash"} if unavailable_reason() else set())
            await call(c, "write_file", path="/workspace/data.txt", content="3\n4\n5\n")
            cp = await call(c, "checkpoint", message="before the run")
            code = (
                "nums = [int(x) for x in open('/workspace/data.txt')]\n"
                "open('/workspace/sum.txt', 'w').write(str(sum(nums)))\n"
                "print('summed', len(nums))\n"
            )
            run = await call(c, "run_python", code=code)
            assert (run["exit_code"], run["stdout"]) == (0, "summed 3\n"), run
            assert {"op": "create", "path": "/workspace/sum.txt"} in run["changed"]
            assert (await call(c, "read_file", path="/workspace/sum.txt"))["text"] == "12"
            changes = (await call(c, "diff", from_layer=cp["id"]))["changes"]
            assert [(x["path"], x["kind"]) for x in changes] == [("/workspace/sum.txt", "added")]
            back = await call(c, "rollback", layer=cp["id"])
            assert back["switched_to"] == cp["id"] and back["branch"] is None
            missing = await c.call_tool("read_file", {"path": "/workspace/sum.txt"})
            assert missing.is_error and "ENOENT" in value(missing) and "errno 2" in value(missing)
            log = (await call(c, "log"))["layers"]
            assert any(layer["message"] == "before the run" for layer in log)
            # the agent looks back at its run: the log has it, with its output
            recent = (await call(c, "runs"))["runs"]
            assert (recent[0]["run_id"], recent[0]["exit_code"]) == (run["run_id"], 0)
            again = await call(c, "runs", run_id=run["run_id"])
            assert again["stdout"] == "summed 3\n" and again["changed"] == run["changed"]

    asyncio.run(agent())
    view = tb.filesystem(tenant)
    assert view.read_file("/workspace/data.txt") == b"3\n4\n5\n" and not view.exists("/workspace/sum.txt")


def test_file_tools(server, tb, tenant):
    token, _ = create_token(tb, tenant)
    fs = tb.filesystem(tenant)
    fs.makedirs("/workspace/src/pkg")
    fs.write_file("/workspace/src/pkg/a.py", b"def f():\n    return 1\n")
    fs.write_file("/workspace/src/b.py", b"x = f()\ny = 2\n")
    fs.write_file("/workspace/blob.bin", bytes(range(256)))

    async def session():
        async with over_http(server, token) as c:
            found = (await call(c, "glob", pattern="*.py"))["paths"]
            assert sorted(found) == ["/workspace/src/b.py", "/workspace/src/pkg/a.py"]
            assert (await call(c, "glob", pattern="src/*.py"))["paths"] == ["/workspace/src/b.py"]
            hits = (await call(c, "grep", pattern=r"f\(\)"))["matches"]
            assert {(h["path"], h["line"]) for h in hits} == {
                ("/workspace/src/pkg/a.py", 1),
                ("/workspace/src/b.py", 1),
            }
            edited = await c.call_tool(
                "edit_file", {"path": "/workspace/src/b.py", "old_string": "y = 2", "new_string": "y = 3"}
            )
            assert not edited.is_error
            ambiguous = await c.call_tool(
                "edit_file", {"path": "/workspace/src/b.py", "old_string": "=", "new_string": "!"}
            )
            assert ambiguous.is_error and "exactly once" in value(ambiguous)
            part = await call(c, "read_file", path="/workspace/src/b.py", offset=4, limit=3)
            assert part["text"] == "f()" and part["size"] == len(b"x = f()\ny = 3\n")
            blob = await call(c, "read_file", path="/workspace/blob.bin")
            assert "base64" in blob and blob["size"] == 256
            listing = await call(c, "list_dir", path="/workspace/src")
            assert [e["name"] for e in listing["entries"]] == ["b.py", "pkg"]
            await call(c, "mkdir", path="/workspace/new/deep")
            await call(c, "rename", src="/workspace/blob.bin", dst="/workspace/new/deep/blob.bin")
            assert (await call(c, "stat", path="/workspace/new/deep/blob.bin"))["size"] == 256
            await call(c, "remove", path="/workspace/new", recursive=True)
            bad = await c.call_tool("grep", {"pattern": "("})
            assert bad.is_error and "regular expression" in value(bad)

    asyncio.run(session())
    view = tb.filesystem(tenant)
    assert view.read_file("/workspace/src/b.py") == b"x = f()\ny = 3\n" and not view.exists("/workspace/new")


def test_read_only_tokens_see_only_read_tools(server, tb, tenant):
    token, _ = create_token(tb, tenant, read_only=True)
    tb.filesystem(tenant).write_file("/r.txt", b"r")

    async def session():
        async with over_http(server, token) as c:
            assert {t.name for t in (await c.list_tools()).tools} == set(READ_TOOLS)
            refused = await c.call_tool("write_file", {"path": "/x", "content": "no"})
            assert refused.is_error
            assert (await call(c, "read_file", path="/r.txt"))["text"] == "r"

    asyncio.run(session())
    assert not tb.filesystem(tenant).exists("/x")


def test_tokens_and_tenants_over_mcp(server, tb, new_tenant):
    a, b = new_tenant(), new_tenant()
    tb.filesystem(b).write_file("/secret", b"B")
    token, info = create_token(tb, a)

    async def session():
        async with over_http(server, token) as c:
            for path in ("/secret", "../" + b.name + "/secret", "/.tarbox/layers", "/secret\0"):
                r = await c.call_tool("read_file", {"path": path})
                assert r.is_error and value(r) != "B"
            assert (await call(c, "glob", pattern="*", path="/"))["paths"] == []

    asyncio.run(session())
    headers = {"Authorization": "Bearer tbx_bad", "Accept": "application/json, text/event-stream"}
    r = httpx.post(server.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
    assert r.status_code == 401
    good = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    for junk in (b"{not json", b"[]", b'{"jsonrpc": "2.0", "id": 1, "method": "no/such"}'):
        r = httpx.post(server.url + "/mcp", content=junk, headers={**good, "Content-Type": "application/json"})
        assert r.status_code < 500, r.text


def test_stdio_server_spawned_by_the_sdk_client(db_url, tb, tenant):
    exe = shutil.which("tarbox")
    params = StdioServerParameters(
        command=exe,
        args=["--tenant", tenant.name, "mcp", "--tools", "write_file,read_file,list_dir"],
        env={**os.environ, "TARBOX_DATABASE_URL": db_url},
    )

    async def session():
        async with Client(params) as c:
            assert {t.name for t in (await c.list_tools()).tools} == {"write_file", "read_file", "list_dir"}
            await call(c, "write_file", path="/workspace/stdio.txt", content="over stdio")
            assert (await call(c, "read_file", path="/workspace/stdio.txt"))["text"] == "over stdio"

    asyncio.run(session())
    assert tb.filesystem(tenant).read_file("/workspace/stdio.txt") == b"over stdio"

    async def read_only():
        ro = StdioServerParameters(command=exe, args=["-t", tenant.name, "mcp", "--read-only"], env=params.env)
        async with Client(ro) as c:
            assert {t.name for t in (await c.list_tools()).tools} == set(READ_TOOLS)

    asyncio.run(read_only())


def test_run_python_takes_stdin_env_and_cwd_and_reports_failure(server, tb, tenant):
    """run_python as an agent uses it: stdin, environment and a working directory beneath
    /workspace; a non-zero exit is an error result; a cwd outside the workspace is refused."""
    token, _ = create_token(tb, tenant)
    fs = tb.filesystem(tenant)
    fs.makedirs("/workspace/data")
    fs.write_file("/workspace/data/in.csv", b"a,b\n1,2\n3,4\n")

    async def agent():
        async with over_http(server, token) as c:
            code = (
                "import os, sys, pandas as pd\n"
                "df = pd.read_csv('in.csv')\n"
                "print(os.getcwd(), os.environ['MODE'], sys.stdin.read().strip(), int(df.b.sum()))\n"
            )
            r = await c.call_tool(
                "run_python", {"code": code, "stdin": "from stdin\n", "env": {"MODE": "test"}, "cwd": "/workspace/data"}
            )
            shown = value(r)
            assert not r.is_error and shown["stdout"] == "/workspace/data test from stdin 6\n", shown
            r = await c.call_tool("run_python", {"code": "import sys; print('partial'); sys.exit(4)"})
            shown = json.loads(r.content[0].text)
            assert r.is_error and (shown["exit_code"], shown["stdout"]) == (4, "partial\n")
            r = await c.call_tool("run_python", {"code": "raise KeyError('gone')"})
            assert r.is_error and "KeyError: 'gone'" in json.loads(r.content[0].text)["stderr"]
            r = await c.call_tool("run_python", {"code": "print(1)", "cwd": "/workspace/../etc"})
            assert r.is_error and "cwd must be /workspace" in r.content[0].text

    asyncio.run(agent())


def test_run_python_sessions_and_images(server, tb, tenant):
    """run_python with ``session``: a variable lives across three calls; a session is the
    token's own (another token's call of the same name starts afresh); end_session ends
    it. A PNG the code saves comes back as image content, the picture matplotlib drew."""
    import base64
    import struct

    token, _ = create_token(tb, tenant)
    other, _ = create_token(tb, tenant)

    async def agent():
        async with over_http(server, token) as c, over_http(server, other) as o:
            for code in ("x = 1", "x += 1", "x * 10"):
                r = await c.call_tool("run_python", {"code": code, "session": "nb"})
                assert not r.is_error, r.content
            assert value(r)["stdout"] == "20\n"
            r = await o.call_tool("run_python", {"code": "x", "session": "nb"})
            assert r.is_error and "NameError" in json.loads(r.content[0].text)["stderr"]
            await c.call_tool("end_session", {"session": "nb"})
            r = await c.call_tool("run_python", {"code": "x", "session": "nb"})
            assert r.is_error and "NameError" in json.loads(r.content[0].text)["stderr"]  # a new interpreter
            code = (
                "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                "fig = plt.figure(figsize=(3, 2), dpi=40)\nplt.plot([0, 1], [1, 0])\nfig.savefig('plot.png')\n"
            )
            r = await c.call_tool("run_python", {"code": code})
            assert not r.is_error, value(r)
            images = [part for part in r.content if part.type == "image"]
            assert [i.mime_type for i in images] == ["image/png"] and value(r)["images"] == ["/workspace/plot.png"]
            png = base64.b64decode(images[0].data)
            assert png == tb.filesystem(tenant).read_file("/workspace/plot.png")
            assert struct.unpack(">II", png[16:24]) == (120, 80)  # IHDR: 3x2 inches at 40 dpi

    asyncio.run(agent())


@pytest.mark.skipif(unavailable_reason() is not None, reason="no sandbox here")
def test_bash_tool_runs_native_commands_and_rollback_undoes_them(server, tb, tenant):
    """The ``bash`` tool as an agent uses it: git over a file it wrote, a failing command
    as an error result, the checkpoint it took undone by ``rollback``; read-only tokens
    do not get it."""
    token, _ = create_token(tb, tenant)
    ro_token, _ = create_token(tb, tenant, read_only=True)

    async def agent():
        async with over_http(server, token) as c:
            await call(c, "write_file", path="/workspace/app.py", content="print('hi')\n")
            git = "git init -q && git add app.py && git -c user.name=a -c user.email=a@b commit -qm one"
            git += " && git log --oneline | wc -l"
            done = await call(c, "bash", command=git)
            assert (done["exit_code"], done["stdout"]) == (0, "1\n"), done
            assert "/workspace/.git/HEAD" in done["changed"]
            out = await call(c, "bash", command="python3 app.py && rm app.py")
            assert out["stdout"] == "hi\n"
            failed = await c.call_tool("bash", {"command": "ls missing"})
            assert failed.is_error and json.loads(failed.content[0].text)["exit_code"] == 2
            await call(c, "rollback", layer=out["checkpoint"])
            assert (await call(c, "read_file", path="/workspace/app.py"))["text"] == "print('hi')\n"
        async with over_http(server, ro_token) as c:
            assert "bash" not in {t.name for t in (await c.list_tools()).tools}

    asyncio.run(agent())
    assert tb.filesystem(tenant).is_dir("/workspace/.git")
