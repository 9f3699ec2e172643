"""The history operations of a tenant's store: checkpoint (freeze the head, open a
child), switch, branches, dropping layers."""

from __future__ import annotations

import errno

from tarbox.errors import fs_error
from tarbox.fs.shared import SharedState


class History(SharedState):
    """history of the tenant store (mixed into ``Store``; see its docstring)."""

    def open_child(self, parent: int, message: str) -> int:
        """Create a writable child of ``parent`` and make it the head (inside the lock)."""
        child = self.query(
            """WITH n AS (
                   INSERT INTO layers (tenant_id, layer_id, parent_id, message)
                   VALUES (%(t)s, nextval('layer_id_seq'), %(p)s, %(m)s) RETURNING layer_id),
               b AS (
                   UPDATE branches SET head_layer = (SELECT layer_id FROM n)
                   WHERE tenant_id = %(t)s AND name = (SELECT branch FROM tenant_state WHERE tenant_id = %(t)s))
               UPDATE tenant_state SET head_layer = (SELECT layer_id FROM n) WHERE tenant_id = %(t)s
               RETURNING head_layer""",
            {"t": self.tenant_id, "p": parent, "m": message},
        )[0][0]
        assert isinstance(child, int)
        self._new_head(child, parent)
        return child

    def _new_head(self, child: int, parent: int) -> None:
        """The head moved to a fresh empty child: every cache entry stays valid as it is (O(1))."""
        assert parent == self.head
        self.head = child
        self.chain = self.chain | {child}
        self.chain_ids = [child, *self.chain_ids]
        self.head_frozen = False

    def checkpoint(self, message: str) -> int:
        """Freeze the head (O(1): no data or metadata copied) and open a child. Returns the frozen layer."""
        with self.lock:
            self.commit()  # what is pending belongs to the layer being frozen
            with self.writing(publish=True):
                self.note_write()
                frozen = self.head
                self.query(
                    "UPDATE layers SET frozen = true, message = %s"
                    " WHERE tenant_id = %s AND layer_id = %s RETURNING layer_id",
                    (message, self.tenant_id, frozen),
                )
                self.open_child(frozen, "")
            return frozen

    def switch(self, target: int | str) -> None:
        """View a layer (by id: detached; writing to a frozen one opens a child)
        or follow a branch (by name: its head, which moves with its checkpoints)."""
        with self.lock:
            self.commit()
            if self.held_inos():
                # their content would be published into the other view, where they have no name
                raise fs_error(errno.EBUSY, None, "files are being written; close them before switching")
            with self.writing(publish=True):
                if isinstance(target, str):
                    rows = self.query(
                        "SELECT b.head_layer, l.frozen FROM branches b JOIN layers l"
                        " ON l.tenant_id = b.tenant_id AND l.layer_id = b.head_layer"
                        " WHERE b.tenant_id = %s AND b.name = %s",
                        (self.tenant_id, target),
                    )
                    if not rows:
                        raise fs_error(errno.ENOENT, None, f"branch {target!r} does not exist")
                    branch = target
                else:
                    rows = self.query(
                        "SELECT layer_id, frozen FROM layers WHERE tenant_id = %s AND layer_id = %s",
                        (self.tenant_id, target),
                    )
                    if not rows:
                        raise fs_error(errno.ENOENT, None, f"layer {target} does not exist")
                    branch = None
                layer_id, frozen = rows[0]
                self.note_write()
                self.query(
                    "UPDATE tenant_state SET head_layer = %s, branch = %s WHERE tenant_id = %s RETURNING head_layer",
                    (layer_id, branch, self.tenant_id),
                )
                self.drop_clean_caches()
                self.chain = frozenset()
                self.adopt_state((self.gen, layer_id, self.block_size, frozen))

    def branch(self, name: str, from_layer: int | None) -> int:
        """Create branch ``name`` with a new head layer on top of ``from_layer``
        (default: a checkpoint of the current view). Returns its head layer."""
        with self.lock:
            if from_layer is None:
                from_layer = self.checkpoint(f"branch {name}")
            with self.writing(publish=True):
                rows = self.query(
                    "SELECT frozen FROM layers WHERE tenant_id = %s AND layer_id = %s", (self.tenant_id, from_layer)
                )
                if not rows:
                    raise fs_error(errno.ENOENT, None, f"layer {from_layer} does not exist")
                if not rows[0][0]:
                    raise fs_error(errno.EINVAL, None, f"layer {from_layer} is open; branch from a checkpoint")
                if self.query("SELECT 1 FROM branches WHERE tenant_id = %s AND name = %s", (self.tenant_id, name)):
                    raise fs_error(errno.EEXIST, None, f"branch {name!r} already exists")
                self.note_write()
                head: int = self.query(
                    """WITH n AS (
                           INSERT INTO layers (tenant_id, layer_id, parent_id, message)
                           VALUES (%(t)s, nextval('layer_id_seq'), %(p)s, '') RETURNING layer_id)
                       INSERT INTO branches (tenant_id, name, head_layer)
                       SELECT %(t)s, %(n)s, layer_id FROM n RETURNING head_layer""",
                    {"t": self.tenant_id, "p": from_layer, "n": name},
                )[0][0]
                return head

    def drop_layers(self, layer_id: int, descendants: bool) -> list[int]:
        """Delete a layer (and with ``descendants`` its whole subtree) and release
        the blocks no surviving version references. Returns the dropped ids."""
        with self.lock:
            self.commit()
            with self.writing(publish=True):
                t = self.tenant_id
                rows = self.query(
                    """WITH RECURSIVE sub(layer_id) AS (
                           SELECT layer_id FROM layers WHERE tenant_id = %(t)s AND layer_id = %(l)s
                           UNION ALL
                           SELECT l.layer_id FROM layers l JOIN sub
                             ON l.tenant_id = %(t)s AND l.parent_id = sub.layer_id)
                       SELECT sub.layer_id, l.parent_id FROM sub JOIN layers l
                         ON l.tenant_id = %(t)s AND l.layer_id = sub.layer_id""",
                    {"t": t, "l": layer_id},
                )
                if not rows:
                    raise fs_error(errno.ENOENT, None, f"layer {layer_id} does not exist")
                sub = [r[0] for r in rows]
                if any(r[0] == layer_id and r[1] is None for r in rows):
                    raise fs_error(errno.EBUSY, None, "the base layer cannot be dropped")
                if len(sub) > 1 and not descendants:
                    raise fs_error(errno.ENOTEMPTY, None, f"layer {layer_id} has children (drop with descendants)")
                if self.head in sub:
                    raise fs_error(errno.EBUSY, None, f"layer {self.head} is the current view; switch away first")
                held = self.query(
                    "SELECT name FROM branches WHERE tenant_id = %s AND head_layer = ANY(%s) ORDER BY name", (t, sub)
                )
                if held:
                    names = ", ".join(r[0] for r in held)
                    raise fs_error(errno.EBUSY, None, f"branch {names} has its head there; delete the branch first")
                self.note_write()
                released = self.query(
                    """WITH d AS (DELETE FROM extents WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING hash)
                       SELECT DISTINCT hash FROM d""",
                    (t, sub),
                    binary=True,
                )
                inodes = self.query(
                    """WITH d AS (DELETE FROM inodes WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING 1)
                       SELECT count(*) FROM d""",
                    (t, sub),
                )[0][0]
                self.query(
                    """WITH d AS (DELETE FROM dirents WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING 1)
                       SELECT count(*) FROM d""",
                    (t, sub),
                )
                self.query(
                    """WITH d AS (DELETE FROM layers WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING 1)
                       SELECT count(*) FROM d""",
                    (t, sub),
                )
                self.query(
                    "SELECT tarbox_apply_blocks(%b::bytea[], %b::bytea[], %b::bytea[], %s)",
                    ([], [], [bytes(r[0]) for r in released], -inodes),
                )
                return sub

    def delete_branch(self, name: str) -> None:
        """Remove a branch pointer (its layers stay until dropped)."""
        with self.lock, self.writing(publish=True):
            if name == self.query("SELECT branch FROM tenant_state WHERE tenant_id = %s", (self.tenant_id,))[0][0]:
                raise fs_error(errno.EBUSY, None, f"branch {name!r} is the current branch; switch away first")
            self.note_write()
            if not self.query(
                "DELETE FROM branches WHERE tenant_id = %s AND name = %s RETURNING name", (self.tenant_id, name)
            ):
                raise fs_error(errno.ENOENT, None, f"branch {name!r} does not exist")
