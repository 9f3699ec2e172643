"""The MCP server (the official ``mcp`` SDK): the tools an LLM agent uses on its
workspace, over streamable HTTP at ``/mcp`` (same tokens as the REST API) or over
stdio (``tarbox mcp -t TENANT``).

Each tool is a thin call into ``workspace.Workspace`` in a worker thread. Over
HTTP the request's verified token decides the tenant; over stdio the tenant and
read-only flag come from the command line. A read-only token is offered only the
read tools. Failures are tool errors naming the errno, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from tarbox.client import Tarbox
from tarbox.sandbox import unavailable_reason
from tarbox.server.auth import SCOPE_KEY
from tarbox.server.errors import ApiError, describe
from tarbox.server.sessions import Sessions
from tarbox.server.workers import CALL_SLOT, Workers
from tarbox.server.workspace import Limits, Workspace, text_or_base64
from tarbox.tokens import TokenInfo

READ_TOOLS = ("read_file", "list_dir", "stat", "glob", "grep", "log", "diff", "runs")
WRITE_TOOLS = (
    "write_file",
    "edit_file",
    "mkdir",
    "remove",
    "rename",
    "checkpoint",
    "rollback",
    "run_python",
    "end_session",
    "run_wasm",
    "bash",
)
ALL_TOOLS = READ_TOOLS + WRITE_TOOLS
RUN_TOOLS = ("run_python", "run_wasm", "end_session", "bash")  # in the server's run threads, under its run caps

# (destructive, idempotent) of each tool that writes; the read tools are neither. No tool
# reaches beyond the tenant's workspace (openWorldHint false): the sandbox has no network.
_WRITE_HINTS = {
    "write_file": (True, True),
    "edit_file": (True, False),
    "mkdir": (False, True),
    "remove": (True, True),
    "rename": (True, False),
    "checkpoint": (False, False),
    "rollback": (False, True),  # nothing is destroyed: the later layers stay
    "run_python": (True, False),
    "end_session": (False, True),
    "run_wasm": (True, False),
    "bash": (True, False),
}


def _hints(name: str) -> ToolAnnotations:
    if name in READ_TOOLS:
        return ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
    destructive, idempotent = _WRITE_HINTS[name]
    return ToolAnnotations(
        read_only_hint=False, destructive_hint=destructive, idempotent_hint=idempotent, open_world_hint=False
    )


def capped(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to about ``limit`` bytes of UTF-8, its head and tail kept with a marker
    between them; and whether anything was cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    half = limit // 2
    head = data[:half].decode("utf-8", "ignore")
    tail = data[-half:].decode("utf-8", "ignore")
    return f"{head}\n[... {len(data) - 2 * half} bytes left out: the run log has them ...]\n{tail}", True


def run_answer(result: dict, limit: int, images: list[dict] | None = None) -> CallToolResult:
    """A run as a tool result: ``isError`` unless it exited 0, and stdout/stderr capped
    to ``limit`` bytes each for the model's context (the run log keeps more: the
    ``runs`` tool with the run's id); ``images`` (``Workspace.images``) after the text."""
    shown = dict(result)
    if images:
        shown["images"] = [i["path"] for i in images]
    for name in ("stdout", "stderr"):
        shown[name], cut = capped(result[name], limit)
        if cut:
            shown[f"{name}_truncated"] = True
            shown[f"{name}_bytes"] = len(result[name].encode("utf-8"))
    failed = result["status"] != "exited" or result["exit_code"] != 0
    return CallToolResult(
        content=[
            TextContent(type="text", text=json.dumps(shown)),
            *(ImageContent(type="image", data=i["data"], mime_type=i["mime"]) for i in images or ()),
        ],
        structured_content=shown,
        is_error=failed,
    )


INSTRUCTIONS = """\
Tools on a Tarbox workspace: a versioned filesystem of your own, stored in PostgreSQL.
Paths are absolute (/workspace/...). Checkpoint before risky steps; `diff` shows what
changed since a checkpoint and `rollback` returns to it (nothing is ever destroyed).
`run_python` runs code in a WebAssembly sandbox that sees only /workspace (and a scratch /tmp)."""
BASH_INSTRUCTIONS = "\n`bash` runs shell commands (git, python3, pip, gcc, node) in a sandbox over /workspace."


def build(
    tb: Tarbox,
    limits: Limits,
    workers: Workers | None = None,
    *,
    fixed_token: TokenInfo | None = None,
    tools: tuple[str, ...] | None = None,
    sessions: Sessions | None = None,
) -> MCPServer:
    """An MCP server offering ``tools`` (default: all; only the read tools when
    ``fixed_token`` is read-only). Over HTTP the token comes with each request;
    ``fixed_token`` serves stdio, where the command line chose the tenant."""
    wanted = set(tools or ALL_TOOLS)
    if unavailable_reason() is not None:
        wanted.discard("bash")  # a tool that could only fail is not offered
    unknown = wanted - set(ALL_TOOLS)
    if unknown:
        raise ValueError(f"unknown tools: {', '.join(sorted(unknown))} (known: {', '.join(ALL_TOOLS)})")
    if fixed_token is not None and fixed_token.read_only:
        wanted &= set(READ_TOOLS)
    instructions = INSTRUCTIONS + (BASH_INSTRUCTIONS if "bash" in wanted else "")
    # the SDK configures the root logger at the level given: INFO would log every request
    server = MCPServer("tarbox", instructions=instructions, log_level="WARNING")

    def workspace(ctx: Context) -> Workspace:
        token = fixed_token
        if token is None:
            request = ctx.request_context.request
            token = request.scope.get(SCOPE_KEY) if request is not None else None
        if token is None:
            raise ToolError("not authenticated")
        return Workspace(tb, token, limits)

    runner = workers or Workers(limits)
    live = sessions or Sessions(limits)

    async def call(ctx: Context, name: str, fn: Callable[[Workspace], Any]) -> Any:
        try:
            ws = workspace(ctx)
            if name in WRITE_TOOLS and ws.read_only:
                raise ToolError(f"{name}: this token is read-only")
            if name in RUN_TOOLS:
                leave = CALL_SLOT.get()
                if leave is not None:
                    leave()  # the run's own caps apply from here
                if ws.tenant_id is None:
                    raise ToolError(f"{name}: this token is bound to no tenant")
                return await runner.run(ws.tenant_id, ws.token.id, lambda: fn(ws))
            return await anyio.to_thread.run_sync(lambda: fn(ws))
        except ToolError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a tool error
            _, code, message, errno = describe(exc)
            raise ToolError(f"{code}{f' (errno {errno})' if errno else ''}: {message}") from None

    def tool(fn):
        if fn.__name__ in wanted:
            server.tool(annotations=_hints(fn.__name__))(fn)
        return fn

    @tool
    async def read_file(
        path: Annotated[str, Field(description="absolute path, e.g. /workspace/notes.md")],
        ctx: Context,
        offset: Annotated[int, Field(ge=0, description="first byte to read")] = 0,
        limit: Annotated[int | None, Field(ge=1, description="bytes to read at most (default: to the end)")] = None,
    ) -> dict:
        """Read a file. Returns {"text": ...} for UTF-8 content, else {"base64": ...}, with the
        file's total size; use offset and limit to read a large file in pieces."""
        cap = min(limit or limits.read_limit, limits.read_limit)

        def read(ws: Workspace) -> dict:
            data = ws.read(path, offset, cap)
            return {**text_or_base64(data), "size": ws.stat(path)["size"], "offset": offset, "length": len(data)}

        return await call(ctx, "read_file", read)

    @tool
    async def write_file(
        path: Annotated[str, Field(description="absolute path; parent directories are created")],
        ctx: Context,
        content: Annotated[str, Field(description="the new content (text)")] = "",
        content_base64: Annotated[str | None, Field(description="binary content, base64 (instead of content)")] = None,
        append: Annotated[bool, Field(description="add to the end instead of replacing")] = False,
    ) -> dict:
        """Create or replace a file (or append to it). Returns the bytes written."""
        if content_base64 is not None:
            try:
                data = base64.b64decode(content_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ToolError(
                    "INVALID: content_base64 is not valid base64 (A-Z, a-z, 0-9, +, /, = padding)"
                ) from None
        else:
            data = content.encode()
        n = await call(ctx, "write_file", lambda ws: ws.write(path, data, append=append, parents=True))
        return {"path": path, "bytes_written": n}

    @tool
    async def edit_file(
        path: str,
        old_string: Annotated[str, Field(description="text that occurs exactly once in the file")],
        new_string: Annotated[str, Field(description="what replaces it")],
        ctx: Context,
    ) -> dict:
        """Replace one exact occurrence of old_string with new_string in a text file. Fails,
        changing nothing, unless old_string occurs exactly once (add context to make it unique)."""
        size = await call(ctx, "edit_file", lambda ws: ws.edit(path, old_string, new_string))
        return {"path": path, "size": size}

    @tool
    async def list_dir(
        ctx: Context,
        path: str = "/workspace",
        offset: Annotated[int, Field(ge=0)] = 0,
        limit: Annotated[int, Field(ge=1, le=10_000)] = 500,
    ) -> dict:
        """List a directory: name, type, size, mtime of each entry (paged: 'next' is the offset
        of the next page, or null)."""
        return await call(ctx, "list_dir", lambda ws: ws.list_dir(path, offset, limit))

    @tool
    async def stat(path: str, ctx: Context) -> dict:
        """Type, size, mode, link count and times of a path (symlinks followed)."""
        return await call(ctx, "stat", lambda ws: ws.stat(path))

    @tool
    async def mkdir(path: str, ctx: Context, parents: bool = True) -> dict:
        """Create a directory (and its parents, unless parents is false)."""
        return await call(ctx, "mkdir", lambda ws: (ws.mkdir(path, parents), ws.stat(path))[1])

    @tool
    async def remove(
        path: str, ctx: Context, recursive: Annotated[bool, Field(description="remove a directory tree")] = False
    ) -> dict:
        """Remove a file, a symlink or an empty directory (a whole tree with recursive)."""
        await call(ctx, "remove", lambda ws: ws.remove(path, recursive))
        return {"removed": path}

    @tool
    async def rename(src: str, dst: str, ctx: Context) -> dict:
        """Move or rename a path (replaces an existing file, as POSIX rename does)."""
        await call(ctx, "rename", lambda ws: ws.rename(src, dst))
        return {"renamed": src, "to": dst}

    @tool
    async def glob(
        pattern: Annotated[str, Field(description="e.g. *.py, src/**/*.md (* within a name, ** across directories)")],
        ctx: Context,
        path: str = "/workspace",
        limit: Annotated[int, Field(ge=1, le=100_000)] = 1000,
    ) -> dict:
        """Paths under path whose relative path matches pattern (a pattern without / matches
        names at any depth): {"paths": [...]}."""
        return {"paths": await call(ctx, "glob", lambda ws: ws.glob(pattern, path, limit))}

    @tool
    async def grep(
        pattern: Annotated[str, Field(description="a regular expression (RE2: Python's, no backreferences)")],
        ctx: Context,
        path: str = "/workspace",
        glob: Annotated[str | None, Field(description="only files matching this glob")] = None,
        max_results: Annotated[int, Field(ge=1, le=10_000)] = 100,
    ) -> dict:
        """Lines matching pattern in the text files under path: {"matches": [{path, line, text}]}."""
        return {"matches": await call(ctx, "grep", lambda ws: ws.grep(pattern, path, max_results, glob))}

    @tool
    async def checkpoint(ctx: Context, message: str = "") -> dict:
        """Freeze the workspace as it is now (O(1), nothing copied); returns the layer id to
        diff against or roll back to later."""
        return await call(ctx, "checkpoint", lambda ws: ws.checkpoint(message))

    @tool
    async def log(ctx: Context) -> dict:
        """The history: {"layers": [...]}, every layer (checkpoint) with its message, time and
        counts of files added, modified and deleted."""
        return {"layers": await call(ctx, "log", lambda ws: ws.layers())}

    @tool
    async def diff(
        ctx: Context,
        from_layer: Annotated[int, Field(description="a checkpoint's layer id")],
        to_layer: Annotated[int | None, Field(description="another layer (default: the current state)")] = None,
        patch: Annotated[bool, Field(description="include unified diffs of text files")] = False,
    ) -> dict:
        """What changed between two layers: {"changes": [...]}, each path added, modified or deleted."""
        return {"changes": await call(ctx, "diff", lambda ws: ws.diff(from_layer, to_layer, patch))}

    @tool
    async def runs(
        ctx: Context,
        run_id: Annotated[str | None, Field(description="one run's id: its output and changed files")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="how many recent runs")] = 20,
        offset: Annotated[int, Field(ge=0, description="with run_id: first byte of the output to show")] = 0,
    ) -> dict:
        """Earlier sandbox runs of this workspace, newest first: {"runs": [...]}, each with its
        status, exit code, start and duration; with run_id, that run with its stdout and stderr
        (the log keeps the first MiB of each; shown from offset, 64 KiB at a time:
        stdout_next is the offset of the rest) and the files it changed."""
        if run_id is None:
            return {"runs": await call(ctx, "runs", lambda ws: ws.runs(limit))}
        record = await call(ctx, "runs", lambda ws: ws.run_record(run_id))
        for name in ("stdout", "stderr"):
            data = record[name].encode("utf-8")
            page = data[offset : offset + limits.output_to_model]
            record[name] = page.decode("utf-8", "ignore")
            if offset + len(page) < len(data):
                record[f"{name}_next"] = offset + len(page)
        return record

    @tool
    async def rollback(
        ctx: Context,
        layer: Annotated[int | None, Field(description="the layer to go back to")] = None,
        branch: Annotated[str | None, Field(description="or a branch to follow, e.g. main")] = None,
    ) -> dict:
        """Go back to a checkpoint (or follow a branch): the workspace shows that state, later
        writes branch off from there, and nothing is destroyed (roll forward with log + rollback)."""
        return await call(ctx, "rollback", lambda ws: ws.switch(layer, branch))

    @tool
    async def run_python(
        code: Annotated[str, Field(description="Python 3.15 source, run as python -c (or a turn of the session)")],
        ctx: Context,
        session: Annotated[
            str | None,
            Field(
                pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                description="a name of your choosing: calls with the same name share one interpreter "
                "(variables, imports), opened by the first; omit for a fresh interpreter",
            ),
        ] = None,
        args: Annotated[list[str] | None, Field(description="sys.argv[1:] (not with session)")] = None,
        stdin: Annotated[str, Field(description="text on standard input")] = "",
        env: Annotated[dict[str, str] | None, Field(description="environment (a session: at opening)")] = None,
        cwd: Annotated[
            str | None, Field(description="working directory, /workspace (default) or beneath (a session: at opening)")
        ] = None,
        timeout: Annotated[float | None, Field(gt=0, description="seconds (the server caps it)")] = None,
        checkpoint_before: Annotated[bool, Field(description="checkpoint first, to diff or undo the run")] = False,
    ) -> CallToolResult:
        """Run Python in a WebAssembly sandbox: /workspace (the working directory) and a
        scratch /tmp, no network. numpy, pandas, scipy, scikit-learn, statsmodels,
        matplotlib, sqlite3 and the standard library are there. With ``session``, state
        lives on between calls like a notebook (a trailing expression's value is printed);
        a session ends after some idle minutes, at a trap or limit, or with end_session.
        Returns exit code, stdout, stderr, status and the files it changed; an error result
        unless it exited 0. Long output is cut to its head and tail (the runs tool with
        the run_id shows more). Images the code saves in /workspace (PNG, JPEG, GIF,
        WebP; plt.savefig('plot.png')) come back as image content."""

        def work(ws: Workspace) -> tuple[dict, list[dict]]:
            if session is None:
                result = ws.run(
                    python=code,
                    args=args,
                    stdin=stdin.encode(),
                    env=env,
                    cwd=cwd,
                    timeout=timeout,
                    checkpoint_before=checkpoint_before,
                )
            else:
                if args:
                    raise ApiError(400, "INVALID", "args are for a fresh interpreter, not a session's turn")
                if checkpoint_before:
                    ws.checkpoint(f"before a turn of session {session}")
                live.get_or_open(ws, session, env=env, cwd=cwd)
                result = live.turn(ws, session, code, stdin=stdin.encode(), timeout=timeout)
            return result, ws.images(result["changed"])

        result, images = await call(ctx, "run_python", work)
        return run_answer(result, limits.output_to_model, images)

    @tool
    async def bash(
        command: Annotated[str, Field(description="a bash command line, run as bash -c in /workspace")],
        ctx: Context,
        cwd: Annotated[str | None, Field(description="working directory, /workspace (default) or beneath")] = None,
        stdin: Annotated[str, Field(description="text on standard input")] = "",
        timeout: Annotated[float | None, Field(gt=0, description="seconds (the server caps it)")] = None,
    ) -> CallToolResult:
        """Run a shell command in a sandbox over the workspace: the machine's git, python3,
        pip, gcc, make, node and their installed packages; /workspace (the working
        directory) and a scratch /tmp; no network, no other files. The command sees the
        workspace as it was when it started, and what it changes is saved in one step
        when it ends (a checkpoint is taken first: rollback to it undoes the command).
        Returns exit code, stdout, stderr and the files it changed; an error result
        unless it exited 0. Long output is cut to its head and tail."""
        result = await call(ctx, "bash", lambda ws: ws.exec(command, stdin=stdin.encode(), cwd=cwd, timeout=timeout))
        return run_answer(result, limits.output_to_model)

    @tool
    async def end_session(
        session: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="a run_python session")],
        ctx: Context,
    ) -> dict:
        """End a run_python session: its interpreter shuts down and what it wrote is kept."""
        await call(ctx, "end_session", lambda ws: live.close(ws, session))
        return {"ended": session}

    @tool
    async def run_wasm(
        path: Annotated[str, Field(description="a wasm32-wasip1 module or WASI 0.2 component in the workspace")],
        ctx: Context,
        args: list[str] | None = None,
        timeout: Annotated[float | None, Field(gt=0)] = None,
    ) -> CallToolResult:
        """Run a WebAssembly program stored in the workspace, sandboxed on /workspace. An error
        result unless it exited 0 (a file that is no module, a trap, a limit included)."""
        result = await call(ctx, "run_wasm", lambda ws: ws.run(wasm_path=path, args=args, timeout=timeout))
        return run_answer(result, limits.output_to_model)

    _one_of(server, "rollback", ["layer", "branch"])
    return server


def _one_of(server: MCPServer, name: str, fields: list[str]) -> None:
    """Say in a tool's input schema that exactly one of ``fields`` is given. The SDK
    builds schemas from signatures, which cannot say that; its tool registry is internal
    (mcp 2.x), so a registry without the expected shape leaves the schema as it is."""
    tool = getattr(getattr(server, "_tool_manager", None), "get_tool", lambda _n: None)(name)
    schema = getattr(tool, "parameters", None)
    if isinstance(schema, dict):
        schema["oneOf"] = [{"required": [f]} for f in fields]
