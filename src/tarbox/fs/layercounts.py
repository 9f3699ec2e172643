"""What a layer changed, counted from the layer's own rows (never by walking the tree).

A layer holds exactly the directory entries and inode versions written while it
was the head, so its changes are those rows compared with the newest version
below it. The cost grows with the size of the layer, not of the tree or of the
history; frozen layers never change, so their counts are computed once and
stored in ``layers.counts``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tarbox.fs.types import FileType, LayerCounts

_FILE, _DIR = FileType.FILE.value, FileType.DIRECTORY.value

# Each directory entry written in the layer, with what the name resolved to below it.
_ENTRIES = """
SELECT r.ino, b.ino, ak.kind, ak.mode, ak.size, bk.kind, bk.mode
FROM dirents r
LEFT JOIN LATERAL (
    SELECT o.ino FROM dirents o
    WHERE o.tenant_id = r.tenant_id AND o.parent_ino = r.parent_ino AND o.name = r.name
      AND o.layer_id = ANY(%(below)s) ORDER BY o.layer_id DESC LIMIT 1) b ON true
LEFT JOIN LATERAL (
    SELECT kind, mode, size FROM inodes i
    WHERE i.tenant_id = r.tenant_id AND i.ino = r.ino AND i.layer_id = ANY(%(upto)s)
    ORDER BY i.layer_id DESC LIMIT 1) ak ON true
LEFT JOIN LATERAL (
    SELECT kind, mode FROM inodes i
    WHERE i.tenant_id = r.tenant_id AND i.ino = b.ino AND i.layer_id = ANY(%(below)s)
    ORDER BY i.layer_id DESC LIMIT 1) bk ON true
WHERE r.tenant_id = %(t)s AND r.layer_id = %(l)s
"""

# Each inode version written in the layer whose inode already existed below it.
_VERSIONS = """
SELECT i.ino, i.kind, i.mode, i.size, i.nlink, p.mode
FROM inodes i
JOIN LATERAL (
    SELECT o.mode FROM inodes o
    WHERE o.tenant_id = i.tenant_id AND o.ino = i.ino AND o.layer_id = ANY(%(below)s)
    ORDER BY o.layer_id DESC LIMIT 1) p ON true
WHERE i.tenant_id = %(t)s AND i.layer_id = %(l)s
"""


def compute(
    q: Callable[..., list[tuple[Any, ...]]], tenant_id: uuid.UUID, layer_id: int, below: list[int]
) -> LayerCounts:
    """Counts for ``layer_id`` whose ancestors (parent first) are ``below``.

    Per entry: a name that now resolves and did not is added, one that no longer
    resolves is deleted, one that resolves to another object of the same type is
    modified (of another type: deleted plus added). An existing inode with a new
    version (content, mode, times) is modified once, unless the layer also linked
    it under a new name (then the entry counts). Directories count as modified
    only when their mode changed: their entries are counted themselves.
    """
    params = {"t": tenant_id, "l": layer_id, "below": below, "upto": [layer_id, *below]}
    added = modified = deleted = nbytes = 0
    linked: set[int] = set()
    for after, before, akind, amode, asize, bkind, bmode in q(_ENTRIES, params):
        if after == before:
            continue
        if after is not None:
            linked.add(after)
        if before is None:
            added += 1
        elif after is None:
            deleted += 1
            continue
        elif akind != bkind:
            added += 1
            deleted += 1
        elif akind != _DIR or amode != bmode:
            modified += 1
        else:
            continue
        if akind == _FILE:
            nbytes += asize
    for ino, kind, mode, size, nlink, pmode in q(_VERSIONS, params):
        if ino in linked or nlink == 0 or (kind == _DIR and mode == pmode):
            continue
        modified += 1
        if kind == _FILE:
            nbytes += size
    return LayerCounts(added, modified, deleted, nbytes)
