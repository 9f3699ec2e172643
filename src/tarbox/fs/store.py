"""Per-tenant inode store: metadata and block caches, write-back state, flush.

One ``Store`` exists per (connection, tenant) in a process and is shared by all
filesystem views and WASI runs of that tenant, so they see each other's writes
at once (POSIX semantics inside a process).

Consistency across processes (close-to-open, like NFS):

* Every committing transaction first takes the tenant's write lock (an UPDATE
  of its ``tenant_state`` row) and bumps the tenant generation ``gen``. If the
  generation before the bump is not the one our caches were filled at, someone
  else committed: clean cache entries are dropped before the operation runs.
  Writers of one tenant are therefore serialized, and a writer always decides
  on exact state.
* Readers revalidate (one small query) on every open, and for stat-like calls
  at most once per ``attr_timeout`` seconds (NFS's attribute cache).
* Write-back windows (``write_back``, used by WASI runs): the first change
  takes the lock and keeps the transaction open; later changes, closes
  included, join it, and it commits when it is ``write_back`` seconds old (a
  flusher thread sees to that), at fsync, at the run's end, or past the flush
  thresholds. Writers also hold an advisory lock on the tenant, on which a
  revalidating reader waits in shared mode, so a reader in another process
  still sees every file closed before it opened (close-to-open) -- it waits at
  most one window for it, like the recall of an NFSv4 write delegation.
* Blocks are immutable and content-addressed, so the block cache never needs
  invalidation.

A flush turns all dirty state into a dozen or so array-valued statements sent
in one pipelined round trip, whatever the number of files, so batched writes
cost per row, not per round trip.

Staged publication: the content a descriptor writes stays out of every commit
until the last descriptor writing the file closes or fsyncs it; commits in
between store its blocks under a stage (docs/design.md).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import blake3
import psycopg

from tarbox.errors import ConnectionLostError, DatabaseError, FilesystemError, TenantNotFoundError, fs_error
from tarbox.fs.types import FileType, Stat
from tarbox.storage import Database, db_error


class _QuietPipelineAbort(logging.Filter):
    """psycopg warns when a pipeline whose block raised fails to end; the block's own
    error (a quota refusal, say) is what we report, so the echo is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("error ignored terminating <psycopg.Pipeline")


logging.getLogger("psycopg").addFilter(_QuietPipelineAbort())

ROOT_INO = 1
DEFAULT_BLOCK_SIZE = 128 * 1024
FLUSH_BYTES = 16 << 20  # dirty block bytes that force a flush
FLUSH_ROWS = 20_000  # dirty metadata rows that force a flush
_INO_RANGE = 1024
_PIPELINE_MAX_BYTES = 64 << 10
_PIPELINE_MAX_ROWS = 2_000
_SLICE_BYTES = 4 << 20  # block data per statement in large flushes
_READ_AHEAD = 8  # blocks fetched past a sequential read's last one (1 MiB at the default size)
_STREAM_CACHE_BYTES = 8 << 20
# A window runs ahead of the quota check only with this much room left (its
# dirty bytes stay below about twice FLUSH_BYTES plus one write); closer to the
# quota every operation commits on its own, so EDQUOT comes where it did.
_WINDOW_ROOM_BYTES = 4 * FLUSH_BYTES
_WINDOW_ROOM_INODES = 2 * FLUSH_ROWS
_AUDIT_PRUNE_EVERY = 3600.0  # seconds between a store's deletions of audit records past retention


@dataclass(slots=True)
class Inode:
    ino: int
    kind: FileType
    mode: int
    nlink: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: str | None
    layer_id: int  # layer of the version this record is (head once modified)
    content_layer: int | None  # layer whose extents hold the bytes

    def to_stat(self) -> Stat:
        return Stat(self.ino, self.kind, self.mode, self.nlink, self.size, self.atime_ns, self.mtime_ns, self.ctime_ns)


@dataclass(slots=True)
class Dentry:
    """What the chain holds for one name. Stores layer ids, not 'is at the head'
    flags, so moving the head to a new child invalidates nothing."""

    ino: int | None  # None: no such name
    top: int | None  # layer of the newest row for this name in the chain (None: no row)
    below: bool  # another row exists in the chain below ``top``

    def at(self, head: int) -> bool:
        """A row for this name exists in layer ``head``."""
        return self.top == head

    def under(self, head: int) -> bool:
        """A row for this name exists in an ancestor of ``head``."""
        return self.top is not None and (self.top != head or self.below)


@dataclass(slots=True)
class ExtDirty:
    """A file's content changes since its last commit. Applied at the head as: copy
    ``base``'s rows if ``base`` is not the head (copy-on-write), delete rows with
    idx >= ``trunc_from``, upsert ``sets``; then release ``release``."""

    base: int | None  # layer whose committed extents rows the changes apply to
    base_size: int  # the committed size: what others see until the changes are published
    trunc_from: int | None = None
    sets: dict[int, bytes] = field(default_factory=dict)
    release: set[bytes] = field(default_factory=set)  # blocks the published change stops using
    drop: bool = False  # delete every head row (the inode is gone)


@dataclass(slots=True)
class Stage:
    """Blocks of a file being written that a commit already stored: extents rows at
    layer ``-sid`` (and a ``stages`` row) keep release and gc off them until the
    file is published (see "Staged publication" in docs/design.md)."""

    sid: int
    rows: dict[int, bytes] = field(default_factory=dict)  # what the staging rows hold


_DELETE = object()  # dirent marker: delete the head row physically


class BlockCache:
    """LRU of immutable blocks, bounded in bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._d: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, h: bytes) -> bytes | None:
        data = self._d.get(h)
        if data is not None:
            self._d.move_to_end(h)
        return data

    def put(self, h: bytes, data: bytes) -> None:
        if h in self._d or len(data) > self.capacity // 4:
            return
        self._d[h] = data
        self.size += len(data)
        while self.size > self.capacity:
            _, old = self._d.popitem(last=False)
            self.size -= len(old)


def _now() -> int:
    return time.time_ns()


def translate_db_error(exc: psycopg.Error, path: str | None = None) -> Exception:
    """Tarbox's own SQLSTATEs (quotas, reclaimed stages) as filesystem errors; the rest
    as the database layer maps them (read-only, disk full, connection lost)."""
    code = getattr(exc, "sqlstate", None)
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if code in ("TBQ01", "TBQ02"):
        return fs_error(errno.EDQUOT, path, msg)
    if code == "TBS01":
        return fs_error(errno.EIO, path, msg)
    return db_error(exc)


def _rollback(conn: psycopg.Connection) -> None:
    """End whatever transaction the connection is in (it runs in autocommit mode)."""
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        pass


class _Flusher:
    """Commits write-back windows that reached their age: one daemon thread per process."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._due: list[tuple[float, int, weakref.ref, int]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, store: Store, when: float, window: int) -> None:
        with self._cv:
            heapq.heappush(self._due, (when, next(self._seq), weakref.ref(store), window))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tarbox-flusher", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cv.wait(None if not self._due else self._due[0][0] - time.monotonic())
                _, _, ref, window = heapq.heappop(self._due)
            store = ref()
            if store is not None:
                retry = store._expire(window)
                if retry is not None:
                    self.schedule(store, time.monotonic() + retry, window)


_flusher = _Flusher()


class Store:
    def __init__(
        self,
        db: Database,
        tenant_id: uuid.UUID,
        *,
        attr_timeout: float = 1.0,
        block_cache_bytes: int = 64 << 20,
        pinned_layer: int | None = None,
    ) -> None:
        self.db = db
        self.tid = tenant_id
        self.pinned = pinned_layer  # a read-only view of one layer instead of the head
        self.head_frozen = False
        self.attr_timeout = attr_timeout
        self.lock = threading.RLock()
        self.gen: int | None = None
        self.validated_at = 0.0
        self.head = 0
        self.chain: frozenset[int] = frozenset()
        self.chain_ids: list[int] = []  # the chain, newest first (query parameter)
        self.block_size = DEFAULT_BLOCK_SIZE
        # clean caches
        self.dcache: dict[tuple[int, str], Dentry] = {}
        self.children: dict[int, dict[str, int]] = {}  # complete listings only
        # resolved paths: (text, follow_symlinks) -> inode; any dirent change clears it
        self.pcache: dict[tuple[str, bool], int] = {}
        self.icache: dict[int, Inode] = {}
        self.xcache: dict[int, dict[int, bytes]] = {}
        self.bcache = BlockCache(block_cache_bytes)
        # full blocks of files being streamed, and those read ahead of the reader:
        # kept apart so a long stream cannot push small files out of bcache
        self.scache = BlockCache(_STREAM_CACHE_BYTES)
        # dirty (write-back) state
        self.d_inodes: dict[int, Inode | None] = {}
        self.d_dirents: dict[tuple[int, str], object] = {}
        self.d_ext: dict[int, ExtDirty] = {}
        self.d_blocks: dict[bytes, bytes] = {}
        self.d_ext_rows = 0  # extent rows set since the last flush (an upper bound)
        self.wbuf: dict[int, dict[int, bytearray | bytes]] = {}
        self.wbuf_bytes = 0
        self.d_block_bytes = 0
        self.write_errors: dict[int, Exception] = {}
        self.open_counts: dict[int, int] = {}
        # staged publication: files with descriptors that wrote since the file was published
        self.writers: dict[int, int] = {}  # ino -> such descriptors
        self.stages: dict[int, Stage] = {}  # ino -> blocks already stored for it
        self.d_unstage: dict[int, int] = {}  # stage id -> ino: staging rows to delete (lost stages)
        self._quiet: set[int] = set()  # held inos whose changes are all staged already
        self._publish_now: set[int] = set()  # inos fsync publishes although still being written
        # audit records of operations not yet committed: (ns, run id, op, path, path2, bytes, layer)
        self.d_audit: list[tuple] = []
        # monotonic time of this store's last retention prune; None: never (monotonic time
        # starts near 0 at boot, so no number can stand for "long ago")
        self._audit_pruned: float | None = None
        # transaction state
        self._txn: psycopg.Connection | None = None
        self._txn_cm = None
        self._batch_depth = 0
        self._mutated = False
        self._ino_next = 0
        self._ino_end = 0
        # write-back windows: the delays asked for by the runs in progress
        self._wb: list[float] = []
        self._window = False  # the open transaction is a window (not a batch, not one operation)
        self._window_id = 0
        self._room = (None, None)  # (bytes, inodes) left under the quotas when the lock was taken
        self._rd: tuple[psycopg.Connection, object] | None = None  # a read delegation (see refresh)
        self._rd_id = 0
        self.lost_windows = 0  # windows whose commit failed: their writes are gone
        self.stats = {"flushes": 0, "round_trips": 0, "windows": 0}

    # ------------------------------------------------------------------ DB access

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        if self._txn is not None:
            yield self._txn
        elif self._rd is not None:
            yield self._rd[0]
        else:
            with self.db.tenant(self.tid) as conn:
                yield conn

    def _q(self, sql: str, params: tuple | dict = (), *, binary: bool = False) -> list[tuple]:
        """Run one statement. Outside a transaction a broken pooled connection
        (e.g. after a server restart) is retried once on a fresh one; the pool
        drops broken connections, so no liveness ping is paid per checkout."""
        for attempt in (0, 1):
            self.stats["round_trips"] += 1
            try:
                with self._conn() as conn:
                    return conn.execute(sql, params, binary=binary).fetchall()
            except (psycopg.OperationalError, ConnectionLostError) as exc:
                if attempt or self._txn is not None:
                    raise DatabaseError(f"database connection failed: {exc}".strip()) from exc
                self._release_delegation()  # its connection broke; go on without it
                self.db.discard_broken()
            except psycopg.Error as exc:
                raise translate_db_error(exc) from exc
        raise AssertionError("unreachable")

    def _newest(self, sql: str, params: tuple, want: int) -> list[tuple]:
        """The newest ``want`` versions (first column: layer_id) among the head's ancestors.

        Scans backwards from the head; in a linear history the first rows are
        the answer, so the cost does not grow with the depth of history. Rows
        of sibling branches are skipped; if they crowd the window, the query is
        repeated with the chain as an explicit filter.
        """
        window = want + 2
        rows = self._q(sql + " AND layer_id <= %s ORDER BY layer_id DESC LIMIT %s", (*params, self.head, window))
        hits = [r for r in rows if r[0] in self.chain]
        if len(hits) >= want or len(rows) < window:
            return hits[:want]
        rows = self._q(sql + " AND layer_id = ANY(%s) ORDER BY layer_id DESC LIMIT %s", (*params, self.chain_ids, want))
        return rows

    # --------------------------------------------------------------- validation

    _STATE_SQL = (
        "SELECT s.gen, s.head_layer, s.block_size, l.frozen FROM tenant_state s"
        " JOIN layers l ON l.tenant_id = s.tenant_id AND l.layer_id = s.head_layer WHERE s.tenant_id = %s"
    )

    def _state(self, conn: psycopg.Connection | None = None, *, settle: bool = False) -> tuple:
        """(gen, head layer, block size, head frozen) in one round trip; with ``settle``,
        once no other process has a write-back window open on the tenant."""
        if settle:
            rows = self._q("SELECT gen, head_layer, block_size, frozen FROM tarbox_share_state()")
        elif conn is None:
            rows = self._q(self._STATE_SQL, (self.tid,))
        else:
            rows = conn.execute(self._STATE_SQL, (self.tid,)).fetchall()
        if not rows:
            raise TenantNotFoundError(f"tenant {self.tid} does not exist")
        return rows[0]

    def _load_state(self, row: tuple | None = None) -> None:
        """Adopt a state row from ``_state()``; reload the chain if the head moved."""
        if row is None:
            row = self._state()
        gen, head, bs, frozen = row
        self.block_size = bs
        if self.pinned is not None:
            head = self.pinned
        if head != self.head or not self.chain:
            chain = self._q(
                """WITH RECURSIVE c(layer_id, parent_id) AS (
                       SELECT layer_id, parent_id FROM layers WHERE tenant_id = %(t)s AND layer_id = %(h)s
                       UNION ALL
                       SELECT l.layer_id, l.parent_id FROM layers l JOIN c
                         ON l.tenant_id = %(t)s AND l.layer_id = c.parent_id)
                   SELECT layer_id FROM c""",
                {"t": self.tid, "h": head},
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
        """Revalidate caches against the database (close-to-open check)."""
        with self.lock:
            if self._txn is not None or self._rd is not None:
                return  # we hold the tenant's lock (exclusive or shared): nobody else can commit
            now = time.monotonic()
            if not force and self.gen is not None and now - self.validated_at < self.attr_timeout:
                return
            if self._wb and self.pinned is None:
                row = self._delegate()
            else:
                row = self._state(settle=self.pinned is None)  # a pinned layer never changes
            if row[0] != self.gen:
                self._invalidate()
                self._load_state(row)
            self.validated_at = now

    def _delegate(self) -> tuple:
        """Revalidate and keep the tenant's advisory lock shared for up to one write-back
        delay (a read delegation): until then no one else commits, so opens need not ask."""

        def share(conn: psycopg.Connection, upgrade: bool) -> tuple | None:
            self.stats["round_trips"] += 1
            with conn.pipeline():
                conn.execute("BEGIN")
                cur = conn.execute("SELECT * FROM tarbox_share_state()")
            return cur.fetchone()

        conn, cm, row = self._connect(share)
        if row is None or not row[4]:
            _rollback(conn)
            cm.__exit__(None, None, None)
            if row is None:
                raise TenantNotFoundError(f"tenant {self.tid} does not exist")
            return row[:4]
        self._rd = (conn, cm)
        self._rd_id += 1
        _flusher.schedule(self, time.monotonic() + min(self._wb), -self._rd_id)
        return row[:4]

    def _release_delegation(self) -> None:
        rd, self._rd = self._rd, None
        if rd is not None:
            _rollback(rd[0])
            rd[1].__exit__(None, None, None)

    def _invalidate(self) -> None:
        """Drop clean cache entries; entries with pending writes stay (last writer wins)."""
        keep = set(self.d_inodes) | set(self.wbuf) | set(self.d_ext)
        self.dcache = {}
        self.children = {}
        self.pcache = {}
        if keep:
            self.icache = {k: v for k, v in self.icache.items() if k in keep}
            self.xcache = {k: v for k, v in self.xcache.items() if k in keep}
        else:
            self.icache, self.xcache = {}, {}

    # ---------------------------------------------------------------- lookups

    def dentry(self, parent: int, name: str) -> Dentry:
        d = self.dcache.get((parent, name))
        if d is not None:
            return d
        if parent in self.children:
            # complete listing: listing() cached every name that has rows
            return Dentry(None, None, False)
        # newest two versions in the chain: a backward index scan that stops early,
        # so the cost does not grow with the depth of history
        rows = self._newest(
            "SELECT layer_id, ino FROM dirents WHERE tenant_id = %s AND parent_ino = %s AND name = %s",
            (self.tid, parent, name),
            2,
        )
        d = Dentry(rows[0][1], rows[0][0], len(rows) > 1) if rows else Dentry(None, None, False)
        self.dcache[(parent, name)] = d
        return d

    def lookup(self, parent: int, name: str) -> int | None:
        kids = self.children.get(parent)
        if kids is not None:
            return kids.get(name)
        return self.dentry(parent, name).ino

    def inode(self, ino: int) -> Inode | None:
        if ino in self.d_inodes:
            return self.d_inodes[ino]  # None: deleted, not yet flushed
        node = self.icache.get(ino)
        if node is not None:
            return node
        rows = self._newest(
            "SELECT layer_id, kind, mode, nlink, size, atime_ns, mtime_ns, ctime_ns, target, content_layer"
            " FROM inodes WHERE tenant_id = %s AND ino = %s",
            (self.tid, ino),
            1,
        )
        if not rows:
            return None
        r = rows[0]
        node = Inode(ino, FileType(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[0], r[9])
        self.icache[ino] = node
        return node

    def inodes(self, inos: Iterable[int]) -> dict[int, Inode]:
        """Fetch many inodes in one query (readdir with types)."""
        out: dict[int, Inode] = {}
        missing = []
        for ino in inos:
            node = self.d_inodes[ino] if ino in self.d_inodes else self.icache.get(ino)
            if node is not None:
                out[ino] = node
            elif ino not in self.d_inodes:
                missing.append(ino)
        if missing:
            rows = self._q(
                "SELECT DISTINCT ON (ino) ino, layer_id, kind, mode, nlink, size, atime_ns, mtime_ns, ctime_ns,"
                " target, content_layer FROM inodes"
                " WHERE tenant_id = %s AND ino = ANY(%s) AND layer_id = ANY(%s) ORDER BY ino, layer_id DESC",
                (self.tid, missing, self.chain_ids),
            )
            for r in rows:
                ino = r[0]
                node = Inode(ino, FileType(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[1], r[10])
                self.icache[ino] = node
                out[ino] = node
        return out

    def listing(self, dir_ino: int) -> dict[str, int]:
        kids = self.children.get(dir_ino)
        if kids is not None:
            return kids
        # one row per name: its newest version in the chain, and how many versions it has there
        rows = self._q(
            "SELECT DISTINCT ON (name) name, layer_id, ino, count(*) OVER (PARTITION BY name) FROM dirents"
            " WHERE tenant_id = %s AND parent_ino = %s AND layer_id = ANY(%s) ORDER BY name, layer_id DESC",
            (self.tid, dir_ino, self.chain_ids),
        )
        kids = {}
        for name, layer, ino, versions in rows:
            if (dir_ino, name) in self.d_dirents:
                continue  # changed in this write-back window: dcache holds the truth
            self.dcache[(dir_ino, name)] = Dentry(ino, layer, versions > 1)
            if ino is not None:
                kids[name] = ino
        for p, name in self.d_dirents:
            if p == dir_ino:
                d = self.dcache[(p, name)]
                if d.ino is None:
                    kids.pop(name, None)
                else:
                    kids[name] = d.ino
        self.children[dir_ino] = kids
        return kids

    def xmap(self, node: Inode) -> dict[int, bytes]:
        xm = self.xcache.get(node.ino)
        if xm is not None:
            return xm
        if node.content_layer is None or node.size == 0:
            xm = {}
        else:
            rows = self._q(
                "SELECT idx, hash FROM extents WHERE tenant_id = %s AND ino = %s AND layer_id = %s",
                (self.tid, node.ino, node.content_layer),
                binary=True,
            )
            xm = {r[0]: bytes(r[1]) for r in rows}
        self.xcache[node.ino] = xm
        return xm

    # ------------------------------------------------------------------ blocks

    def blocks(self, hashes: list[bytes], ahead: Callable[[], list[bytes]] | None = None) -> dict[bytes, bytes]:
        """The data of ``hashes``; if some must come from the database, the hashes
        ``ahead()`` names come along in the same query (read-ahead)."""
        out: dict[bytes, bytes] = {}
        missing = []
        for h in hashes:
            data = self.d_blocks.get(h) or self.bcache.get(h) or self.scache.get(h)
            if data is None:
                missing.append(h)
            else:
                out[h] = data
        if missing:
            if ahead is not None:
                missing += ahead()
            rows = self._q(
                "SELECT hash, data FROM blocks WHERE tenant_id = %s AND hash = ANY(%b)",
                (self.tid, missing),
                binary=True,
            )
            for h, data in rows:
                h, data = bytes(h), bytes(data)
                if len(data) < self.block_size:
                    self.bcache.put(h, data)  # see _seal: full blocks stream, small ones are re-read
                else:
                    self.scache.put(h, data)
                out[h] = data
            lost = [h for h in hashes if h not in out]
            if lost:
                raise fs_error(errno.EIO, None, f"block {lost[0].hex()[:16]} is missing (file changed or corrupt)")
        return out

    def _ahead(self, xm: dict[int, bytes], wb: dict, last: int) -> list[bytes]:
        """Blocks after ``last`` worth fetching in the same query: a read that had to go
        to the database is usually one of a sequence."""
        out = []
        for i in range(last + 1, last + 1 + _READ_AHEAD):
            h = xm.get(i)
            if h is None or i in wb:
                break
            if self.scache.get(h) is None and self.bcache.get(h) is None:
                out.append(h)
        return out

    def _block_data(self, node: Inode, idx: int, xm: dict[int, bytes]) -> bytes | bytearray:
        wb = self.wbuf.get(node.ino)
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
        wb = self.wbuf.get(node.ino, {})
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

    # --------------------------------------------------------------- mutation

    @contextmanager
    def writing(self, *, publish: bool = False) -> Iterator[None]:
        """Scope of one mutating operation: holds the tenant write lock, then flushes.

        Inside a batch the lock is already held and the flush is deferred; with
        write-back on, the operation opens (or joins) a window instead.
        ``publish`` commits at the end whatever the mode (layer operations).
        """
        with self.lock:
            if self._txn is None:
                self._begin()
                if publish or not self._wb or not self._roomy():
                    yield from self._one_operation()
                    return
                self._start_window()
            self._mutated = False
            try:
                yield
            except BaseException as exc:
                if self._mutated or self._txn_failed():
                    self._abort(exc)
                raise
            if self._batch_depth:
                if self._over_thresholds():
                    self._commit_and_relock()
            elif publish or self._over_thresholds():
                self._close_window()

    def _one_operation(self) -> Iterator[None]:
        """The body of ``writing`` for an operation committed on its own."""
        try:
            yield
        except BaseException as exc:
            try:
                if self._mutated:
                    self._abort(exc)
                else:  # refused before changing anything (EEXIST, ENOENT, ...): keep others' buffered writes
                    _rollback(self._txn)
            finally:
                self._end()
            raise
        self._flush_and_end()

    def _over_thresholds(self) -> bool:
        return self.wbuf_bytes + self.d_block_bytes > FLUSH_BYTES or self._dirty_rows() > FLUSH_ROWS

    def _txn_failed(self) -> bool:
        """Is the open transaction unusable (a statement failed, or the connection broke)?"""
        return self._txn is not None and self._txn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Defer commits: every operation inside shares one write-back window."""
        with self.lock:
            if self._batch_depth == 0:
                if self._window:
                    self._close_window()
                if self._txn is None:
                    self._begin()
            self._batch_depth += 1
        try:
            yield
        finally:
            with self.lock:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self._txn is not None:
                    self._flush_and_end()

    @contextmanager
    def write_back(self, seconds: float) -> Iterator[None]:
        """While inside, changes collect in windows of up to ``seconds`` (see the module
        docstring); everything pending is committed on the way out."""
        with self.lock:
            self._wb.append(seconds)
        try:
            yield
        finally:
            with self.lock:
                self._wb.remove(seconds)
                try:
                    self.commit()
                finally:
                    if not self._wb:
                        self._release_delegation()

    def commit(self, durable: bool = False, *, publish: int | None = None) -> None:
        """Flush pending writes now (close/fsync). ``durable`` waits for the WAL flush;
        ``publish`` is a file to publish although descriptors are still writing it (fsync)."""
        with self.lock:
            if publish is not None:
                self._publish_now.add(publish)
                self._unhold(publish)
            try:
                if self._txn is not None:
                    if self._batch_depth:
                        self._commit_and_relock(durable)
                    else:
                        self._close_window(durable)
                elif self._has_dirty() or durable:
                    self._begin()
                    self._flush_and_end(durable)
            finally:
                self._publish_now.discard(publish)

    def publish_close(self) -> None:
        """A file written to was closed. Without write-back that commits now; with it the
        open window (or a new one) carries the file, unless it is time to commit."""
        with self.lock:
            if not self._wb or self._batch_depth:
                self.commit()
                return
            if self._txn is None:
                if not self._has_dirty():
                    return
                self._begin()
                if not self._roomy():
                    self._flush_and_end()
                    return
                self._start_window()
            if self._over_thresholds():
                self._close_window()

    def _flush_and_end(self, durable: bool = False) -> None:
        try:
            self._flush(self._txn, durable)
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            self._end()

    def _roomy(self) -> bool:
        """Is the tenant far enough from its quotas for a window to run ahead of the check?"""
        room_bytes, room_inodes = self._room
        return (room_bytes is None or room_bytes > _WINDOW_ROOM_BYTES) and (
            room_inodes is None or room_inodes > _WINDOW_ROOM_INODES
        )

    def _start_window(self) -> None:
        self._window = True
        self._window_id += 1
        self.stats["windows"] += 1
        _flusher.schedule(self, time.monotonic() + min(self._wb), self._window_id)

    def _close_window(self, durable: bool = False) -> None:
        """Commit the open window and give the lock back."""
        if self._txn is not None:
            self._flush_and_end(durable)

    def _expire(self, ident: int) -> float | None:
        """Called by the flusher when window ``ident`` (or read delegation ``-ident``) is due.
        Returns a delay to try again after."""
        if not self.lock.acquire(timeout=0.005):
            return 0.002  # an operation is in progress; the window commits right after it
        try:
            if ident < 0:
                if self._rd is not None and self._rd_id == -ident:
                    self._release_delegation()
            elif self._window and self._window_id == ident:
                try:
                    self._close_window()
                except Exception:  # noqa: BLE001 - recorded by _abort (lost_windows, write_errors)
                    pass
        finally:
            self.lock.release()
        return None

    def _begin(self) -> None:
        """Take the tenant's write lock in a new transaction (on the read delegation's
        connection if we hold one: the upgrade costs the same single round trip)."""
        conn, cm, _ = self._connect(lambda conn, upgrade: self._acquire(conn, upgrade=upgrade))
        self._txn, self._txn_cm = conn, cm
        self._mutated = False

    def _connect(self, start: Callable[[psycopg.Connection, bool], object]) -> tuple:
        """A connection with ``start(conn, upgrade)`` run on it: the read delegation's
        (``upgrade``) or a pooled one. One found broken (a server restart, a terminated
        backend) is replaced once; on any failure the connection goes back to the pool."""
        for attempt in (0, 1):
            if self._rd is not None:
                (conn, cm), self._rd, upgrade = self._rd, None, True
            else:
                cm = self.db.tenant(self.tid)
                try:
                    conn, upgrade = cm.__enter__(), False
                except ConnectionLostError:  # binding the connection found it broken
                    if attempt:
                        raise
                    self.db.discard_broken()
                    continue
            try:
                return conn, cm, start(conn, upgrade)
            except psycopg.OperationalError as exc:
                _rollback(conn)
                cm.__exit__(None, None, None)  # the pool discards a broken connection
                if attempt:
                    raise DatabaseError(f"database connection failed: {exc}".strip()) from exc
                self.db.discard_broken()
            except BaseException as exc:
                _rollback(conn)
                cm.__exit__(type(exc), exc, exc.__traceback__)
                if isinstance(exc, psycopg.Error):
                    raise translate_db_error(exc) from exc
                raise
        raise AssertionError("unreachable")

    def _end(self) -> None:
        cm, self._txn, self._txn_cm = self._txn_cm, None, None
        self._window = False
        if cm is not None:
            cm.__exit__(None, None, None)

    def _acquire(self, conn: psycopg.Connection, *, upgrade: bool = False) -> None:
        self.stats["round_trips"] += 1
        with conn.pipeline():
            if upgrade:
                conn.execute("COMMIT")
            conn.execute("BEGIN")
            cur = conn.execute("SELECT * FROM tarbox_lock_usage()")
        row = cur.fetchone()
        if row is None:
            raise TenantNotFoundError(f"tenant {self.tid} does not exist")
        before, used_bytes, quota_bytes, used_inodes, quota_inodes = row
        self._room = (
            None if quota_bytes is None else quota_bytes - used_bytes,
            None if quota_inodes is None else quota_inodes - used_inodes,
        )
        if before != self.gen:
            self._invalidate()
            row = self._state(conn)
            with self._using(conn):
                self._load_state((before, *row[1:]))
                self._recheck_pending()
        self.gen = before + 1  # the generation our commit will publish
        self.validated_at = time.monotonic()
        if self.head_frozen and self.pinned is None:
            # the view is a frozen layer (after switch): writing branches off it
            with self._using(conn):
                self._open_child(self.head, "")

    @contextmanager
    def _using(self, conn: psycopg.Connection) -> Iterator[None]:
        """Route _q through ``conn`` (the locked transaction) for a moment."""
        prev, self._txn = self._txn, conn
        try:
            yield
        finally:
            self._txn = prev

    def _commit_and_relock(self, durable: bool = False) -> None:
        conn = self._txn
        assert conn is not None
        try:
            self._flush(conn, durable)
            self._acquire(conn)
        except BaseException as exc:
            self._abort(exc)
            self._end()
            raise

    def _abort(self, cause: BaseException | None = None) -> None:
        """A write failed: roll back and forget everything not committed. Files whose
        buffered writes go with it fail at close with the cause's errno when it is the
        quota or a full disk (their data was refused too), else EIO."""
        if self._txn is not None:
            _rollback(self._txn)
        if self._window:
            # closes already reported success for what the window held
            self.lost_windows += 1
        code = getattr(cause, "errno", None)
        if code not in (errno.EDQUOT, errno.ENOSPC):
            code = errno.EIO
        for ino in set(self.wbuf) | set(self.d_ext):
            self.write_errors.setdefault(ino, fs_error(code, None, "buffered writes were lost"))
        for ino, st in self.stages.items():
            self.d_unstage[st.sid] = ino  # its staging rows (if committed) go at the next flush
        self.stages.clear()
        self._clear_dirty()
        self.dcache.clear()
        self.children.clear()
        self.pcache.clear()
        self.icache.clear()
        self.xcache.clear()
        self.gen = None
        if self._window:
            self._end()
        elif self._txn is not None and self._batch_depth > 0:
            # the batch keeps its connection: take the lock afresh
            try:
                self._acquire(self._txn)
            except BaseException:
                self._end()

    def _has_dirty(self) -> bool:
        return bool(
            self.d_inodes
            or self.d_dirents
            or self.wbuf
            or self.d_blocks
            or self.d_unstage
            or self.d_audit
            or len(self.d_ext) > len(self._quiet)
        )

    def _dirty_rows(self) -> int:
        """Rows the next flush writes, at most (asked after every operation: kept O(1))."""
        return len(self.d_inodes) + len(self.d_dirents) + self.d_ext_rows + len(self.d_audit)

    def _clear_dirty(self, held: Iterable[int] = ()) -> None:
        """Forget what was committed (or lost); ``held`` files keep their staged changes."""
        self.d_inodes.clear()
        self.d_dirents.clear()
        self.d_ext = {ino: self.d_ext[ino] for ino in held}
        self._quiet = set(self.d_ext)
        self.d_blocks.clear()
        self.d_audit.clear()  # committed with the changes, or lost with them
        self.d_ext_rows = 0
        self.wbuf.clear()
        self.wbuf_bytes = 0
        self.d_block_bytes = 0

    def alloc_ino(self) -> int:
        if self._ino_next >= self._ino_end:
            base = self._q("SELECT nextval('ino_seq')")[0][0]
            self._ino_next, self._ino_end = base, base + _INO_RANGE
        ino = self._ino_next
        self._ino_next += 1
        return ino

    def create_inode(self, kind: FileType, mode: int, *, target: str | None = None, nlink: int = 1) -> Inode:
        self._mutated = True
        now = _now()
        size = len(target.encode()) if target is not None else 0
        node = Inode(
            self.alloc_ino(),
            kind,
            mode & 0o7777,
            nlink,
            size,
            now,
            now,
            now,
            target,
            self.head,
            self.head if kind is FileType.FILE else None,
        )
        self.icache[node.ino] = node
        self.d_inodes[node.ino] = node
        if kind is FileType.FILE:
            self.xcache[node.ino] = {}
        return node

    def touch(self, node: Inode) -> Inode:
        """Make ``node`` the head version (copy-on-write of the inode row) and mark it dirty."""
        self._mutated = True
        node.layer_id = self.head
        self.d_inodes[node.ino] = node
        self.icache[node.ino] = node
        return node

    def set_dentry(self, parent: int, name: str, ino: int | None) -> None:
        """Point ``name`` at ``ino``, or remove it (``None``), in the head layer."""
        self._mutated = True
        self.pcache.clear()
        d = self.dentry(parent, name)
        head = self.head
        older = d.under(head)
        if ino is None and not older:
            if d.at(head):
                self.d_dirents[(parent, name)] = _DELETE  # nothing below: remove the row itself
            new = Dentry(None, None, False)
        else:
            # a new version at the head, or a whiteout hiding the older version
            self.d_dirents[(parent, name)] = ino
            new = Dentry(ino, head, older)
        self.dcache[(parent, name)] = new
        kids = self.children.get(parent)
        if kids is not None:
            if ino is None:
                kids.pop(name, None)
            else:
                kids[name] = ino

    def note_new_dir(self, ino: int) -> None:
        """A directory we just created is empty: its listing is complete."""
        self.children[ino] = {}

    def drop_inode(self, node: Inode) -> None:
        """The inode lost its last link: delete its head version and release its blocks."""
        self._mutated = True
        if node.kind is FileType.FILE and (node.content_layer == self.head or node.ino in self.d_ext):
            xm = self.xmap(node)
            ext = self._ext(node)
            ext.release.update(xm.values())
            ext.drop = True
            ext.sets.clear()
        buf = self.wbuf.pop(node.ino, None)
        if buf:
            self.wbuf_bytes -= sum(len(b) for b in buf.values())
        self.d_inodes[node.ino] = None
        self.icache.pop(node.ino, None)
        self.xcache.pop(node.ino, None)

    def _ext(self, node: Inode) -> ExtDirty:
        """The node's pending content changes, begun at its committed state if there are none."""
        ext = self.d_ext.get(node.ino)
        if ext is None:
            ext = self.d_ext[node.ino] = ExtDirty(node.content_layer, node.size)
        self._quiet.discard(node.ino)
        return ext

    def _content(self, node: Inode) -> tuple[dict[int, bytes], ExtDirty]:
        """Prepare ``node`` for a content change (copy-on-write of its extent map)."""
        xm = self.xmap(node)
        self.touch(node)
        ext = self._ext(node)
        node.content_layer = self.head
        return xm, ext

    def write(self, node: Inode, offset: int, data: bytes | bytearray | memoryview) -> None:
        if node.ino in self.write_errors:
            raise self.write_errors.pop(node.ino)
        n = len(data)
        if n == 0:
            return
        xm, _ = self._content(node)
        bs = self.block_size
        mv = memoryview(data)
        wb = self.wbuf.setdefault(node.ino, {})
        end = offset + n
        i = offset // bs
        while i * bs < end:
            bstart = i * bs
            lo = max(offset, bstart) - bstart
            hi = min(end, bstart + bs) - bstart
            piece = mv[bstart + lo - offset : bstart + hi - offset]
            old = wb.get(i)
            if old is None and lo == 0 and (hi == bs or bstart + hi >= node.size):
                # the write covers every existing byte of this block: no need to read it
                wb[i] = bytes(piece) if hi == bs else bytearray(piece)
                self.wbuf_bytes += hi
            else:
                if old is None:
                    old = bytearray(self._block_data(node, i, xm))
                    wb[i] = old
                    self.wbuf_bytes += len(old)
                elif isinstance(old, bytes):
                    old = bytearray(old)
                    wb[i] = old
                if len(old) < lo:
                    self.wbuf_bytes += lo - len(old)
                    old.extend(bytes(lo - len(old)))
                grow = max(0, hi - len(old))
                old[lo:hi] = piece
                self.wbuf_bytes += grow
            i += 1
        now = _now()
        node.size = max(node.size, end)
        node.mtime_ns = node.ctime_ns = now
        if self.wbuf_bytes > FLUSH_BYTES:
            self._seal(node.ino)

    def truncate(self, node: Inode, size: int) -> None:
        if size == node.size:
            node.mtime_ns = node.ctime_ns = _now()
            self.touch(node)
            return
        xm, ext = self._content(node)
        bs = self.block_size
        if size < node.size:
            keep = -(-size // bs)  # blocks that survive, the last maybe partially
            wb = self.wbuf.get(node.ino, {})
            for i in [i for i in wb if i >= keep]:
                self.wbuf_bytes -= len(wb.pop(i))
            for i in [i for i in xm if i >= keep]:
                ext.release.add(xm.pop(i))
                ext.sets.pop(i, None)
            for i in [i for i in ext.sets if i >= keep]:
                del ext.sets[i]
            ext.trunc_from = keep if ext.trunc_from is None else min(ext.trunc_from, keep)
            tail = size % bs
            if tail:
                i = size // bs
                cur = wb.get(i)
                if cur is None and i in xm:
                    cur = self._block_data(node, i, xm)
                if cur is not None and len(cur) > tail:
                    wb = self.wbuf.setdefault(node.ino, {})
                    prev = len(wb.get(i, b""))
                    wb[i] = bytearray(cur[:tail])
                    self.wbuf_bytes += tail - prev
        node.size = size
        node.mtime_ns = node.ctime_ns = _now()

    def _seal(self, only: int | None = None) -> None:
        """Hash buffered blocks into content-addressed blocks and extent updates."""
        inos = [only] if only is not None else list(self.wbuf)
        for ino in inos:
            wb = self.wbuf.pop(ino, None)
            if not wb:
                continue
            node = self.d_inodes.get(ino) or self.icache.get(ino)
            xm = self.xcache.setdefault(ino, {})
            ext = self.d_ext[ino]  # every buffered block was written through _content
            self._quiet.discard(ino)
            for i, buf in wb.items():
                self.wbuf_bytes -= len(buf)
                if node is not None and i * self.block_size >= node.size:
                    continue
                data = bytes(buf)
                h = blake3.blake3(data).digest()
                old = xm.get(i)
                if old == h:
                    continue
                if old is not None:
                    ext.release.add(old)
                xm[i] = h
                ext.sets[i] = h
                self.d_ext_rows += 1
                if h not in self.d_blocks:
                    self.d_blocks[h] = data
                    self.d_block_bytes += len(data)
                if len(data) < self.block_size:
                    # small files are often read right back; streamed full blocks
                    # would only push them out of the cache
                    self.bcache.put(h, data)
        if only is not None and self.d_block_bytes > FLUSH_BYTES:
            self.commit()

    # ------------------------------------------------------------------ flush

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

    def _held(self) -> set[int]:
        """Files whose content changes stay out of this commit: a descriptor is still writing them."""
        return {
            ino
            for ino, e in self.d_ext.items()
            if self.writers.get(ino) and not e.drop and ino not in self._publish_now
        }

    def _flush(self, conn: psycopg.Connection, durable: bool = False) -> None:
        self._seal()
        if not self._has_dirty() and not durable:
            conn.execute("COMMIT")
            return
        t, head = self.tid, self.head
        held = self._held()
        pub = {ino: e for ino, e in self.d_ext.items() if ino not in held}
        for ino, e in pub.items():
            node = self.d_inodes.get(ino) or self.icache.get(ino)
            if node is not None and not e.drop:
                node.content_layer = head  # the published bytes live at the head from now on
        ins = [n for n in self.d_inodes.values() if n is not None]
        # a held file's row keeps its committed size and content: others see the old version
        shown = {ino: (self.d_ext[ino].base_size, self.d_ext[ino].base) for ino in held}
        dels = [ino for ino, n in self.d_inodes.items() if n is None]
        de_del = [k for k, v in self.d_dirents.items() if v is _DELETE]
        de_set = [(k, v) for k, v in self.d_dirents.items() if v is not _DELETE]
        referenced = set()
        for e in self.d_ext.values():
            referenced.update(e.sets.values())
        release = list({h for e in pub.values() for h in e.release if h not in referenced})
        # blocks sealed and then overwritten, truncated or dropped before this commit are not stored at all
        blocks = {h: data for h, data in self.d_blocks.items() if h in referenced}
        staging: list[tuple[int, int, int, bytes]] = []  # (ino, stage id, idx, hash)
        for ino in held:
            st = self.stages.get(ino)
            if st is None:
                st = self.stages[ino] = Stage(self.alloc_ino())  # ids from the inode sequence: unique
            staging += [(ino, st.sid, i, h) for i, h in self.d_ext[ino].sets.items() if st.rows.get(i) != h]
        renew = [(st.sid, ino) for ino, st in self.stages.items() if ino in held]
        unstage = [(st.sid, ino) for ino, st in self.stages.items() if ino not in held]
        lost = list(self.d_unstage.items())
        # Pipelining saves round trips for small flushes; psycopg can stall when
        # a pipelined statement carries a large payload (psycopg issue #685),
        # so large flushes send their statements one at a time.
        small = self.d_block_bytes <= _PIPELINE_MAX_BYTES and self._dirty_rows() <= _PIPELINE_MAX_ROWS
        try:
            with conn.pipeline() if small else nullcontext():
                if durable:
                    conn.execute("SET LOCAL synchronous_commit = on")
                if dels or ins:
                    # inode rows are counted as they are really inserted and deleted
                    conn.execute(
                        """WITH d AS (
                               DELETE FROM inodes WHERE tenant_id = %(t)s AND layer_id = %(h)s AND ino = ANY(%(dels)s)
                               RETURNING 1),
                           i AS (
                               INSERT INTO inodes (tenant_id, ino, layer_id, kind, mode, nlink, size,
                                                   atime_ns, mtime_ns, ctime_ns, target, content_layer)
                               SELECT %(t)s, u.i, %(h)s, u.k, u.m, u.n, u.s, u.a, u.mt, u.c, u.tg, u.cl
                               FROM unnest(%(i)s::int8[], %(k)s::int2[], %(m)s::int4[], %(n)s::int4[], %(s)s::int8[],
                                    %(a)s::int8[], %(mt)s::int8[], %(c)s::int8[], %(tg)s::text[], %(cl)s::int8[])
                                    AS u(i, k, m, n, s, a, mt, c, tg, cl)
                               ON CONFLICT (tenant_id, ino, layer_id) DO UPDATE SET
                                   kind = EXCLUDED.kind, mode = EXCLUDED.mode, nlink = EXCLUDED.nlink,
                                   size = EXCLUDED.size, atime_ns = EXCLUDED.atime_ns, mtime_ns = EXCLUDED.mtime_ns,
                                   ctime_ns = EXCLUDED.ctime_ns, target = EXCLUDED.target,
                                   content_layer = EXCLUDED.content_layer
                               RETURNING xmax = 0 AS new)
                           UPDATE tenant_state SET used_inodes = used_inodes
                               + (SELECT count(*) FROM i WHERE new) - (SELECT count(*) FROM d)
                           WHERE tenant_id = %(t)s""",
                        {
                            "t": t,
                            "h": head,
                            "dels": dels,
                            "i": [n.ino for n in ins],
                            "k": [int(n.kind) for n in ins],
                            "m": [n.mode for n in ins],
                            "n": [n.nlink for n in ins],
                            "s": [shown[n.ino][0] if n.ino in shown else n.size for n in ins],
                            "a": [n.atime_ns for n in ins],
                            "mt": [n.mtime_ns for n in ins],
                            "c": [n.ctime_ns for n in ins],
                            "tg": [n.target for n in ins],
                            "cl": [shown[n.ino][1] if n.ino in shown else n.content_layer for n in ins],
                        },
                    )
                if de_del:
                    conn.execute(
                        # parent and name as index conditions (= ANY), so the plan never depends on
                        # statistics; the pair test then drops the cross-product's extra rows
                        """DELETE FROM dirents d
                           WHERE d.tenant_id = %(t)s AND d.parent_ino = ANY(%(p)s) AND d.name = ANY(%(n)s)
                             AND d.layer_id = %(h)s
                             AND (d.parent_ino, d.name) IN (SELECT * FROM unnest(%(p)s::int8[], %(n)s::text[]))""",
                        {"p": [k[0] for k in de_del], "n": [k[1] for k in de_del], "t": t, "h": head},
                    )
                if de_set:
                    conn.execute(
                        """INSERT INTO dirents (tenant_id, parent_ino, name, layer_id, ino)
                           SELECT %s, u.p, u.n, %s, u.i FROM unnest(%s::int8[], %s::text[], %s::int8[]) AS u(p, n, i)
                           ON CONFLICT (tenant_id, parent_ino, name, layer_id) DO UPDATE SET ino = EXCLUDED.ino""",
                        (
                            t,
                            head,
                            [k[0] for k, _ in de_set],
                            [k[1] for k, _ in de_set],
                            [v for _, v in de_set],
                        ),
                    )
                drops = [ino for ino, e in pub.items() if e.drop]
                if drops:
                    conn.execute(
                        "DELETE FROM extents WHERE tenant_id = %s AND layer_id = %s AND ino = ANY(%s)",
                        (t, head, drops),
                    )
                copies = [(ino, e.base) for ino, e in pub.items() if not e.drop and e.base not in (None, head)]
                if copies:
                    conn.execute(
                        """INSERT INTO extents (tenant_id, ino, layer_id, idx, hash)
                           SELECT e.tenant_id, e.ino, %s, e.idx, e.hash
                           FROM extents e JOIN unnest(%s::int8[], %s::int8[]) AS u(i, l)
                             ON e.ino = u.i AND e.layer_id = u.l
                           WHERE e.tenant_id = %s
                           ON CONFLICT DO NOTHING""",
                        (head, [c[0] for c in copies], [c[1] for c in copies], t),
                    )
                truncs = [(ino, e.trunc_from) for ino, e in pub.items() if e.trunc_from is not None and not e.drop]
                if truncs:
                    conn.execute(
                        """DELETE FROM extents e USING unnest(%s::int8[], %s::int8[]) AS u(i, f)
                           WHERE e.tenant_id = %s AND e.layer_id = %s AND e.ino = u.i AND e.idx >= u.f""",
                        ([c[0] for c in truncs], [c[1] for c in truncs], t, head),
                    )
                sets = [(ino, 0, i, h) for ino, e in pub.items() if not e.drop for i, h in e.sets.items()]
                for rows, layer in ((sets, head), (staging, None)):
                    if rows:  # staging rows sit at the negative layer -(stage id)
                        conn.execute(
                            """INSERT INTO extents (tenant_id, ino, layer_id, idx, hash)
                               SELECT %s, u.i, coalesce(%s::int8, -u.s), u.x, u.h
                               FROM unnest(%s::int8[], %s::int8[], %s::int8[], %b::bytea[]) AS u(i, s, x, h)
                               ON CONFLICT (tenant_id, ino, layer_id, idx) DO UPDATE SET hash = EXCLUDED.hash""",
                            (
                                t,
                                layer,
                                [r[0] for r in rows],
                                [r[1] for r in rows],
                                [r[2] for r in rows],
                                [r[3] for r in rows],
                            ),
                        )
                if renew:
                    conn.execute(
                        "SELECT tarbox_stage(%s::int8[], %s::int8[])", ([r[0] for r in renew], [r[1] for r in renew])
                    )
                for stages, strict in ((unstage, True), (lost, False)):
                    if stages:  # strict: the staged blocks must still be there (gc may reclaim old stages)
                        conn.execute(
                            "SELECT tarbox_unstage(%s::int8[], %s::int8[], %s)",
                            ([r[0] for r in stages], [r[1] for r in stages], strict),
                        )
                if self.d_audit:
                    self._write_audit(conn)
                apply = "SELECT tarbox_apply_blocks(%b::bytea[], %b::bytea[], %b::bytea[], 0)"
                if small:
                    if blocks or release:
                        conn.execute(apply, (list(blocks), list(blocks.values()), release))
                else:
                    # releases first, so the quota check after each slice sees the net usage
                    if release:
                        conn.execute(apply, ([], [], release))
                    hashes: list[bytes] = []
                    datas: list[bytes] = []
                    size = 0
                    for h, data in blocks.items():
                        hashes.append(h)
                        datas.append(data)
                        size += len(data)
                        if size >= _SLICE_BYTES:
                            conn.execute(apply, (hashes, datas, []))
                            hashes, datas, size = [], [], 0
                    if hashes:
                        conn.execute(apply, (hashes, datas, []))
                conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise translate_db_error(exc) from exc
        self.stats["flushes"] += 1
        self.stats["round_trips"] += 1
        for ino, _, i, h in staging:
            self.stages[ino].rows[i] = h
        for _, ino in unstage:
            del self.stages[ino]
        self.d_unstage.clear()
        self._clear_dirty(held)

    # ----------------------------------------------------------------- layers

    def _open_child(self, parent: int, message: str) -> int:
        """Create a writable child of ``parent`` and make it the head (inside the lock)."""
        child = self._q(
            """WITH n AS (
                   INSERT INTO layers (tenant_id, layer_id, parent_id, message)
                   VALUES (%(t)s, nextval('layer_id_seq'), %(p)s, %(m)s) RETURNING layer_id),
               b AS (
                   UPDATE branches SET head_layer = (SELECT layer_id FROM n)
                   WHERE tenant_id = %(t)s AND name = (SELECT branch FROM tenant_state WHERE tenant_id = %(t)s))
               UPDATE tenant_state SET head_layer = (SELECT layer_id FROM n) WHERE tenant_id = %(t)s
               RETURNING head_layer""",
            {"t": self.tid, "p": parent, "m": message},
        )[0][0]
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
                self._mutated = True
                frozen = self.head
                self._q(
                    "UPDATE layers SET frozen = true, message = %s"
                    " WHERE tenant_id = %s AND layer_id = %s RETURNING layer_id",
                    (message, self.tid, frozen),
                )
                self._open_child(frozen, "")
            return frozen

    def switch(self, target: int | str) -> None:
        """View a layer (by id: detached; writing to a frozen one opens a child)
        or follow a branch (by name: its head, which moves with its checkpoints)."""
        with self.lock:
            self.commit()
            if self._held():
                # their content would be published into the other view, where they have no name
                raise fs_error(errno.EBUSY, None, "files are being written; close them before switching")
            with self.writing(publish=True):
                if isinstance(target, str):
                    rows = self._q(
                        "SELECT b.head_layer, l.frozen FROM branches b JOIN layers l"
                        " ON l.tenant_id = b.tenant_id AND l.layer_id = b.head_layer"
                        " WHERE b.tenant_id = %s AND b.name = %s",
                        (self.tid, target),
                    )
                    if not rows:
                        raise fs_error(errno.ENOENT, None, f"branch {target!r} does not exist")
                    branch = target
                else:
                    rows = self._q(
                        "SELECT layer_id, frozen FROM layers WHERE tenant_id = %s AND layer_id = %s", (self.tid, target)
                    )
                    if not rows:
                        raise fs_error(errno.ENOENT, None, f"layer {target} does not exist")
                    branch = None
                layer_id, frozen = rows[0]
                self._mutated = True
                self._q(
                    "UPDATE tenant_state SET head_layer = %s, branch = %s WHERE tenant_id = %s RETURNING head_layer",
                    (layer_id, branch, self.tid),
                )
                self._invalidate()
                self.chain = frozenset()
                self._load_state((self.gen, layer_id, self.block_size, frozen))

    def branch(self, name: str, from_layer: int | None) -> int:
        """Create branch ``name`` with a new head layer on top of ``from_layer``
        (default: a checkpoint of the current view). Returns its head layer."""
        with self.lock:
            if from_layer is None:
                from_layer = self.checkpoint(f"branch {name}")
            with self.writing(publish=True):
                rows = self._q(
                    "SELECT frozen FROM layers WHERE tenant_id = %s AND layer_id = %s", (self.tid, from_layer)
                )
                if not rows:
                    raise fs_error(errno.ENOENT, None, f"layer {from_layer} does not exist")
                if not rows[0][0]:
                    raise fs_error(errno.EINVAL, None, f"layer {from_layer} is open; branch from a checkpoint")
                if self._q("SELECT 1 FROM branches WHERE tenant_id = %s AND name = %s", (self.tid, name)):
                    raise fs_error(errno.EEXIST, None, f"branch {name!r} already exists")
                self._mutated = True
                return self._q(
                    """WITH n AS (
                           INSERT INTO layers (tenant_id, layer_id, parent_id, message)
                           VALUES (%(t)s, nextval('layer_id_seq'), %(p)s, '') RETURNING layer_id)
                       INSERT INTO branches (tenant_id, name, head_layer)
                       SELECT %(t)s, %(n)s, layer_id FROM n RETURNING head_layer""",
                    {"t": self.tid, "p": from_layer, "n": name},
                )[0][0]

    def drop_layers(self, layer_id: int, descendants: bool) -> list[int]:
        """Delete a layer (and with ``descendants`` its whole subtree) and release
        the blocks no surviving version references. Returns the dropped ids."""
        with self.lock:
            self.commit()
            with self.writing(publish=True):
                t = self.tid
                rows = self._q(
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
                held = self._q(
                    "SELECT name FROM branches WHERE tenant_id = %s AND head_layer = ANY(%s) ORDER BY name", (t, sub)
                )
                if held:
                    names = ", ".join(r[0] for r in held)
                    raise fs_error(errno.EBUSY, None, f"branch {names} has its head there; delete the branch first")
                self._mutated = True
                released = self._q(
                    """WITH d AS (DELETE FROM extents WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING hash)
                       SELECT DISTINCT hash FROM d""",
                    (t, sub),
                    binary=True,
                )
                inodes = self._q(
                    """WITH d AS (DELETE FROM inodes WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING 1)
                       SELECT count(*) FROM d""",
                    (t, sub),
                )[0][0]
                self._q(
                    """WITH d AS (DELETE FROM dirents WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING 1)
                       SELECT count(*) FROM d""",
                    (t, sub),
                )
                self._q(
                    """WITH d AS (DELETE FROM layers WHERE tenant_id = %s AND layer_id = ANY(%s) RETURNING 1)
                       SELECT count(*) FROM d""",
                    (t, sub),
                )
                self._q(
                    "SELECT tarbox_apply_blocks(%b::bytea[], %b::bytea[], %b::bytea[], %s)",
                    ([], [], [bytes(r[0]) for r in released], -inodes),
                )
                return sub

    def delete_branch(self, name: str) -> None:
        """Remove a branch pointer (its layers stay until dropped)."""
        with self.lock, self.writing(publish=True):
            if name == self._q("SELECT branch FROM tenant_state WHERE tenant_id = %s", (self.tid,))[0][0]:
                raise fs_error(errno.EBUSY, None, f"branch {name!r} is the current branch; switch away first")
            self._mutated = True
            if not self._q("DELETE FROM branches WHERE tenant_id = %s AND name = %s RETURNING name", (self.tid, name)):
                raise fs_error(errno.ENOENT, None, f"branch {name!r} does not exist")

    # ------------------------------------------------------------- open files

    def begin_write(self, ino: int) -> None:
        """A descriptor is about to write ``ino``: until it closes (or fsyncs), commits
        keep the file's new content out and show its previous version (staged publication)."""
        with self.lock:
            self.writers[ino] = self.writers.get(ino, 0) + 1

    def end_write(self, ino: int) -> None:
        """A descriptor that wrote ``ino`` closed or fsync'ed: once no writer is left, the
        next commit publishes the file whole."""
        with self.lock:
            n = self.writers.get(ino, 0) - 1
            if n > 0:
                self.writers[ino] = n
                return
            self.writers.pop(ino, None)
            self._unhold(ino)

    def _unhold(self, ino: int) -> None:
        """Make the next commit write the file's real size with its content."""
        if ino in self.d_ext:
            self._quiet.discard(ino)
            node = self.d_inodes.get(ino) or self.icache.get(ino)
            if node is not None and node.nlink > 0:
                self.touch(node)

    def _recheck_pending(self) -> None:
        """Someone else committed while files here have unpublished content: take their
        link counts, and their deletions, so publishing our bytes cannot bring back an
        inode they removed (last writer wins on content, not on existence)."""
        inos = [ino for ino in self.d_ext if not (ino in self.d_inodes and self.d_inodes[ino] is None)]
        if not inos:
            return
        rows = self._q(
            "SELECT DISTINCT ON (ino) ino, nlink FROM inodes"
            " WHERE tenant_id = %s AND ino = ANY(%s) AND layer_id = ANY(%s) ORDER BY ino, layer_id DESC",
            (self.tid, inos, self.chain_ids),
        )
        nlink = dict(rows)
        for ino in inos:
            node = self.d_inodes.get(ino) or self.icache.get(ino)
            if ino in nlink:
                if node is not None:
                    node.nlink = nlink[ino]
                continue
            # removed elsewhere: our bytes go (the next commit releases them); our
            # descriptors get ESTALE, like any descriptor of a file removed by another process
            ext = self.d_ext[ino]
            ext.release.update(ext.sets.values())
            ext.sets.clear()
            ext.trunc_from = None
            ext.drop = True
            self._quiet.discard(ino)
            buf = self.wbuf.pop(ino, None)
            if buf:
                self.wbuf_bytes -= sum(len(b) for b in buf.values())
            self.d_inodes.pop(ino, None)
            self.icache.pop(ino, None)
            self.xcache.pop(ino, None)

    def opened(self, ino: int) -> None:
        with self.lock:
            self.open_counts[ino] = self.open_counts.get(ino, 0) + 1

    def closed(self, ino: int) -> None:
        """Last close of an unlinked file finally releases it."""
        with self.lock:
            n = self.open_counts.get(ino, 0) - 1
            if n > 0:
                self.open_counts[ino] = n
                return
            self.open_counts.pop(ino, None)
            node = self.inode(ino)
            if node is not None and node.nlink == 0:
                with self.writing():
                    self.drop_inode(node)

    def pending_error(self, ino: int) -> FilesystemError | None:
        err = self.write_errors.pop(ino, None)
        return err  # type: ignore[return-value]
