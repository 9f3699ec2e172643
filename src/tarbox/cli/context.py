"""What every ``tarbox`` command shares: the context the global options build (tenant,
``--json``, database URL; the client, connected on first use; the command's run id in
the audit log) and the few helpers every command group uses."""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import typer

import tarbox
from tarbox.cli.output import show_record

CHUNK = 1 << 20  # bytes per read/write of a streamed copy


@dataclass
class Ctx:
    tenant: str | None
    as_json: bool
    url: str | None
    _tb: tarbox.Tarbox | None = None
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)  # this command, in the audit log

    def tb(self) -> tarbox.Tarbox:
        if self._tb is None:
            self._tb = tarbox.connect(self.url)
        return self._tb

    def fs(self) -> tarbox.Filesystem:
        if not self.tenant:
            raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
        fs = self.tb().filesystem(self.tenant)
        fs.run_id = self.run_id
        return fs


def ctx_of(ctx: typer.Context) -> Ctx:
    return ctx.obj


def show(c: Ctx, record: dict) -> None:
    """One record: JSON with --json, else aligned ``key: value`` lines."""
    show_record(c.as_json, record)


def safe_url(url: str) -> str:
    """A database URL without its password, for display."""
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **info)


# The global options, also accepted after the subcommand (``tarbox token create -t T``
# as well as ``tarbox -t T token create``); there they win over the ones before it.
_AFTER = {
    "tenant_after": (str | None, typer.Option("--tenant", "-t", help="Tenant name.", show_default=False), "tenant"),
    "url_after": (str | None, typer.Option("--url", help="PostgreSQL URL.", show_default=False), "url"),
    "json_after": (bool, typer.Option("--json", help="Machine-readable output."), "as_json"),
}


def with_global_options(command: Callable) -> Callable:
    """``command`` taking the global options after the subcommand too (see ``_AFTER``);
    those it already takes itself (a command's own ``--json``) are left to it."""
    sig = inspect.signature(command, eval_str=True)
    added = {k: v for k, v in _AFTER.items() if k not in sig.parameters}  # json_option's own json_after stays
    if not added or "ctx" not in sig.parameters:
        return command

    @functools.wraps(command)
    def wrapped(*args, **kwargs):
        ctx = kwargs.get("ctx", args[0] if args else None)
        for name, (_, _, attr) in added.items():
            value = kwargs.pop(name, None)
            if value:
                setattr(ctx.obj, attr, value)
        return command(*args, **kwargs)

    params = [*sig.parameters.values()]
    annotations = dict(command.__annotations__)
    for name, (kind, option, _) in added.items():
        annotation = Annotated[kind, option]  # type: ignore[valid-type]  # a type chosen at run time
        default = False if kind is bool else None
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
        annotations[name] = annotation
    wrapped.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapped.__annotations__ = annotations
    return wrapped


def accept_global_options(app: typer.Typer) -> None:
    """Give every command of ``app`` (groups included) the global options after it."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = with_global_options(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            accept_global_options(group.typer_instance)
