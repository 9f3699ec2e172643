"""``tarbox serve``, ``tarbox mcp`` and ``tarbox token``: the commands of the network
server (``tarbox.server``, docs/server.md)."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from tarbox.cli.context import ctx_of
from tarbox.cli.output import emit_json, json_option, out, print_table

token_app = typer.Typer(no_args_is_help=True, help="API tokens of `tarbox serve`: create, list, revoke.")


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one).")] = 8765,
    run_timeout: Annotated[float, typer.Option(help="Longest a run may take (s); requests ask for less.")] = 60.0,
    run_memory: Annotated[int, typer.Option(help="Most linear memory a run may use (bytes).")] = 512 << 20,
    runs_per_token: Annotated[int, typer.Option(help="Concurrent runs one token may have.", min=1)] = 4,
    runs_per_tenant: Annotated[int, typer.Option(help="Concurrent runs one tenant may have.", min=1)] = 8,
    max_runs: Annotated[
        int | None, typer.Option(help="Runs at once in the server; more wait (default: cores, at least 2).", min=1)
    ] = None,
    streams_per_tenant: Annotated[
        int, typer.Option(help="Uploads, imports, exports and downloads one tenant may have at once.", min=1)
    ] = 8,
    calls_per_tenant: Annotated[
        int, typer.Option(help="Other requests one tenant may have in progress; more wait, then 429.", min=1)
    ] = 8,
    body_timeout: Annotated[float, typer.Option(help="Longest pause in a request body (s).", min=0.1)] = 30.0,
    header_timeout: Annotated[float, typer.Option(help="Longest wait for request headers (s).", min=0.1)] = 10.0,
    max_upload: Annotated[int, typer.Option(help="Largest file upload or tar import (bytes).", min=1)] = 16 << 30,
    sessions_per_token: Annotated[int, typer.Option(help="Python sessions one token may hold.", min=0)] = 4,
    max_sessions: Annotated[int, typer.Option(help="Python sessions in the whole server.", min=0)] = 32,
    session_idle: Annotated[float, typer.Option(help="Longest a session may sit unused (s).", min=1)] = 600.0,
    session_lifetime: Annotated[float, typer.Option(help="Longest a session may live (s).", min=1)] = 3600.0,
    exec_allow_net: Annotated[
        list[str] | None,
        typer.Option(help="HOST:PORT every native command (POST /v1/exec, MCP bash) may reach; repeatable."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the HTTP API (/v1), MCP (/mcp) and the web console (/ui/) for agents and
    people anywhere: every request needs a token (tarbox token create)."""
    from tarbox.server.app import serve as run_server
    from tarbox.server.workspace import Limits

    limits = Limits(
        run_timeout=run_timeout,
        run_memory=run_memory,
        runs_per_token=runs_per_token,
        runs_per_tenant=runs_per_tenant,
        streams_per_tenant=streams_per_tenant,
        calls_per_tenant=calls_per_tenant,
        body_timeout=body_timeout,
        header_timeout=header_timeout,
        max_upload=max_upload,
        sessions_per_token=sessions_per_token,
        max_sessions=max_sessions,
        session_idle=session_idle,
        session_lifetime=session_lifetime,
        exec_allow_net=tuple(exec_allow_net or ()),
    )
    if max_runs is not None:
        limits.max_runs = max_runs
    if port:
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"tarbox serve: API http://{shown}:{port}/v1, MCP /mcp, web console /ui/", err=True)
    run_server(ctx_of(ctx).tb(), host=host, port=port, limits=limits, log_level=log_level)


def mcp(
    ctx: typer.Context,
    read_only: Annotated[bool, typer.Option("--read-only", help="Offer only the read tools.")] = False,
    tools: Annotated[str | None, typer.Option(help="Only these tools, comma-separated.")] = None,
) -> None:
    """Serve MCP over stdio for a local client (Claude Desktop, Claude Code), on --tenant."""
    from datetime import UTC, datetime

    from tarbox.server import mcp as mcp_server
    from tarbox.server.workspace import Limits
    from tarbox.tokens import TokenInfo

    c = ctx_of(ctx)
    if not c.tenant:
        raise typer.BadParameter("tarbox mcp needs --tenant NAME (or TARBOX_TENANT)")
    tenant = c.tb().get_tenant(c.tenant)
    # the local user reaches the database anyway: the command line is the credential here
    token = TokenInfo(uuid.uuid4(), tenant.id, "stdio", read_only, False, datetime.now(UTC), None, None)
    chosen = tuple(t.strip() for t in tools.split(",") if t.strip()) if tools else None
    server = mcp_server.build(c.tb(), Limits(), fixed_token=token, tools=chosen)
    import anyio

    anyio.run(server.run_stdio_async)


@token_app.command("create")
@json_option
def token_create(
    ctx: typer.Context,
    read_only: Annotated[bool, typer.Option("--read-only", help="Reads only (writes get 403).")] = False,
    admin: Annotated[bool, typer.Option("--admin", help="Manages tenants; touches no files.")] = False,
    name: Annotated[str, typer.Option(help="What it is for.")] = "",
    expires_days: Annotated[float | None, typer.Option(help="Valid this many days.")] = None,
    allow_net: Annotated[
        list[str] | None, typer.Option("--allow-net", help="HOST:PORT its native runs may reach; repeatable.")
    ] = None,
) -> None:
    """Create a token for --tenant (or --admin) and print it once: only its hash is kept."""
    from tarbox.tokens import create_token

    c = ctx_of(ctx)
    if not admin and not c.tenant:
        raise typer.BadParameter("a token is for one tenant (--tenant NAME) or --admin")
    try:
        text, info = create_token(
            c.tb(),
            None if admin else c.tenant,
            name=name,
            read_only=read_only,
            admin=admin,
            expires_days=expires_days,
            allow_net=allow_net,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if c.as_json:
        emit_json({"token": text, **info.to_dict()})
    else:
        out.print(text, highlight=False, markup=False)


@token_app.command("list")
@json_option
def token_list(ctx: typer.Context) -> None:
    """Tokens (of --tenant, else all), never their secrets."""
    from tarbox.tokens import list_tokens

    c = ctx_of(ctx)
    infos = list_tokens(c.tb(), c.tenant)
    if c.as_json:
        emit_json([i.to_dict() for i in infos])
        return
    names = {t.id: t.name for t in c.tb().list_tenants()}
    rows = [
        (
            i.id,
            "(admin)" if i.admin or i.tenant_id is None else names.get(i.tenant_id, i.tenant_id),
            i.name,
            "read-only" if i.read_only else "admin" if i.admin else "read-write",
            i.created_at.strftime("%Y-%m-%d %H:%M"),
            "-" if i.expires_at is None else i.expires_at.strftime("%Y-%m-%d %H:%M"),
            "revoked" if i.revoked_at else "live",
        )
        for i in infos
    ]
    print_table(("id", "tenant", "name", "rights", "created", "expires", "state"), rows)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke a token by id (from tarbox token list): its next request gets 401."""
    from tarbox.tokens import revoke_token

    info = revoke_token(ctx_of(ctx).tb(), token_id)
    out.print(f"revoked token {info.id}", highlight=False)
