"""Reclaiming storage no version references any more.

Flushes release the blocks they stop using at once; ``collect`` is the sweep
for whatever that missed (history dropped, crashed writers). It runs under the
tenant write lock, so no writer can be between storing a block and referencing it.
"""

from __future__ import annotations

from tarbox.fs.store import Store


def collect(store: Store) -> tuple[int, int]:
    """Delete unreferenced blocks of the tenant; returns (blocks, bytes) freed."""
    with store.writing(publish=True):
        store._mutated = True
        rows = store._q(
            """WITH del AS (
                   DELETE FROM blocks b WHERE b.tenant_id = %(t)s AND NOT EXISTS (
                       SELECT 1 FROM extents e WHERE e.tenant_id = %(t)s AND e.hash = b.hash)
                   RETURNING len),
               upd AS (
                   UPDATE tenant_state SET used_bytes = used_bytes - (SELECT coalesce(sum(len), 0) FROM del)
                   WHERE tenant_id = %(t)s RETURNING 1)
               SELECT count(*), coalesce(sum(len), 0), (SELECT count(*) FROM upd) FROM del""",
            {"t": store.tid},
        )
    return int(rows[0][0]), int(rows[0][1])
