"""What every ``tarbox`` command shares: the context the global options build (tenant,
``--json``, database URL; the client, connected on first use; the command's run id in
the audit log) and the few helpers every command group uses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

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
    return psycopg.conninfo.make_conninfo(**info)
