"""The ``tarbox`` command: the root of the command tree, its global options, and the
one place failures become a one-line message and an exit status. The commands live
in one module per group (files, tenants, layers, audit, tar, run, mount, db, server),
sharing ``context`` (what the global options build) and ``output`` (how to print)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

import tarbox
from tarbox.cli import audit, db, exec, files, layers, mount, python, run, server, tar, tenants
from tarbox.cli.context import Ctx, accept_global_options
from tarbox.cli.output import err, out
from tarbox.errors import TarboxError

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tarbox: a versioned, multi-tenant filesystem in PostgreSQL for AI agents.",
)
for group in (db.app, mount.app, files.app, audit.app, tar.app, layers.app, run.app, exec.app):
    app.add_typer(group)
app.add_typer(layers.layer_app, name="layer")
app.add_typer(tenants.tenant_app, name="tenant")
app.add_typer(db.db_app, name="db")
app.add_typer(server.token_app, name="token")
app.add_typer(python.python_app, name="python")
app.command()(server.serve)
app.command()(server.mcp)
accept_global_options(app)


def _version(value: bool) -> None:
    if value:
        out.print(f"tarbox {tarbox.__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", envvar="TARBOX_TENANT", help="Tenant name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="TARBOX_DATABASE_URL", help="PostgreSQL URL (default: embedded)."),
    ] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    ctx.obj = Ctx(tenant, as_json, url)


def main() -> None:
    # The pool logs each failed connection attempt (it retries on its own); a command
    # reports the error that ends it, in one line, and nothing else.
    logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
    logging.getLogger("psycopg.pool").propagate = False
    try:
        app()
    except (TarboxError, OSError) as exc:
        hint = _hint(exc)
        err.print(f"[red]tarbox: error:[/] {_one_line(exc)}{f' (try: {hint})' if hint else ''}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


def _hint(exc: BaseException) -> str:
    """The next command to try, for the errors that have an obvious one."""
    import errno as _errno

    from tarbox.errors import DatabaseError, SchemaVersionError, TenantNotFoundError

    if isinstance(exc, TenantNotFoundError):
        return "tarbox tenant list; tarbox tenant create NAME"
    if isinstance(exc, SchemaVersionError):
        return "pip install --upgrade tarbox"
    if isinstance(exc, DatabaseError) and not isinstance(exc, OSError):
        return "tarbox doctor"
    code = getattr(exc, "errno", None)
    if code == _errno.ENOENT and getattr(exc, "filename", None):
        parent = str(exc.filename).rstrip("/").rsplit("/", 1)[0] or "/"  # type: ignore[attr-defined]
        return f"tarbox ls {parent}"
    if code == _errno.EDQUOT:
        return "tarbox tenant info NAME; tarbox gc; tarbox layer drop"
    return ""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


if __name__ == "__main__":
    main()
