"""The ``audit`` command: what was done in a tenant, by which run, when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

import tarbox
from tarbox.cli.context import ctx_of
from tarbox.cli.output import emit_json, err, json_option, out, print_table

app = typer.Typer()


@app.command()
@json_option
def audit(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option("--run", help="Only this run (a run_wasm or a CLI command).")] = None,
    since: Annotated[
        datetime | None, typer.Option("--since", help="Only records at or after this time (ISO 8601, UTC if naive).")
    ] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only paths matching this glob (* crosses /).")] = None,
    op: Annotated[str | None, typer.Option("--op", help="Only this operation (write, rename, ...).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many records.")] = None,
    retention_days: Annotated[
        float | None, typer.Option("--set-retention-days", help="Keep the tenant's records this long instead.")
    ] = None,
) -> None:
    """Show what was done in a tenant: every change, by which run, when."""
    c = ctx_of(ctx)
    if retention_days is not None:
        if not c.tenant:
            raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
        c.tb().set_audit_retention(c.tenant, retention_days)
        if not c.as_json:
            err.print(f"audit records of {c.tenant} are kept {retention_days:g} days")
        return
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if op is not None:
        try:
            op = str(tarbox.AuditOp(op))
        except ValueError:
            raise typer.BadParameter(f"unknown operation {op!r}: one of {', '.join(tarbox.AuditOp)}") from None
    records = c.fs().audit(run_id=run, since=since, path=path, op=op, limit=limit)
    if c.as_json:
        emit_json([r.to_dict() for r in records])
        return
    whole = not out.is_terminal  # piped: the full run id and plain byte counts
    rows = [
        (
            r.seq,
            r.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            (str(r.run_id) if whole else str(r.run_id)[:8]) if r.run_id else "-",
            r.op,
            r.path or "",
            r.path2 or "",
            "" if r.bytes is None else r.bytes if whole else f"{r.bytes:,}",
            "" if r.layer_id is None else r.layer_id,
        )
        for r in records
    ]
    print_table(("seq", "time (UTC)", "run", "op", "path", "detail", "bytes", "layer"), rows)
