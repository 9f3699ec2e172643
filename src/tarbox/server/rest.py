"""The REST API under ``/v1`` (FastAPI; described at ``/openapi.json``).

Every route works on the tenant of the request's token (``auth.token_of``): paths
name files inside that tenant, never a tenant. Blocking work runs in worker
threads; bodies and responses of files, tar archives and run output stream, so
memory stays bounded whatever their size.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import datetime
from email.utils import formatdate
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from sse_starlette.sse import EventSourceResponse

from tarbox.client import QUOTA_MAX
from tarbox.fs import AuditOp
from tarbox.server import bodies
from tarbox.server.auth import token_of
from tarbox.server.errors import ApiError, describe
from tarbox.server.errors import body as error_body
from tarbox.server.pipes import CHUNK, Pipe, file_chunks
from tarbox.server.workers import Workers
from tarbox.server.workspace import Limits, Workspace, clean_path

router = APIRouter(prefix="/v1")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

# What a path may be (the filesystem decides the rest: ENOENT, ENAMETOOLONG, ...)
_NO_NUL = r"^[^\x00]*$"
TenantPath = Annotated[str, Field(pattern=_NO_NUL, max_length=4095, description="a path in the tenant")]
PathIn = Annotated[str, PathParam(pattern=_NO_NUL, max_length=4095, description="a path in the tenant")]
Text = Annotated[str, Field(pattern=_NO_NUL, max_length=1 << 20)]
BranchName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="1-63 of a-z 0-9 . _ -")]
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


IsoTime = Annotated[
    str | None,
    Query(description="an ISO 8601 time, e.g. 2026-12-02T15:00:00+00:00", json_schema_extra={"format": "date-time"}),
]


def _json_integer(value):
    """JSON Schema's integer: 3 and 3.0 are one, ``true`` and ``"3"`` are none."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("should be an integer")
    return value


Integer = Annotated[int, BeforeValidator(_json_integer)]
# pydantic writes a bound on Integer as a bare "gt" (no JSON Schema keyword): say it here
PositiveInteger = Annotated[
    int, BeforeValidator(_json_integer), Field(gt=0), WithJsonSchema({"type": "integer", "exclusiveMinimum": 0})
]


class Body(BaseModel):
    """A JSON body: types taken strictly (``false`` is no number, ``"1"`` no integer)."""

    model_config = ConfigDict(strict=True)


def _exactly_one(*fields: str) -> ConfigDict:
    """A body model's schema saying that exactly one of ``fields`` is given."""
    return ConfigDict(strict=True, json_schema_extra={"oneOf": [{"required": [f]} for f in fields]})


def workspace(request: Request) -> Workspace:
    return Workspace(request.app.state.tb, token_of(request.scope), request.app.state.limits)


WS = Annotated[Workspace, Depends(workspace)]


def _thread(fn, *args, **kwargs):
    return anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def _workers(request: Request) -> Workers:
    return request.app.state.workers


# ------------------------------------------------------------------- who am I


@router.get("/whoami", summary="The token's tenant and rights")
def whoami(request: Request) -> dict:
    t = token_of(request.scope)
    out = t.to_dict()
    if t.tenant_id is not None:
        out["tenant"] = request.app.state.tb.get_tenant(t.tenant_id).name
    return out


# ---------------------------------------------------------------------- files


def _etag(st) -> str:
    return f'"{st.ino:x}-{st.mtime_ns:x}-{st.size:x}"'


def _file_headers(path: str, st) -> dict:
    return {
        "ETag": _etag(st),
        "Last-Modified": formatdate(st.mtime_ns / 1e9, usegmt=True),
        "Accept-Ranges": "bytes",
        "X-Tarbox-Type": st.type.name.lower(),
        "X-Tarbox-Mode": oct(st.mode),
        "X-Tarbox-Ino": str(st.ino),
    }


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single ``Range: bytes=`` header; None: the whole file."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise ApiError(416, "BAD_RANGE", f"unsupported range {header!r} (one bytes=START-END range)")
    if not m.group(1):  # the last N bytes
        start, end = max(0, size - int(m.group(2))), size
    else:
        start = int(m.group(1))
        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    if start >= size or start >= end:
        raise ApiError(416, "BAD_RANGE", f"range {header!r} is outside a file of {size} bytes")
    return start, end


@router.get("/files/{path:path}", summary="Stream a file's content (Range supported)")
async def get_file(path: PathIn, request: Request, ws: WS) -> StreamingResponse:
    workers = _workers(request)
    release = await workers.admit_stream(ws.tenant_id)
    try:
        path = clean_path(path)
        fs = ws.fs()
        st = await _thread(fs.stat, path)
        if st.is_dir:
            raise ApiError(409, "EISDIR", f"Is a directory: {path} (list it with /v1/dirs)", 21)
        rng = _byte_range(request.headers.get("range"), st.size)
        start, end = rng if rng is not None else (0, st.size)
        f = await _thread(fs.open, path, "rb")
    except BaseException:
        release()
        raise
    headers = {**_file_headers(path, st), "Content-Length": str(end - start)}
    if rng is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{st.size}"
    chunks = file_chunks(f, start, end)

    async def body():
        try:
            while data := await _thread(next, chunks, b""):
                yield data
        finally:
            await _thread(chunks.close)
            release()

    status = 206 if rng else 200
    return StreamingResponse(body(), status_code=status, headers=headers, media_type="application/octet-stream")


@router.head("/files/{path:path}", summary="A file's stat as headers")
def head_file(path: PathIn, ws: WS) -> Response:
    path = clean_path(path)
    st = ws.fs().stat(path)
    headers = {**_file_headers(path, st), "Content-Length": str(st.size)}
    return Response(headers=headers, media_type="application/octet-stream")


@router.put("/files/{path:path}", status_code=201, summary="Upload a file (visible whole once committed)")
async def put_file(path: PathIn, request: Request, ws: WS, parents: bool = False) -> JSONResponse:
    """The body is received whole before anything is written; the answer comes once the
    file is committed (docs/server.md, "Writes")."""
    ws.need_write()
    workers = _workers(request)
    release = await workers.admit_stream(ws.tenant_id)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= CHUNK:  # small: one write, committed on its own
        try:
            data = await request.body()
            await _thread(ws.write, path, data, parents=parents)
            return JSONResponse(await _thread(ws.stat, path), status_code=201)
        finally:
            release()
    try:
        spool = await bodies.receive(request)
    except BaseException:
        release()
        raise
    # from here the slot and the spool are the upload's until it ends, client or no client
    stat = await workers.stream(lambda: ws.upload(path, spool, parents=parents), release, spool.close)
    return JSONResponse(stat, status_code=201)


@router.delete(
    "/files/{path:path}", status_code=204, response_class=Response, summary="Remove a file, symlink or directory"
)
def delete_file(path: PathIn, ws: WS, recursive: bool = False) -> Response:
    ws.remove(path, recursive=recursive)
    return Response(status_code=204)


class MkdirBody(Body):
    path: TenantPath
    parents: bool = False


@router.post("/mkdir", status_code=201, summary="Create a directory")
def mkdir(body: MkdirBody, ws: WS) -> dict:
    ws.mkdir(body.path, parents=body.parents)
    return ws.stat(body.path)


class RenameBody(Body):
    src: TenantPath
    dst: TenantPath


@router.post("/rename", summary="Rename (POSIX rules: replaces a file or an empty directory)")
def rename(body: RenameBody, ws: WS) -> dict:
    ws.rename(body.src, body.dst)
    return ws.stat(body.dst, follow=False)


class SymlinkBody(Body):
    target: TenantPath
    path: TenantPath


@router.post("/symlink", status_code=201, summary="Create a symbolic link")
def symlink(body: SymlinkBody, ws: WS) -> dict:
    ws.symlink(body.target, body.path)
    return ws.stat(body.path, follow=False)


@router.get("/stat/{path:path}", summary="Stat a path")
def stat(path: PathIn, ws: WS, follow: bool = True) -> dict:
    return ws.stat(path, follow=follow)


Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


@router.get("/dirs/{path:path}", summary="List a directory (paged)")
def list_dir(ws: WS, path: PathIn, offset: Offset = 0, limit: Limit = 1000) -> dict:
    return ws.list_dir(path, offset, limit)


@router.get("/dirs", summary="List the root directory (paged)")
def list_root(ws: WS, offset: Offset = 0, limit: Limit = 1000) -> dict:
    return ws.list_dir("/", offset, limit)


# ------------------------------------------------------------------- history


class CheckpointBody(Body):
    message: Text = ""


@router.post("/checkpoints", status_code=201, summary="Freeze the current state (O(1))")
def checkpoint(body: CheckpointBody, ws: WS) -> dict:
    return ws.checkpoint(body.message)


@router.get("/layers", summary="The layer history with per-layer counts")
def layers(ws: WS) -> list[dict]:
    return ws.layers()


class SwitchBody(Body):
    # not nullable: a key given is the one chosen (the schema's oneOf counts keys)
    model_config = _exactly_one("layer", "branch")
    layer: Integer = None  # type: ignore[assignment]
    branch: BranchName = None  # type: ignore[assignment]


@router.post("/switch", summary="View a layer (later writes branch from it) or follow a branch")
def switch(body: SwitchBody, ws: WS) -> dict:
    return ws.switch(body.layer, body.branch)


@router.get("/branches", summary="Named branches and their heads")
def branches(ws: WS) -> dict:
    return ws.branches()


class BranchBody(Body):
    name: BranchName
    from_layer: Integer | None = Field(None, alias="from")


@router.post("/branches", status_code=201, summary="Create a named branch")
def branch(body: BranchBody, ws: WS) -> dict:
    return ws.branch(body.name, body.from_layer)


@router.delete(
    "/branches/{name}", status_code=204, response_class=Response, summary="Delete a branch (its layers stay)"
)
def delete_branch(name: str, ws: WS) -> Response:
    ws.delete_branch(name)
    return Response(status_code=204)


@router.get("/diff", summary="Paths changed between two layers")
def diff(
    ws: WS,
    from_layer: Annotated[int, Query(alias="from")],
    to_layer: Annotated[int | None, Query(alias="to")] = None,
    patch: bool = False,
) -> list[dict]:
    return ws.diff(from_layer, to_layer, patch)


@router.get("/audit", summary="The audit log (the CLI's filters)")
def audit(
    ws: WS,
    run: uuid.UUID | None = None,
    since: IsoTime = None,
    path: Annotated[str | None, Query(pattern=_NO_NUL, max_length=4095)] = None,
    op: AuditOp | None = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> list[dict]:
    when = _iso_time(since, "since") if since is not None else None
    return ws.audit(run_id=run, since=when, path=path, op=op.value if op else None, limit=limit)


# ----------------------------------------------------------------------- runs


class RunBody(Body):
    """Exactly one of ``wasm_base64``, ``wasm_path`` or ``python``."""

    model_config = _exactly_one("wasm_base64", "wasm_path", "python")
    wasm_base64: str = Field(None, pattern=_BASE64, description="a wasm32-wasip1 module or WASI 0.2 component, base64")
    wasm_path: TenantPath = Field(None, description="a module or component stored in the tenant")
    python: Text = Field(None, description="Python source, run by CPython 3.15 for WASI (numpy, pandas, ...)")
    args: list[Text] = []
    env: dict[str, Text] = Field({}, description="names without NUL or '='")
    stdin: str = ""
    stdin_base64: str | None = Field(None, pattern=_BASE64)
    cwd: TenantPath | None = Field(None, description="Python's working directory: /workspace (default) or beneath")
    timeout: float | None = Field(None, gt=0, description="seconds (capped by the server)")
    memory_limit: PositiveInteger | None = Field(None, description="bytes (capped by the server)")
    checkpoint_before: bool = False
    stream: bool = Field(False, description="Server-Sent Events: stdout/stderr as they come, then the result")


def _decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "INVALID", f"{what} is not valid base64") from None


@router.post("/runs", summary="Run a module, component or Python source in the WASI sandbox")
async def run(body: RunBody, request: Request, ws: WS):
    kwargs = {
        "wasm": _decode(body.wasm_base64, "wasm_base64") if body.wasm_base64 is not None else None,
        "wasm_path": body.wasm_path,
        "python": body.python,
        "args": body.args,
        "env": body.env,
        "stdin": _decode(body.stdin_base64, "stdin_base64") if body.stdin_base64 else body.stdin.encode(),
        "cwd": body.cwd,
        "timeout": body.timeout,
        "memory_limit": body.memory_limit,
        "checkpoint_before": body.checkpoint_before,
    }
    workers = _workers(request)
    if not (body.stream or "text/event-stream" in request.headers.get("accept", "")):
        return await workers.run(ws.tenant_id, ws.token.id, lambda: ws.run(**kwargs))
    release = await workers.admit_run(ws.tenant_id, ws.token.id)  # a refusal is a 429, not an event
    events = Pipe(depth=256)  # (event, data) pairs; a full pipe holds the guest back

    def work() -> None:
        def emit(kind: str):
            return lambda data: events.put((kind, data.decode("utf-8", "replace")))

        try:
            result = ws.run(on_stdout=emit("stdout"), on_stderr=emit("stderr"), **kwargs)
            events.put(("result", json.dumps(result)))
        except BrokenPipeError:
            return  # the client went away; the run itself ended normally
        except Exception as exc:  # noqa: BLE001 - reported as an event
            _, code, message, errno = describe(exc)
            events.put(("error", json.dumps(error_body(code, message, errno))))
        events.close()

    workers.start_run(work, release)

    async def stream():
        try:
            while item := await events.aget():
                yield {"event": item[0], "data": item[1]}
        finally:
            events.break_()

    return EventSourceResponse(stream())


class ExecBody(Body):
    """A native command, sandboxed over /workspace (docs/exec.md)."""

    command: (
        Annotated[str, Field(min_length=1, pattern=_NO_NUL, max_length=1 << 20)]
        | Annotated[list[Text], Field(min_length=1)]
    ) = Field(description="a string for bash -c, or the argv")
    env: dict[str, Text] = Field({}, description="names without NUL or '='")
    stdin: str = ""
    stdin_base64: str | None = Field(None, pattern=_BASE64)
    cwd: TenantPath | None = Field(None, description="/workspace (default) or beneath")
    timeout: float | None = Field(None, gt=0, description="seconds (capped by the server)")
    memory_limit: PositiveInteger | None = Field(None, description="bytes of the process tree (capped by the server)")


@router.post("/exec", summary="Run a native command (bash, git, python3, gcc, ...) sandboxed over /workspace")
async def exec_(body: ExecBody, request: Request, ws: WS):
    stdin = _decode(body.stdin_base64, "stdin_base64") if body.stdin_base64 else body.stdin.encode()
    return await _workers(request).run(
        ws.tenant_id,
        ws.token.id,
        lambda: ws.exec(
            body.command,
            stdin=stdin,
            env=body.env,
            cwd=body.cwd,
            timeout=body.timeout,
            memory_limit=body.memory_limit,
        ),
    )


@router.get("/runs", summary="Recorded runs, newest first (?limit, ?before=ISO time for the next page)")
def runs(
    ws: WS,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: IsoTime = None,
) -> list[dict]:
    return ws.runs(limit, _iso_time(before, "before") if before is not None else None)


def _iso_time(text: str, what: str) -> datetime:
    """An ISO 8601 time, as the run log gives them (a bare number is not one)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "INVALID", f"{what} is not an ISO 8601 time: {text!r}") from None


@router.get("/runs/{run_id}", summary="One run: status, exit code, the first MiB of its output, files changed")
def run_record(run_id: Annotated[str, PathParam(description="a run's id (a UUID)")], ws: WS) -> dict:
    return ws.run_record(run_id)


# ------------------------------------------------------------------- sessions


def _sessions(request: Request):
    return request.app.state.sessions


SessionName = Annotated[str, PathParam(description="the session's name", pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class SessionBody(Body):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="default: one made up")
    env: dict[str, Text] = Field({}, description="names without NUL or '='")
    cwd: TenantPath | None = Field(None, description="the working directory: /workspace (default) or beneath")
    idle_timeout: float | None = Field(None, gt=0, description="seconds unused before it ends (capped)")
    lifetime: float | None = Field(None, gt=0, description="seconds it may live (capped)")
    timeout: float | None = Field(None, gt=0, description="each turn's default seconds (capped)")
    memory_limit: PositiveInteger | None = Field(None, description="bytes of the interpreter's memory (capped)")


class TurnBody(Body):
    code: Text = Field(description="Python source, run in the session's __main__")
    stdin: str = ""
    stdin_base64: str | None = Field(None, pattern=_BASE64)
    timeout: float | None = Field(None, gt=0, description="seconds (capped by the server)")


@router.post("/sessions", status_code=201, summary="Open a Python session (state kept across turns)")
async def open_session(body: SessionBody, request: Request, ws: WS) -> dict:
    options = body.model_dump(exclude={"name"})
    return await _workers(request).run(
        ws.tenant_id, ws.token.id, lambda: _sessions(request).open(ws, body.name, **options)
    )


@router.get("/sessions", summary="This token's open Python sessions")
async def list_sessions(request: Request, ws: WS) -> list[dict]:
    return _sessions(request).list(ws)


@router.get("/sessions/{name}", summary="One Python session")
async def get_session(name: SessionName, request: Request, ws: WS) -> dict:
    from tarbox.server.sessions import describe as describe_session

    return describe_session(_sessions(request).get(ws, name))


@router.post("/sessions/{name}/turns", summary="Run code in a session; the turn's writes commit when it ends")
async def session_turn(name: SessionName, body: TurnBody, request: Request, ws: WS) -> dict:
    stdin = _decode(body.stdin_base64, "stdin_base64") if body.stdin_base64 else body.stdin.encode()
    sessions = _sessions(request)
    sessions.get(ws, name)  # 404/410 before waiting for a run slot
    return await _workers(request).run(
        ws.tenant_id, ws.token.id, lambda: sessions.turn(ws, name, body.code, stdin=stdin, timeout=body.timeout)
    )


@router.delete("/sessions/{name}", status_code=204, summary="End a session (Python shuts down, writes commit)")
async def close_session(name: SessionName, request: Request, ws: WS) -> Response:
    await _thread(_sessions(request).close, ws, name)
    return Response(status_code=204)


# ------------------------------------------------------------------------ tar


Compression = Literal["gz", "zst"] | None


@router.get("/export", summary="The whole tenant as a tar stream (?compression=gz|zst)")
async def export_root(request: Request, ws: WS, compression: Compression = None) -> StreamingResponse:
    return await export(request, ws, "/", compression)


@router.get("/export/{path:path}", summary="The tree under path as a tar stream (?compression=gz|zst)")
async def export(request: Request, ws: WS, path: PathIn, compression: Compression = None) -> StreamingResponse:
    from tarbox.integrations.tar import export_tar

    if compression not in (None, "gz", "zst"):
        raise ApiError(400, "INVALID", "compression is gz or zst")
    workers = _workers(request)
    release = await workers.admit_stream(ws.tenant_id)
    try:
        fs = ws.fs()
        root = clean_path(path)
        await _thread(fs.stat, root)  # a missing path is a 404 before the stream starts
    except BaseException:
        release()
        raise
    pipe = Pipe()

    def produce() -> None:
        try:
            with pipe.writer() as out:
                export_tar(fs, out, root, compression=compression)
            pipe.close()
        except BaseException:
            pipe.break_()  # the client sees the stream end early (a truncated archive)

    workers.start_stream(produce)

    async def chunks():
        try:
            while data := await pipe.aget():
                yield data
        finally:
            pipe.break_()
            release()

    media = {"gz": "application/gzip", "zst": "application/zstd"}.get(compression or "", "application/x-tar")
    return StreamingResponse(chunks(), media_type=media)


@router.post("/import", summary="Extract a tar archive at the root, in one commit")
async def import_root(request: Request, ws: WS) -> dict:
    return await import_(request, ws, "/")


@router.post("/import/{path:path}", summary="Extract a tar archive (plain, gz or zst) under path, in one commit")
async def import_(request: Request, ws: WS, path: PathIn) -> dict:
    """The archive is received whole, then extracted in one commit: all of it or nothing."""
    ws.need_write()
    workers = _workers(request)
    release = await workers.admit_stream(ws.tenant_id)
    try:
        spool = await bodies.receive(request)
    except BaseException:
        release()
        raise
    return await workers.stream(lambda: ws.import_archive(path, spool), release, spool.close)


# -------------------------------------------------------------------- tenants


def _admin(request: Request):
    token = token_of(request.scope)
    if not token.admin:
        raise ApiError(403, "NOT_ADMIN", "managing tenants needs an admin token (tarbox token create --admin)")
    return request.app.state.tb


Quota = Annotated[
    int,
    BeforeValidator(_json_integer),
    Field(ge=0, le=QUOTA_MAX),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": QUOTA_MAX}),
]


class TenantBody(Body):
    name: BranchName
    quota_bytes: Quota | None = Field(None, description="bytes stored at most (none: unlimited)")
    quota_inodes: Quota | None = Field(None, description="inodes at most (none: unlimited)")


@router.get("/tenants", summary="Every tenant with usage and quotas (admin tokens)")
def tenants(request: Request) -> list[dict]:
    tb = _admin(request)
    return [tb.describe_tenant(t) for t in tb.list_tenants()]


@router.post("/tenants", status_code=201, summary="Create a tenant (admin tokens)")
def create_tenant(body: TenantBody, request: Request) -> dict:
    tb = _admin(request)
    t = tb.create_tenant(body.name, quota_bytes=body.quota_bytes, quota_inodes=body.quota_inodes)
    return tb.describe_tenant(t)


@router.get("/tenants/{name}", summary="One tenant (admin tokens)")
def tenant(name: str, request: Request) -> dict:
    tb = _admin(request)
    return tb.describe_tenant(name)


@router.delete(
    "/tenants/{name}",
    status_code=204,
    response_class=Response,
    summary="Delete a tenant and all its data (admin tokens)",
)
def delete_tenant(name: str, request: Request) -> Response:
    _admin(request).delete_tenant(name)
    return Response(status_code=204)


def streamed(path: str, method: str) -> bool:
    """Does the route read its body as a stream (a file or an archive)?"""
    return (method == "PUT" and path.startswith("/v1/files/")) or (method == "POST" and path.startswith("/v1/import"))


def limit_for(limits: Limits):
    """The body limit of a request: a file or an archive may be large, JSON may not."""

    def limit(path: str, method: str) -> int:
        return limits.max_upload if streamed(path, method) else limits.max_json

    return limit
