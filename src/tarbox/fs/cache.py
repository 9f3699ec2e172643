"""What a tenant's store knows of the database, and how it learns it: queries, the
close-to-open revalidation (refresh, read delegations), and the cached lookups of
directory entries, inodes, listings, extent maps and blocks, with reads. It reads
the dirty maps (a process sees its own writes) but never changes them."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from tarbox.errors import ConnectionLostError, DatabaseError, TenantNotFoundError, fs_error
from tarbox.fs import delegation
from tarbox.fs.records import (
    _READ_AHEAD,
    Dentry,
    Inode,
)
from tarbox.fs.shared import SharedState
from tarbox.fs.txn import _flusher, _rollback, translate_db_error
from tarbox.fs.types import FileType
from tarbox.storage.recall import recall_channel


class Caches(SharedState):
    """caches of the tenant store (mixed into ``Store``; see its docstring)."""

    _STATE_SQL = (
        "SELECT s.gen, s.head_layer, s.block_size, l.frozen FROM tenant_state s"
        " JOIN layers l ON l.tenant_id = s.tenant_id AND l.layer_id = s.head_layer WHERE s.tenant_id = %s"
    )

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[psycopg.Connection]:
        if self.txn_conn is not None:
            yield self.txn_conn
        elif self.delegation.conn is not None and not write:  # a delegation's transaction never commits
            yield self.delegation.conn
        else:
            with self.db.tenant(self.tenant_id) as conn:
                yield conn

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = (), *, binary: bool = False, write: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run one statement. Outside a transaction a broken pooled connection
        (e.g. after a server restart) is retried once on a fresh one; the pool
        drops broken connections, so no liveness ping is paid per checkout. ``write``: a
        statement that changes rows outside a write transaction (it commits on its own).
        Under the store's lock: the connection chosen may be the open transaction's or
        the read delegation's, which another thread must not use at the same time."""
        with self.lock:
            return self._q_locked(sql, params, binary=binary, write=write)

    def _q_locked(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any], *, binary: bool, write: bool
    ) -> list[tuple[Any, ...]]:
        for attempt in (0, 1):
            self.stats["round_trips"] += 1
            try:
                with self._conn(write) as conn:
                    return conn.execute(sql, params, binary=binary).fetchall()
            except (psycopg.OperationalError, ConnectionLostError) as exc:
                if attempt or self.txn_conn is not None:
                    raise DatabaseError(f"database connection failed: {exc}".strip()) from exc
                self.release_delegation()  # its connection broke; go on without it
                self.db.discard_broken()
            except psycopg.Error as exc:
                raise translate_db_error(exc) from exc
        raise AssertionError("unreachable")

    def _newest(self, sql: str, params: tuple[Any, ...], want: int) -> list[tuple[Any, ...]]:
        """The newest ``want`` versions (first column: layer_id) among the head's ancestors.

        Scans backwards from the head; in a linear history the first rows are
        the answer, so the cost does not grow with the depth of history. Rows
        of sibling branches are skipped; if they crowd the window, the query is
        repeated with the chain as an explicit filter.
        """
        window = want + 2
        rows = self.query(sql + " AND layer_id <= %s ORDER BY layer_id DESC LIMIT %s", (*params, self.head, window))
        hits = [r for r in rows if r[0] in self.chain]
        if len(hits) >= want or len(rows) < window:
            return hits[:want]
        rows = self.query(
            sql + " AND layer_id = ANY(%s) ORDER BY layer_id DESC LIMIT %s", (*params, self.chain_ids, want)
        )
        return rows

    def read_state(self, conn: psycopg.Connection | None = None, *, settle: bool = False) -> tuple[Any, ...]:
        """(gen, head layer, block size, head frozen) in one round trip; with ``settle``,
        once no other process has a write-back window open on the tenant."""
        if settle:
            rows = self.query("SELECT gen, head_layer, block_size, frozen FROM tarbox_share_state()")
        elif conn is None:
            rows = self.query(self._STATE_SQL, (self.tenant_id,))
        else:
            rows = conn.execute(self._STATE_SQL, (self.tenant_id,)).fetchall()
        if not rows:
            raise TenantNotFoundError(f"tenant {self.tenant_id} does not exist")
        return rows[0]

    def adopt_state(self, row: tuple[Any, ...] | None = None) -> None:
        """Adopt a state row from ``read_state()``; reload the chain if the head moved."""
        if row is None:
            row = self.read_state()
        gen, head, bs, frozen = row
        self.block_size = bs
        if self.pinned is not None:
            head = self.pinned
        if head != self.head or not self.chain:
            chain = self.query(
                """WITH RECURSIVE c(layer_id, parent_id) AS (
                       SELECT layer_id, parent_id FROM layers WHERE tenant_id = %(t)s AND layer_id = %(h)s
                       UNION ALL
                       SELECT l.layer_id, l.parent_id FROM layers l JOIN c
                         ON l.tenant_id = %(t)s AND l.layer_id = c.parent_id)
                   SELECT layer_id FROM c""",
                {"t": self.tenant_id, "h": head},
            )
            if not chain:
                raise fs_error(errno.ENOENT, None, f"layer {head} does not exist")
            self.head = head
            self.chain = frozenset(r[0] for r in chain)
            self.chain_ids = sorted(self.chain, reverse=True)
        # a pinned view never writes; treat its layer as frozen
        self.head_frozen = True if self.pinned is not None else bool(frozen)
        self.gen = gen

    def refresh(self, force: bool = True) -> None:
        """Revalidate caches against the database (close-to-open check). Free while this
        store holds a read delegation: nobody else can commit then."""
        with self.lock:
            if self.txn_conn is not None:
                return  # we hold the tenant's write lock: nobody else can commit
            if self.delegation.held:
                if self.delegation.intact():
                    self.delegation.used()
                    return  # the tenant's lock is shared with us: nobody else can commit
                self.release_delegation()
            if self.running_ahead:
                return  # an operation running ahead of the lock: its commit checks the generation
            now = time.monotonic()
            if not force and self.gen is not None and now - self.validated_at < self.attr_timeout:
                return
            if self.pinned is None and (self.window_delays or self._may_delegate(now)):
                row = self._delegate()
            else:
                row = self.read_state(settle=self.pinned is None)  # a pinned layer never changes
            if row[0] != self.gen:
                self.drop_clean_caches()
                self.adopt_state(row)
            self.validated_at = now

    # ------------------------------------------------------- read delegations
    # (the state machine is fs/delegation.py's; here the SQL and the flusher)

    def _may_delegate(self, now: float) -> bool:
        """Can a recallable delegation be taken now? From a store's first few opens on
        it subscribes to the recall feed, and delegates once the feed listens."""
        if not self.delegation.wanted(now):
            return False
        feed = self.db.recall_feed()
        epoch = feed.subscribe(self._recall_channel(), self._on_recall, self._on_recall)
        return epoch is not None and self.delegation.take_slot(epoch)

    def _recall_channel(self) -> str:
        return recall_channel(self.db.tenant_token(self.tenant_id))

    def _on_recall(self) -> None:
        """On the feed's thread (must not block): give the delegation back soon."""
        if self.delegation.recall():
            _flusher.schedule(self, time.monotonic(), -self.delegation.ident)

    def _delegate(self) -> tuple[Any, ...]:
        """Revalidate and keep the tenant's advisory lock shared (a read delegation): until
        it ends no one else commits, so opens need not ask."""

        def share(conn: psycopg.Connection, upgrade: bool) -> tuple[Any, ...] | None:
            self.stats["round_trips"] += 1
            with conn.pipeline():
                conn.execute("BEGIN")
                cur = conn.execute("SELECT * FROM tarbox_share_state()")
            return cur.fetchone()

        try:
            conn, cm, row = self.connect_with(share)
        except BaseException:
            self.delegation.give_slot()
            raise
        return self.keep_delegation(conn, cm, row)

    def keep_delegation(self, conn: psycopg.Connection, cm: Any, row: tuple[Any, ...] | None) -> tuple[Any, ...]:
        """Hold ``conn``'s shared lock as this store's delegation if ``row`` (from
        tarbox_share_state) says it was granted; returns the state row."""
        d = self.delegation
        if row is None or not row[4]:
            _rollback(conn)
            cm.__exit__(None, None, None)
            d.give_slot()
            if row is None:
                raise TenantNotFoundError(f"tenant {self.tenant_id} does not exist")
            return row[:4]
        d.keep(conn, cm)
        if d.recallable:
            if not d.feed_current():
                self.release_delegation()  # the feed went down meanwhile: no one could recall it
                return row[:4]
            _flusher.schedule(self, d.used_at + delegation.IDLE, -d.ident)
        else:
            _flusher.schedule(self, d.used_at + min(self.window_delays), -d.ident)
        return row[:4]

    def release_delegation(self) -> None:
        """End the delegation's transaction and give its connection back to the pool."""
        if not self.delegation.held:
            self.delegation.forget()
            return
        conn, cm = self.delegation.detach()
        self.delegation.forget()
        _rollback(conn)
        cm.__exit__(None, None, None)

    def drop_clean_caches(self) -> None:
        """Drop clean cache entries; entries with pending writes stay (last writer wins)."""
        keep = set(self.dirty.inodes) | set(self.dirty.wbuf) | set(self.dirty.ext)
        self.dentry_cache = {}
        self.children = {}
        self.path_cache = {}
        if keep:
            self.inode_cache = {k: v for k, v in self.inode_cache.items() if k in keep}
            self.extent_cache = {k: v for k, v in self.extent_cache.items() if k in keep}
        else:
            self.inode_cache, self.extent_cache = {}, {}

    def dentry(self, parent: int, name: str) -> Dentry:
        d = self.dentry_cache.get((parent, name))
        if d is not None:
            return d
        if parent in self.children:
            # complete listing: listing() cached every name that has rows
            return Dentry(None, None, False)
        # newest two versions in the chain: a backward index scan that stops early,
        # so the cost does not grow with the depth of history
        rows = self._newest(
            "SELECT layer_id, ino FROM dirents WHERE tenant_id = %s AND parent_ino = %s AND name = %s",
            (self.tenant_id, parent, name),
            2,
        )
        d = Dentry(rows[0][1], rows[0][0], len(rows) > 1) if rows else Dentry(None, None, False)
        self.dentry_cache[(parent, name)] = d
        return d

    def lookup(self, parent: int, name: str) -> int | None:
        kids = self.children.get(parent)
        if kids is not None:
            return kids.get(name)
        return self.dentry(parent, name).ino

    def inode(self, ino: int) -> Inode | None:
        if ino in self.dirty.inodes:
            return self.dirty.inodes[ino]  # None: deleted, not yet flushed
        node = self.inode_cache.get(ino)
        if node is not None:
            return node
        rows = self._newest(
            "SELECT layer_id, kind, mode, nlink, size, atime_ns, mtime_ns, ctime_ns, target, content_layer,"
            " uid, gid, rdev"
            " FROM inodes WHERE tenant_id = %s AND ino = %s",
            (self.tenant_id, ino),
            1,
        )
        if not rows:
            return None
        r = rows[0]
        node = Inode(ino, FileType(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[0], r[9], r[10], r[11], r[12])
        self.inode_cache[ino] = node
        return node

    def inodes(self, inos: Iterable[int]) -> dict[int, Inode]:
        """Fetch many inodes in one query (readdir with types)."""
        out: dict[int, Inode] = {}
        missing = []
        for ino in inos:
            node = self.dirty.inodes[ino] if ino in self.dirty.inodes else self.inode_cache.get(ino)
            if node is not None:
                out[ino] = node
            elif ino not in self.dirty.inodes:
                missing.append(ino)
        if missing:
            rows = self.query(
                "SELECT DISTINCT ON (ino) ino, layer_id, kind, mode, nlink, size, atime_ns, mtime_ns, ctime_ns,"
                " target, content_layer, uid, gid, rdev FROM inodes"
                " WHERE tenant_id = %s AND ino = ANY(%s) AND layer_id = ANY(%s) ORDER BY ino, layer_id DESC",
                (self.tenant_id, missing, self.chain_ids),
            )
            for r in rows:
                ino = r[0]
                node = Inode(
                    ino, FileType(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[1], r[10], r[11], r[12], r[13]
                )
                self.inode_cache[ino] = node
                out[ino] = node
        return out

    def listing(self, dir_ino: int) -> dict[str, int]:
        kids = self.children.get(dir_ino)
        if kids is not None:
            return kids
        # one row per name: its newest version in the chain, and how many versions it has there
        rows = self.query(
            "SELECT DISTINCT ON (name) name, layer_id, ino, count(*) OVER (PARTITION BY name) FROM dirents"
            " WHERE tenant_id = %s AND parent_ino = %s AND layer_id = ANY(%s) ORDER BY name, layer_id DESC",
            (self.tenant_id, dir_ino, self.chain_ids),
        )
        kids = {}
        for name, layer, ino, versions in rows:
            if (dir_ino, name) in self.dirty.dirents:
                continue  # changed in this write-back window: dentry_cache holds the truth
            self.dentry_cache[(dir_ino, name)] = Dentry(ino, layer, versions > 1)
            if ino is not None:
                kids[name] = ino
        for p, name in self.dirty.dirents:
            if p == dir_ino:
                d = self.dentry_cache[(p, name)]
                if d.ino is None:
                    kids.pop(name, None)
                else:
                    kids[name] = d.ino
        self.children[dir_ino] = kids
        return kids

    def xmap(self, node: Inode) -> dict[int, bytes]:
        xm = self.extent_cache.get(node.ino)
        if xm is not None:
            return xm
        if node.content_layer is None or node.size == 0:
            xm = {}
        else:
            rows = self.query(
                "SELECT idx, hash FROM extents WHERE tenant_id = %s AND ino = %s AND layer_id = %s",
                (self.tenant_id, node.ino, node.content_layer),
                binary=True,
            )
            xm = {r[0]: bytes(r[1]) for r in rows}
        self.extent_cache[node.ino] = xm
        return xm

    def blocks(self, hashes: list[bytes], ahead: Callable[[], list[bytes]] | None = None) -> dict[bytes, bytes]:
        """The data of ``hashes``; if some must come from the database, the hashes
        ``ahead()`` names come along in the same query (read-ahead)."""
        out: dict[bytes, bytes] = {}
        missing = []
        for h in hashes:
            data = self.dirty.blocks.get(h) or self.block_cache.get(h) or self.stream_cache.get(h)
            if data is None:
                missing.append(h)
            else:
                out[h] = data
        if missing:
            if ahead is not None:
                missing += ahead()
            rows = self.query(
                "SELECT hash, data FROM blocks WHERE tenant_id = %s AND hash = ANY(%b)",
                (self.tenant_id, missing),
                binary=True,
            )
            for h, data in rows:
                h, data = bytes(h), bytes(data)
                if len(data) < self.block_size:
                    self.block_cache.put(h, data)  # see seal_blocks: full blocks stream, small ones are re-read
                else:
                    self.stream_cache.put(h, data)
                out[h] = data
            lost = [h for h in hashes if h not in out]
            if lost:
                raise fs_error(errno.EIO, None, f"block {lost[0].hex()[:16]} is missing (file changed or corrupt)")
        return out

    def _ahead(self, xm: dict[int, bytes], wb: dict[int, bytearray | bytes], last: int) -> list[bytes]:
        """Blocks after ``last`` worth fetching in the same query: a read that had to go
        to the database is usually one of a sequence."""
        out = []
        for i in range(last + 1, last + 1 + _READ_AHEAD):
            h = xm.get(i)
            if h is None or i in wb:
                break
            if self.stream_cache.get(h) is None and self.block_cache.get(h) is None:
                out.append(h)
        return out

    def read_block(self, node: Inode, idx: int, xm: dict[int, bytes]) -> bytes | bytearray:
        wb = self.dirty.wbuf.get(node.ino)
        if wb is not None and idx in wb:
            return wb[idx]
        h = xm.get(idx)
        if h is None:
            return b""
        return self.blocks([h])[h]

    def read(self, node: Inode, offset: int, size: int) -> bytes:
        end = min(node.size, offset + size)
        if offset >= end:
            return b""
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        xm = self.xmap(node)
        wb = self.dirty.wbuf.get(node.ino, {})
        need = [xm[i] for i in range(first, last + 1) if i not in wb and i in xm]
        data = self.blocks(need, ahead=lambda: self._ahead(xm, wb, last)) if need else {}
        pieces = []
        for i in range(first, last + 1):
            lo = offset - i * bs if i == first else 0
            hi = end - i * bs if i == last else bs
            chunk = wb[i] if i in wb else (data[xm[i]] if i in xm else b"")
            piece = chunk[lo:hi] if (lo or hi < len(chunk)) else chunk
            pieces.append(piece)
            if len(piece) < hi - lo:
                pieces.append(bytes(hi - lo - len(piece)))  # hole or short block: zeros
        return pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces)
