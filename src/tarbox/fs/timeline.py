"""A tenant's history as its Filesystem shows it: layers and what each changed,
checkpoint, switch, branches, dropping layers, diffs between layers, and queries of
the audit log.

``HistoryView`` is a part of ``Filesystem`` (its mixin): the Store does the work
(``fs/history.py``: the SQL of checkpoint, switch, branch, drop); this module turns
it into the public calls and records each in the audit log. It must not touch
files or paths: those are ``filesystem.py``'s.
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from tarbox.errors import fs_error
from tarbox.fs import layercounts
from tarbox.fs.store import Store
from tarbox.fs.types import AuditOp, AuditRecord, Change, Layer, LayerCounts, Stat
from tarbox.names import validate_branch_name


class HistoryView:
    """Layers, branches, diffs and the audit log of one Filesystem's tenant."""

    _store: Store
    _view: Callable[[int], Store] | None
    audited: bool

    def _writable(self, path: str | None) -> None:  # Filesystem's
        raise NotImplementedError

    def _record(
        self,
        op: AuditOp,
        path: str | None,
        path2: str | None = None,
        nbytes: int | None = None,
        *,
        layer: int | None = None,
    ) -> None:
        raise NotImplementedError  # Filesystem's

    def _layer_rows(self) -> list[tuple[Any, ...]]:
        return self._store.query(
            "SELECT layer_id, parent_id, message, created_at, frozen, counts FROM layers WHERE tenant_id = %s"
            " ORDER BY layer_id",
            (self._store.tenant_id,),
        )

    def layers(self, *, counts: bool = False) -> list[Layer]:
        """Every layer of the tenant (the tree, by parent pointers), oldest first.
        With ``counts``, each carries what it changed (computed once per frozen layer)."""
        with self._store.lock:
            self._store.refresh()
            head = self._store.head
            rows = self._layer_rows()
            got = self._counts(rows) if counts else {}
            return [Layer(r[0], r[1], r[2], r[3], r[4], r[0] == head, got.get(r[0])) for r in rows]

    def layer_counts(self, layer: Layer | int | None = None) -> LayerCounts:
        """What ``layer`` (default: the current one) changed relative to its parent."""
        lid = self.current_layer().id if layer is None else layer.id if isinstance(layer, Layer) else int(layer)
        with self._store.lock:
            self._store.refresh()
            rows = self._layer_rows()
            if not any(r[0] == lid for r in rows):
                raise fs_error(errno.ENOENT, None, f"layer {lid} does not exist")
            return self._counts(rows, only=lid)[lid]

    def _counts(self, rows: list[tuple[Any, ...]], only: int | None = None) -> dict[int, LayerCounts]:
        """Stored counts of frozen layers; the others computed from their rows (and stored once frozen)."""
        st = self._store
        parent = {r[0]: r[1] for r in rows}
        out: dict[int, LayerCounts] = {}
        for lid, _, _, _, frozen, stored in rows:
            if only is not None and lid != only:
                continue
            if stored is not None:
                out[lid] = LayerCounts(*stored)
                continue
            if not frozen:
                st.commit()  # pending writes belong to the open layer
            below, p = [], parent[lid]
            while p is not None:
                below.append(p)
                p = parent.get(p)
            c = layercounts.compute(st.query, st.tenant_id, lid, below)
            if frozen:
                st.query(
                    "UPDATE layers SET counts = %s WHERE tenant_id = %s AND layer_id = %s AND frozen RETURNING 1",
                    ([c.added, c.modified, c.deleted, c.bytes], st.tenant_id, lid),
                    write=True,
                )
            out[lid] = c
        return out

    def current_layer(self) -> Layer:
        """The layer this view reads (and, unless pinned, writes to)."""
        with self._store.lock:
            self._store.refresh()
            head = self._store.head
            rows = self._store.query(
                "SELECT layer_id, parent_id, message, created_at, frozen FROM layers"
                " WHERE tenant_id = %s AND layer_id = %s",
                (self._store.tenant_id, head),
            )
            r = rows[0]
            return Layer(r[0], r[1], r[2], r[3], r[4], True)

    def checkpoint(self, message: str = "") -> Layer:
        """Freeze the current state in O(1) and continue in a new child layer. Returns the checkpoint."""
        self._writable(None)
        frozen = self._store.checkpoint(message)
        self._audit_layer_op(AuditOp.CHECKPOINT, message, frozen)
        return next(layer for layer in self.layers() if layer.id == frozen)

    def switch(self, target: Layer | int | str) -> None:
        """View a layer (the next write after switching to a frozen one branches
        off it), or follow a named branch."""
        self._writable(None)
        if isinstance(target, Layer):
            target = target.id
        self._store.switch(target if isinstance(target, str) else int(target))
        self._audit_layer_op(AuditOp.SWITCH, str(target), self._store.head)

    def branch(self, name: str, from_layer: Layer | int | None = None) -> Layer:
        """Create a named branch with its own head on top of ``from_layer`` (a
        checkpoint; default: checkpoint the current view first). Does not switch."""
        self._writable(None)
        validate_branch_name(name)
        src = from_layer.id if isinstance(from_layer, Layer) else from_layer
        head = self._store.branch(name, src)
        self._audit_layer_op(AuditOp.BRANCH, name, head)
        return next(layer for layer in self.layers() if layer.id == head)

    def branches(self) -> dict[str, int]:
        """Branch name -> its head layer id."""
        rows = self._store.query(
            "SELECT name, head_layer FROM branches WHERE tenant_id = %s ORDER BY name", (self._store.tenant_id,)
        )
        return dict(rows)

    def delete_branch(self, name: str) -> None:
        """Remove a branch pointer; its layers stay until dropped."""
        self._writable(None)
        self._store.delete_branch(name)
        self._audit_layer_op(AuditOp.DELETE_BRANCH, name, None)

    def drop_layer(self, layer: Layer | int, *, descendants: bool = False) -> list[int]:
        """Delete history: a layer (with ``descendants``, its whole subtree).

        Blocks that no surviving version references are freed in the same
        transaction; blocks shared with other layers or files stay. Refused for
        the base layer, the current view, and branch heads. Returns dropped ids.
        """
        self._writable(None)
        lid = layer.id if isinstance(layer, Layer) else int(layer)
        dropped = self._store.drop_layers(lid, descendants)
        self._audit_layer_op(AuditOp.DROP_LAYER, ",".join(map(str, dropped)), lid)
        return dropped

    def _audit_layer_op(self, op: AuditOp, what: str | None, layer: int | None) -> None:
        """Layer operations commit on their own; their record follows in a small commit."""
        if self.audited:
            with self._store.lock:
                self._record(op, None, what, layer=layer)
                self._store.commit()

    def audit(
        self,
        *,
        run_id: uuid.UUID | str | None = None,
        since: datetime | None = None,
        path: str | None = None,
        op: AuditOp | str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditRecord]:
        """The tenant's audit log, oldest first (or newest first: ``limit`` then keeps the
        latest): by run, since a time, for paths matching a glob (``*`` and ``?``; ``*``
        crosses ``/``), of one operation."""
        where = ["tenant_id = %s"]
        params: list[object] = [self._store.tenant_id]
        if run_id is not None:
            where.append("run_id = %s")
            params.append(uuid.UUID(str(run_id)))
        if since is not None:
            where.append("at >= %s")
            params.append(since)
        if path is not None:
            where.append("(path LIKE %s OR path2 LIKE %s)")
            like = _glob_to_like(path)
            params += [like, like]
        if op is not None:
            where.append("op = %s")
            params.append(str(AuditOp(op)))
        sql = "SELECT seq, at, run_id, op, path, path2, bytes, layer_id FROM audit WHERE " + " AND ".join(where)
        sql += " ORDER BY seq" + (" DESC" if newest_first else "") + (f" LIMIT {int(limit)}" if limit else "")
        self._store.commit()  # what this process did is part of the log
        return [AuditRecord(r[0], r[1], r[2], AuditOp(r[3]), *r[4:]) for r in self._store.query(sql, tuple(params))]

    def rows_changed(self, a: Layer | int, b: Layer | int) -> tuple[dict[tuple[int, str], int | None], set[int]] | None:
        """What the layers after ``a`` up to ``b`` wrote, by row, when ``a`` is an ancestor
        of ``b`` (else None): each directory entry ``(parent ino, name)`` they wrote, with
        the inode it names at ``b`` (None: removed there), and each inode they wrote a
        version of (content, mode, times). Proportional to what changed, where
        :meth:`diff` walks both trees; paths are the caller's to find (a local copy's
        index: the sandbox's lower tree)."""
        a_id = a.id if isinstance(a, Layer) else int(a)
        b_id = b.id if isinstance(b, Layer) else int(b)
        st = self._store
        with st.lock:
            after: list[int] = []
            if isinstance(b, Layer) and b.parent_id == a_id and a_id != b_id:
                after.append(b_id)  # one layer on: no walk (a native run's base check)
            else:
                parent = dict(st.query("SELECT layer_id, parent_id FROM layers WHERE tenant_id = %s", (st.tenant_id,)))
                cur: int | None = b_id
                while cur is not None and cur != a_id:
                    after.append(cur)
                    cur = parent.get(cur)
                if cur != a_id:
                    return None
            if not after:
                return {}, set()
            entries = {
                (r[0], r[1]): r[2]
                for r in st.query(
                    "SELECT DISTINCT ON (parent_ino, name) parent_ino, name, ino FROM dirents"
                    " WHERE tenant_id = %s AND layer_id = ANY(%s) ORDER BY parent_ino, name, layer_id DESC",
                    (st.tenant_id, after),
                )
            }
            inodes = {
                r[0]
                for r in st.query(
                    "SELECT DISTINCT ino FROM inodes WHERE tenant_id = %s AND layer_id = ANY(%s)", (st.tenant_id, after)
                )
            }
            return entries, inodes

    def stat_inodes(self, inos: Iterable[int]) -> dict[int, Stat]:
        """The :class:`Stat` of each inode in ``inos`` as this view sees it, in one query
        (the inodes :meth:`rows_changed` names; one not in the view is left out)."""
        st = self._store
        with st.lock:
            st.refresh(force=False)
            return {ino: node.to_stat() for ino, node in st.inodes(list(inos)).items()}

    def current_branch(self) -> str | None:
        """The branch the view follows, or None when viewing a layer by id."""
        rows = self._store.query("SELECT branch FROM tenant_state WHERE tenant_id = %s", (self._store.tenant_id,))
        branch: str | None = rows[0][0]
        return branch

    def diff(
        self, a: Layer | int, b: Layer | int | None = None, *, patch: bool = False, patch_limit: int | None = None
    ) -> list[Change]:
        """Paths added, modified or deleted from layer ``a`` to layer ``b`` (default: the
        current view); with ``patch``, each text file's change carries a unified diff (the
        first ``patch_limit`` files' only, if given)."""
        from tarbox.fs.diff import diff as _diff

        if self._view is None:
            raise RuntimeError("this filesystem view cannot open other layers")
        sa = self._view(a.id if isinstance(a, Layer) else int(a))
        sb = self._store if b is None else self._view(b.id if isinstance(b, Layer) else int(b))
        if b is None:
            self._store.commit()
        return _diff(sa, sb, patch=patch, patch_limit=patch_limit)


def _glob_to_like(glob: str) -> str:
    out = []
    for ch in glob:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)
