"""Setting up and checking Tarbox: ``init``, ``doctor``, ``gc``, ``fsck`` and the ``db``
commands (the embedded server's status, stopping it)."""

from __future__ import annotations

from typing import Annotated

import typer

from tarbox.cli.context import ctx_of, safe_url, show
from tarbox.cli.output import emit_json, json_option, out

app = typer.Typer()
db_app = typer.Typer(
    no_args_is_help=True, help="The database: status of the embedded server, stop it, distribute it on Citus."
)


@app.command()
@json_option
def init(ctx: typer.Context) -> None:
    """Start (or reach) the database and apply migrations."""
    c = ctx_of(ctx)
    tb = c.tb()
    info = {"url": safe_url(tb.db.url), "embedded": tb.db.embedded, "schema_version": tb.db.schema_version}
    if c.as_json:
        emit_json(info)
    else:
        where = "embedded PostgreSQL" if tb.db.embedded else "PostgreSQL"
        out.print(f"[green]ready[/]: {where} at {info['url']}, schema version {info['schema_version']}")


@app.command()
@json_option
def doctor(ctx: typer.Context) -> None:
    """Check the database, migrations, row-level security, wasmtime and the cache; exit 1 on a failure."""
    from tarbox.cli.doctor import run_checks

    c = ctx_of(ctx)
    checks = run_checks(c.url)
    if c.as_json:
        emit_json([{"check": k.name, "ok": k.ok, "detail": k.detail, "hint": "" if k.ok else k.hint} for k in checks])
    else:
        for k in checks:
            mark = "[green]ok[/]  " if k.ok else "[red]FAIL[/]" if k.required else "[yellow]warn[/]"
            hint = f"  [dim]-> {k.hint}[/]" if not k.ok and k.hint else ""
            out.print(f"{mark} {k.name}: {k.detail}{hint}", highlight=False)
    if any(not k.ok and k.required for k in checks):
        raise typer.Exit(1)


@app.command()
@json_option
def gc(
    ctx: typer.Context,
    stale_after: Annotated[
        float, typer.Option("--stale-after", help="End stages of writers silent this many seconds (died).")
    ] = 3600.0,
) -> None:
    """Reclaim blocks that no file version references (and those of writers that died)."""
    c = ctx_of(ctx)
    blocks, nbytes = c.fs().gc(stale_after)
    if c.as_json:
        emit_json({"blocks": blocks, "bytes": nbytes})
    else:
        out.print(f"freed {blocks} blocks, {nbytes} bytes")


@app.command()
@json_option
def fsck(
    ctx: typer.Context,
    data: Annotated[bool, typer.Option("--data/--no-data", help="Re-hash every block (the slow part).")] = True,
) -> None:
    """Check every stored invariant of the tenant (-t) or of all tenants; exit 1 on any problem."""
    c = ctx_of(ctx)
    reports = c.tb().fsck(c.tenant, data=data)
    if c.as_json:
        emit_json([r.to_dict() for r in reports])
    else:
        for r in reports:
            looked = ", ".join(f"{k} {v}" for k, v in r.checked.items())
            out.print(f"{r.tenant}: {'clean' if r.ok else f'{len(r.problems)} problem(s)'} ({looked})")
            for p in r.problems:
                out.print(f"  {p.check}: {p.detail}", markup=False)
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@db_app.command("status")
@json_option
def db_status(ctx: typer.Context) -> None:
    """Show where the database is and whether the embedded server runs."""
    from tarbox.storage.server import embedded_status

    c = ctx_of(ctx)
    if c.url:
        tb = c.tb()
        data = {"embedded": False, "url": safe_url(c.url), "schema_version": tb.db.schema_version}
    else:
        s = embedded_status()
        data = {
            "embedded": True,
            "pgdata": str(s.pgdata),
            "initialized": s.initialized,
            "running": s.running,
            "pid": s.pid,
        }
    show(c, data)


@db_app.command("distribute")
@json_option
def db_distribute(ctx: typer.Context) -> None:
    """Lay Tarbox's tables out distributed on a Citus cluster, in place (idempotent).

    Run it against the coordinator of a database that has the citus extension and its
    workers added; existing tenants move to the workers. Run it again after adding a
    worker: it gives the new node the binding key (docs/scaling.md)."""
    from tarbox.storage import citus

    c = ctx_of(ctx)
    tb = c.tb()
    with tb.db.admin() as conn:
        done, synced = citus.distribute(conn)
        nodes = citus.nodes(conn)
    if c.as_json:
        emit_json({"done": done, "nodes": [n.__dict__ for n in nodes], "keyed_workers": synced})
        return
    for line in done or ["already distributed"]:
        out.print(line)
    for n in nodes:
        out.print(f"{n.role} {n.host}:{n.port}: {n.shards} shard placements")


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL server."""
    from tarbox.storage.server import stop_embedded

    was = stop_embedded()
    out.print("stopped the embedded server" if was else "the embedded server was not running")
