"""The ``tenant`` commands: create, list, inspect and delete tenants."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tarbox.cli.context import ctx_of, show
from tarbox.cli.output import emit_json, json_option, out, print_table
from tarbox.client import QUOTA_MAX

tenant_app = typer.Typer(no_args_is_help=True, help="Create, list, inspect and delete tenants.")


@tenant_app.command("create")
@json_option
def tenant_create(
    ctx: typer.Context,
    name: str,
    quota_bytes: Annotated[int | None, typer.Option(help="Maximum stored bytes.", min=0, max=QUOTA_MAX)] = None,
    quota_inodes: Annotated[int | None, typer.Option(help="Maximum inodes.", min=0, max=QUOTA_MAX)] = None,
) -> None:
    """Create a tenant."""
    c = ctx_of(ctx)
    t = c.tb().create_tenant(name, quota_bytes=quota_bytes, quota_inodes=quota_inodes)
    if c.as_json:
        emit_json({"id": str(t.id), "name": t.name, "created_at": t.created_at.isoformat()})
    else:
        out.print(f"created tenant [bold]{t.name}[/] ({t.id})")


@tenant_app.command("list")
@json_option
def tenant_list(ctx: typer.Context) -> None:
    """List tenants."""
    c = ctx_of(ctx)
    tenants = c.tb().list_tenants()
    if c.as_json:
        emit_json([{"id": str(t.id), "name": t.name, "created_at": t.created_at.isoformat()} for t in tenants])
        return
    rows = [(t.name, t.id, t.created_at.strftime("%Y-%m-%d %H:%M:%S")) for t in tenants]
    print_table(("name", "id", "created"), rows)


@tenant_app.command("info")
@json_option
def tenant_info(ctx: typer.Context, name: str) -> None:
    """Show a tenant's usage and quotas."""
    c = ctx_of(ctx)
    show(c, c.tb().describe_tenant(name))


@tenant_app.command("delete")
@json_option
def tenant_delete(
    ctx: typer.Context,
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a tenant and all its data."""
    c = ctx_of(ctx)
    if not yes and sys.stdin.isatty():
        typer.confirm(f"delete tenant {name!r} and all its files?", abort=True)
    c.tb().delete_tenant(name)
    if not c.as_json:
        out.print(f"deleted tenant {name}")
