"""The audit records of a tenant's store: queued with the operation that makes
them, written by the same commit, pruned past the tenant's retention."""

from __future__ import annotations

import time
import uuid

import psycopg

from tarbox.fs.records import (
    _AUDIT_PRUNE_EVERY,
)


class AuditLog:
    """auditlog of the tenant store (mixed into ``Store``; see its docstring)."""

    def audit(
        self, run_id: uuid.UUID | None, op: str, path: str | None, path2=None, nbytes=None, *, layer: int | None = None
    ) -> None:
        """Record an operation (in ``layer``, default the head); it is written by the
        commit that carries its changes."""
        with self.lock:
            self.d_audit.append(
                (time.time_ns(), run_id, op, path, path2, nbytes, self.head if layer is None else layer)
            )

    def _write_audit(self, conn: psycopg.Connection) -> None:
        a = self.d_audit
        conn.execute(
            """INSERT INTO audit (tenant_id, at, run_id, op, path, path2, bytes, layer_id)
               SELECT %s, to_timestamp(u.ns / 1e9), u.r, u.o, u.p, u.p2, u.b, u.l
               FROM unnest(%s::int8[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::int8[], %s::int8[])
                    AS u(ns, r, o, p, p2, b, l)""",
            (
                self.tid,
                [r[0] for r in a],
                [r[1] for r in a],
                [r[2] for r in a],
                [r[3] for r in a],
                [r[4] for r in a],
                [r[5] for r in a],
                [r[6] for r in a],
            ),
        )
        now = time.monotonic()
        if self._audit_pruned is None or now - self._audit_pruned > _AUDIT_PRUNE_EVERY:
            self._audit_pruned = now
            conn.execute(
                """DELETE FROM audit WHERE tenant_id = %(t)s
                     AND at < now() - (SELECT audit_retention FROM tenant_state WHERE tenant_id = %(t)s)""",
                {"t": self.tid},
            )
