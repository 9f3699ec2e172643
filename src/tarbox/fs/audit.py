"""The audit records of a tenant's store: queued with the operation that makes
them, written by the same commit, pruned past the tenant's retention."""

from __future__ import annotations

import time
import uuid

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

    def _audit_columns(self) -> list[list]:
        """The queued records as the flush sends them: one array per column."""
        a = self.d_audit
        return [[r[i] for r in a] for i in range(7)]

    def _audit_prune_due(self) -> bool:
        """Whether this flush should also delete records past the retention (at most
        once per ``_AUDIT_PRUNE_EVERY`` seconds per process, with records to write).
        The flush that sends it marks it done once it committed."""
        now = time.monotonic()
        return bool(self.d_audit) and (self._audit_pruned is None or now - self._audit_pruned > _AUDIT_PRUNE_EVERY)
