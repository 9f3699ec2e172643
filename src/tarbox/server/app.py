"""The ASGI application of ``tarbox serve`` and the function that serves it.

``create_app`` puts together the REST API (``rest``), the web console (``console``,
at ``/ui/``), the MCP endpoint (``mcp``,
one server for read-write tokens and one offering only the read tools for
read-only tokens), token checks (``auth.TokenAuth``), body limits and
``/healthz``. ``serve`` runs it on uvicorn; SIGTERM or Ctrl-C stop new requests,
let those in flight (runs included, each bounded by the run timeout) finish,
commit what is pending and close the database pools.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

import tarbox
from tarbox.client import Tarbox
from tarbox.errors import TarboxError
from tarbox.server import console, errors, openapi, rest
from tarbox.server import mcp as mcp_server
from tarbox.server.auth import SCOPE_KEY, TokenAuth
from tarbox.server.bodies import BodyGuard
from tarbox.server.protocol import protocol_class
from tarbox.server.sessions import Sessions
from tarbox.server.workers import TenantShare, Workers
from tarbox.server.workspace import Limits

log = logging.getLogger("tarbox.server")


class _McpByToken:
    """``/mcp``: the full tool set for read-write tokens, the read tools for read-only ones."""

    def __init__(self, full, read_only) -> None:
        self.full, self.read_only = full, read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = scope.get(SCOPE_KEY)
        app = self.read_only if token is not None and token.read_only else self.full
        await app(scope, receive, send)


def create_app(tb: Tarbox, limits: Limits | None = None, *, host: str = "127.0.0.1") -> FastAPI:
    limits = limits or Limits()
    workers = Workers(limits)
    sessions = Sessions(limits)
    mcp_apps = [
        mcp_server.build(tb, limits, workers, tools=tools, sessions=sessions).streamable_http_app(
            streamable_http_path="/mcp", stateless_http=True, json_response=True, host=host
        )
        for tools in (mcp_server.ALL_TOOLS, mcp_server.READ_TOOLS)
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        async with contextlib.AsyncExitStack() as stack:
            for sub in mcp_apps:
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield
        sessions.close_all()  # each one's Python shuts down and its writes commit
        workers.close()  # runs and streams in progress end first (each bounded by its own limits)
        log.info("tarbox serve: stopped; committing and closing the database pools")

    app = FastAPI(
        title="Tarbox",
        version=tarbox.__version__,
        description="A versioned, multi-tenant filesystem for AI agents, with a WASI sandbox (docs/server.md).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.tb, app.state.limits, app.state.workers, app.state.sessions = tb, limits, workers, sessions
    app.include_router(rest.router)
    openapi.install(app)
    console.install(app)
    mcp_endpoint = _McpByToken(
        *(next(r.endpoint for r in sub.routes if isinstance(r, Route) and r.path == "/mcp") for sub in mcp_apps)
    )
    # an ASGI app as a route's endpoint (starlette serves it as one; its types say a function)
    app.add_route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)  # type: ignore[arg-type]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        with tb.db.admin() as conn:
            conn.execute("SELECT 1")
        return {"ok": True, "version": tarbox.__version__}

    # ClientDisconnect by name: what only the catch-all ``Exception`` handles is answered
    # and then re-raised as an unexpected failure, a traceback in the log for a client
    # that merely left
    for kind in (errors.ApiError, OSError, TarboxError, ValueError, LookupError, ClientDisconnect, Exception):
        app.add_exception_handler(kind, errors.handler)

    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(errors.body("INVALID_REQUEST", f"{where}: {first.get('msg', 'invalid request')}"), 400)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of one route; a path may have several
            headers["Allow"] = ", ".join(_methods_of(app, request.scope))
        return JSONResponse(errors.body("HTTP", str(exc.detail)), exc.status_code, headers=headers or None)

    # starlette types a handler as taking any Exception; these take the one they are for
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    # outermost last: bodies are checked, then the token, then the tenant's share
    app.add_middleware(TenantShare, limits=limits, scope_key=SCOPE_KEY, activity=workers.activity)
    app.add_middleware(TokenAuth, tb=tb)
    app.add_middleware(BodyGuard, limit=rest.limit_for(limits), streamed=rest.streamed, timeout=limits.body_timeout)
    return app


def _methods_of(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route of the app answers at this request's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**scope, "method": "\0"})  # a method no route has: path matches only
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def serve(
    tb: Tarbox,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    limits: Limits | None = None,
    log_level: str = "info",
) -> None:
    """Serve until SIGTERM or Ctrl-C (uvicorn); then the client is closed, which commits."""
    import uvicorn

    limits = limits or Limits()
    app = create_app(tb, limits, host=host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(limits.run_timeout) + 10,
        lifespan="on",
        http=protocol_class(limits.header_timeout),
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; the handler
    # it then finds turns that into a normal exit (status 0), after the pools are closed
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.Server(config).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        tb.close()
