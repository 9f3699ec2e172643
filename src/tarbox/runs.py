"""The run log: one record per WASI run of a tenant (how it ended, how long it took,
the start of its output), written by the host when the run ends and read by
``tarbox serve``'s console. What a run changed is in the audit log under the same
run id; this log keeps what the audit log cannot: status, exit code and output.

Rows are the tenant's (row-level security, like its files) and go with it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from tarbox.client import Tarbox, Tenant

OUTPUT_KEPT = 1 << 20  # bytes of stdout and of stderr kept per run (MCP answers carry less)
COMMAND_KEPT = 400  # characters of the command line kept
RECORD_WAIT = 2.0  # seconds a finished run waits for a connection to record itself
log = logging.getLogger("tarbox.runs")

_COLUMNS = (
    "run_id, started_at, duration, command, status, exit_code, trap, checkpoint,"
    " stdout, stderr, stdout_bytes, stderr_bytes"
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: uuid.UUID
    started_at: datetime
    duration: float  # seconds
    command: str
    status: str  # RunStatus's value
    exit_code: int
    trap: str | None
    checkpoint: int | None  # the layer frozen before the run, if it asked for one
    stdout: bytes  # the first OUTPUT_KEPT bytes
    stderr: bytes
    stdout_bytes: int  # the whole output's length
    stderr_bytes: int

    @property
    def ok(self) -> bool:
        return self.status == "exited" and self.exit_code == 0


def storable(text: str) -> str:
    """``text`` as PostgreSQL's ``text`` can hold it: NUL as ``\\x00``, lone surrogates
    (which JSON can carry) as ``\\udXXX`` escapes; every other character as it is."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")


def record_result(tb: Tarbox, tenant_id: uuid.UUID, result, *, started_at: datetime, command: str) -> None:
    """``record`` of a finished ``tarbox.wasi.RunResult``."""
    record(
        tb,
        tenant_id,
        run_id=result.run_id,
        started_at=started_at,
        duration=result.duration,
        command=command,
        status=result.status.value,
        exit_code=result.exit_code,
        trap=result.trap,
        checkpoint=result.checkpoint,
        stdout=result.stdout,
        stderr=result.stderr,
    )


def record(
    tb: Tarbox,
    tenant_id: uuid.UUID,
    *,
    run_id: uuid.UUID,
    started_at: datetime,
    duration: float,
    command: str,
    status: str,
    exit_code: int,
    trap: str | None,
    checkpoint: int | None,
    stdout: bytes,
    stderr: bytes,
) -> None:
    """Write a finished run's record. A failure here is logged, never raised: the run
    itself is over and its files are committed either way."""
    try:
        # a short wait: when the database is gone, the run's own result says so already
        with tb.db.tenant(tenant_id, timeout=RECORD_WAIT) as conn:
            conn.execute(
                f"INSERT INTO runs (tenant_id, {_COLUMNS})"
                " SELECT tenant_id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
                " FROM tenant_state WHERE tenant_id = %s",  # the tenant's own row: a router insert on Citus
                (
                    run_id,
                    started_at,
                    duration,
                    storable(command)[:COMMAND_KEPT],
                    status,
                    exit_code,
                    None if trap is None else storable(trap),
                    checkpoint,
                    stdout[:OUTPUT_KEPT],
                    stderr[:OUTPUT_KEPT],
                    len(stdout),
                    len(stderr),
                    tenant_id,
                ),
            )
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("could not record run %s: %s", run_id, exc)


def recent(tb: Tarbox, tenant: Tenant | str | uuid.UUID, *, limit: int = 50, before: datetime | None = None) -> list:
    """The tenant's runs, newest first (``before``: older than that start, for paging)."""
    tid = _tenant_id(tb, tenant)
    where = "tenant_id = %s"
    params: list[object] = [tid]
    if before is not None:
        where += " AND started_at < %s"
        params.append(before)
    with tb.db.tenant(tid) as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE {where} ORDER BY started_at DESC LIMIT %s", (*params, int(limit))
        ).fetchall()
    return [_record(r) for r in rows]


def get(tb: Tarbox, tenant: Tenant | str | uuid.UUID, run_id: uuid.UUID | str) -> RunRecord | None:
    tid = _tenant_id(tb, tenant)
    try:
        rid = uuid.UUID(str(run_id))
    except ValueError:
        return None
    with tb.db.tenant(tid) as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = %s AND run_id = %s", (tid, rid)).fetchone()
    return None if row is None else _record(row)


def _tenant_id(tb: Tarbox, tenant: Tenant | str | uuid.UUID) -> uuid.UUID:
    return tenant if isinstance(tenant, uuid.UUID) else tb.get_tenant(tenant).id  # an id needs no lookup


def _record(row) -> RunRecord:
    run_id, started_at, duration, command, status, exit_code, trap, checkpoint, out, err, n_out, n_err = row
    return RunRecord(
        run_id, started_at, duration, command, status, exit_code, trap, checkpoint, bytes(out), bytes(err), n_out, n_err
    )
