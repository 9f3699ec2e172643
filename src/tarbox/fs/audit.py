"""The audit records of a tenant's store not yet committed: queued with the operation
that makes them, sent by the flush that commits its changes, pruned past the tenant's
retention now and then. ``AuditQueue`` is one part of ``Store`` and owns that state;
the store's lock guards it (every caller holds it)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tarbox.fs.records import _AUDIT_PRUNE_EVERY

# (ns, run id, op, path, path2, bytes, layer): one record, as the flush sends it
AuditRecordRow = tuple[int, uuid.UUID | None, str, str | None, str | None, int | None, int]


class AuditQueue:
    """The records of operations not yet committed, and when retention was last pruned."""

    def __init__(self) -> None:
        self.records: list[AuditRecordRow] = []
        # monotonic time of the last prune; None: never (monotonic time starts near 0
        # at boot, so no number can stand for "long ago")
        self._pruned_at: float | None = None

    def add(
        self, run_id: uuid.UUID | None, op: str, path: str | None, path2: str | None, nbytes: int | None, layer: int
    ) -> None:
        self.records.append((time.time_ns(), run_id, op, path, path2, nbytes, layer))

    def __len__(self) -> int:
        return len(self.records)

    def columns(self) -> list[list[Any]]:
        """The queued records as the flush sends them: one array per column."""
        return [[r[i] for r in self.records] for i in range(7)]

    def prune_due(self) -> bool:
        """Whether this flush should also delete records past the retention (at most
        once per ``_AUDIT_PRUNE_EVERY`` seconds per process, with records to write).
        The flush that sends it calls :meth:`pruned` once it committed."""
        now = time.monotonic()
        return bool(self.records) and (self._pruned_at is None or now - self._pruned_at > _AUDIT_PRUNE_EVERY)

    def pruned(self) -> None:
        self._pruned_at = time.monotonic()

    def clear(self) -> None:
        """Committed with the changes, or lost with them."""
        self.records.clear()
