"""The flush: every dirty inode, directory entry, extent, stage, audit record and
block of a tenant's store as the arrays of one call of the server-side function
``tarbox_flush`` (migrations 0011, 0013, 0015; its arguments are a ``FlushPlan``,
fs/flushplan.py), sent with COMMIT in one round trip when small.
A large flush sends its blocks after the call, in slices."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import psycopg

from tarbox.fs.flushplan import FlushPlan
from tarbox.fs.records import (
    _PIPELINE_MAX_BYTES,
    _PIPELINE_MAX_ROWS,
    _SLICE_BYTES,
    Stage,
)
from tarbox.fs.shared import SharedState
from tarbox.fs.txn import translate_db_error

_FLUSH_SQL = FlushPlan.sql()
_APPLY_SQL = "SELECT tarbox_apply_blocks(%b::bytea[], %b::bytea[], %b::bytea[], 0)"


class Flush(SharedState):
    """flush of the tenant store (mixed into ``Store``; see its docstring)."""

    def flush_dirty(
        self,
        conn: psycopg.Connection,
        durable: bool = False,
        *,
        expect: int | None = None,
        in_delegation: bool = False,
        reshare: bool = False,
        commit: bool = True,
    ) -> tuple[Any, ...] | None:
        """Write every dirty row and COMMIT. With the tenant's lock held in ``conn``'s
        transaction (``expect`` None); or, for an operation that ran ahead of the lock,
        in a transaction of its own that takes the lock and fails with ``Conflict``
        unless the tenant's generation is still ``expect``. ``in_delegation``:
        ``conn`` holds our read delegation; the flush commits in its transaction,
        which ends it, and ``reshare`` takes it again in the same round trip
        (returns tarbox_try_share's row). ``commit=False`` (an atomic batch past a
        threshold) writes the rows and leaves the transaction open."""
        self.seal_blocks()
        if not self.has_dirty() and not durable:
            if expect is None and commit:
                conn.execute("COMMIT")
            return None
        head = self.head
        held = self.held_inos()
        pub = {ino: e for ino, e in self.dirty.ext.items() if ino not in held}
        for ino, e in pub.items():
            node = self.dirty.inodes.get(ino) or self.inode_cache.get(ino)
            if node is not None and not e.drop:
                node.content_layer = head  # the published bytes live at the head from now on
        ins = [n for n in self.dirty.inodes.values() if n is not None]
        # a held file's row keeps its committed size and content: others see the old version
        shown = {ino: (self.dirty.ext[ino].base_size, self.dirty.ext[ino].base) for ino in held}
        referenced: set[bytes] = set()
        for e in self.dirty.ext.values():
            referenced.update(e.sets.values())
        release = list({h for e in pub.values() for h in e.release if h not in referenced})
        # blocks sealed and then overwritten, truncated or dropped before this commit are not stored at all
        blocks = {h: data for h, data in self.dirty.blocks.items() if h in referenced}
        staging: list[tuple[int, int, int, bytes]] = []  # (ino, stage id, idx, hash)
        for ino in held:
            st = self.stages.get(ino)
            if st is None:
                st = self.stages[ino] = Stage(self.alloc_ino())  # ids from the inode sequence: unique
            staging += [(ino, st.sid, i, h) for i, h in self.dirty.ext[ino].sets.items() if st.rows.get(i) != h]
        unstage = [(st.sid, ino) for ino, st in self.stages.items() if ino not in held]
        # Pipelining saves round trips for small flushes; psycopg can stall when
        # a pipelined statement carries a large payload (psycopg issue #685),
        # so a large flush sends its blocks in slices, one statement at a time.
        small = self.dirty.block_bytes <= _PIPELINE_MAX_BYTES and self.dirty_rows() <= _PIPELINE_MAX_ROWS
        assert expect is None or small, "a flush that runs ahead of the lock is small"
        prune = self.audit_queue.prune_due()
        plan = FlushPlan.of(
            tenant=self.tenant_id,
            expect=expect,
            head=head,
            upserted=ins,
            committed_as=shown,
            deleted=[ino for ino, n in self.dirty.inodes.items() if n is None],
            dirents=self.dirty.dirents,
            dropped=[ino for ino, e in pub.items() if e.drop],
            copied=[(ino, e.base) for ino, e in pub.items() if not e.drop and e.base is not None and e.base != head],
            truncated=[(ino, e.trunc_from) for ino, e in pub.items() if e.trunc_from is not None and not e.drop],
            extents=[*((ino, None, i, h) for ino, e in pub.items() if not e.drop for i, h in e.sets.items()), *staging],
            renewed=[(st.sid, ino) for ino, st in self.stages.items() if ino in held],
            unstaged=unstage,
            lost=list(self.d_unstage.items()),
            audit=self.audit_queue.columns(),
            blocks=blocks if small else {},
            release=release,
            prune=prune,
            durable=durable,
        )
        args = plan.params()
        try:
            share = None
            if in_delegation:
                # Inside the delegation's own transaction: it holds the lock shared,
                # which does not stop this session taking it exclusively (other
                # sessions' shares do: TBD01). COMMIT ends both; with ``reshare``,
                # BEGIN shares it again unless a writer got in first (never waits).
                with conn.pipeline():
                    cur = conn.execute(_FLUSH_SQL, args)
                    conn.execute("COMMIT")
                    if reshare:
                        conn.execute("BEGIN")
                        share = conn.execute("SELECT * FROM tarbox_try_share()")
            elif expect is not None:  # autocommit: the call is its own transaction
                cur = conn.execute(_FLUSH_SQL, args)
            else:
                with conn.pipeline() if small else nullcontext():
                    cur = conn.execute(_FLUSH_SQL, args)
                    if not small:
                        self._send_blocks_in_slices(conn, blocks)
                    if commit:
                        conn.execute("COMMIT")
            row = cur.fetchone()
        except psycopg.Error as exc:
            raise translate_db_error(exc) from exc
        assert row is not None
        self.adopt_usage(row)
        self.gen = row[0]  # ours: the caches are exact at it
        self.validated_at = time.monotonic()
        if prune:
            self.audit_queue.pruned()
        self.stats["flushes"] += 1
        self.stats["round_trips"] += 1
        for ino, _, i, h in staging:
            self.stages[ino].rows[i] = h
        for _, ino in unstage:
            del self.stages[ino]
        self.d_unstage.clear()
        self.clear_dirty(held)
        return share.fetchone() if share is not None else None

    @staticmethod
    def _send_blocks_in_slices(conn: psycopg.Connection, blocks: dict[bytes, bytes]) -> None:
        """Store a large flush's blocks a slice at a time (the quota is checked after each)."""
        hashes: list[bytes] = []
        datas: list[bytes] = []
        size = 0
        for h, data in blocks.items():
            hashes.append(h)
            datas.append(data)
            size += len(data)
            if size >= _SLICE_BYTES:
                conn.execute(_APPLY_SQL, (hashes, datas, []))
                hashes, datas, size = [], [], 0
        if hashes:
            conn.execute(_APPLY_SQL, (hashes, datas, []))
