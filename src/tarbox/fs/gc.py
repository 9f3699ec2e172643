"""Reclaiming storage no version references any more.

Flushes release the blocks they stop using at once; ``collect`` is the sweep
for whatever that missed (history dropped, crashed writers). It runs under the
tenant write lock, so no writer can be between storing a block and referencing
it. Blocks of files still being written are pinned by their stage's rows; a
stage not renewed for ``stale_after`` seconds (its writer died: every commit of
a live writer renews its stages) is ended first, which frees its blocks.
"""

from __future__ import annotations

from tarbox.fs.store import Store

STAGE_LEASE = 3600.0  # seconds without renewal after which a stage counts as abandoned


def collect(store: Store, stale_after: float = STAGE_LEASE) -> tuple[int, int]:
    """Delete abandoned stages and unreferenced blocks of the tenant; returns (blocks, bytes) freed."""
    with store.writing(publish=True):
        store.note_write()
        store.query(
            """WITH s AS (
                   DELETE FROM stages WHERE tenant_id = %(t)s AND renewed_at <= now() - make_interval(secs => %(a)s)
                   RETURNING stage_id, ino),
               d AS (
                   DELETE FROM extents e USING s
                   WHERE e.tenant_id = %(t)s AND e.ino = s.ino AND e.layer_id = -s.stage_id RETURNING 1)
               SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM d)""",
            {"t": store.tenant_id, "a": stale_after},
        )
        rows = store.query(
            """WITH del AS (
                   DELETE FROM blocks b WHERE b.tenant_id = %(t)s AND NOT EXISTS (
                       SELECT 1 FROM extents e WHERE e.tenant_id = %(t)s AND e.hash = b.hash)
                   RETURNING len),
               upd AS (
                   UPDATE tenant_state SET used_bytes = used_bytes - (SELECT coalesce(sum(len), 0) FROM del)
                   WHERE tenant_id = %(t)s RETURNING 1)
               SELECT count(*), coalesce(sum(len), 0), (SELECT count(*) FROM upd) FROM del""",
            {"t": store.tenant_id},
        )
    return int(rows[0][0]), int(rows[0][1])
