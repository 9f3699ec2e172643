"""Per-tenant inode store: the façade the filesystem uses, and the state its parts share.

``Store`` is composed of one class per concern, each in its own module: ``cache``
(queries, revalidation, cached lookups, reads), ``txn`` (locks, transactions,
batches, write-back windows), ``changes`` (the dirty state operations make),
``flush`` (the SQL one flush sends), ``history`` (checkpoint, switch, branches),
``stages`` (staged publication, open files). Parts that own their state are held,
not mixed in: ``audit`` (``AuditQueue``, the records not yet committed) and
``delegation`` (``ReadDelegation``, the read delegation's state machine) and ``dirty``
(``DirtySet``, what is changed and not committed, with its counters). ``records``
holds the in-memory records and shared thresholds. ``__init__`` below sets the
mixins' shared state; ``shared.py`` declares its types for the type checker.

One ``Store`` exists per (connection, tenant) in a process and is shared by all
filesystem views and WASI runs of that tenant, so they see each other's writes
at once (POSIX semantics inside a process).

Consistency across processes (close-to-open, like NFS):

* Every committing transaction takes the tenant's write lock (an advisory lock,
  then its ``tenant_state`` row) and bumps the tenant generation ``gen``. A
  transaction that stays open (batch, write-back window) takes it first: if the
  generation before the bump is not the one our caches were filled at, someone
  else committed and clean cache entries are dropped before the operation runs.
  A single operation with nothing else pending runs *ahead* of the lock
  (``Transactions.operation``): it decides on the caches, and its one round trip
  (``tarbox_flush``) takes the lock and commits only if the generation is still
  the caches'; otherwise it is decided again under the lock. Writers of one
  tenant are therefore serialized, and every commit rests on exact state.
* Readers revalidate on every open, and for stat-like calls at most once per
  ``attr_timeout`` seconds (NFS's attribute cache): one small query, or nothing
  while the store holds a read delegation (the tenant's lock shared, so nobody
  else can commit) that writers elsewhere recall through the recall feed
  (``storage/recall.py``; docs/design.md, "Invalidation").
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

A flush turns all dirty state into the arrays of one call of the server-side
function ``tarbox_flush``, sent with its COMMIT in one round trip whatever the
number of files, so batched writes cost per row, not per round trip.

Staged publication: the content a descriptor writes stays out of every commit
until the last descriptor writing the file closes or fsyncs it; commits in
between store its blocks under a stage (docs/design.md).
"""

from __future__ import annotations

import logging
import threading
import uuid

import psycopg

from tarbox.fs.audit import AuditQueue
from tarbox.fs.cache import Caches
from tarbox.fs.changes import Changes
from tarbox.fs.delegation import ReadDelegation
from tarbox.fs.dirty import DirtySet
from tarbox.fs.flush import Flush
from tarbox.fs.history import History
from tarbox.fs.records import _STREAM_CACHE_BYTES, DEFAULT_BLOCK_SIZE, BlockCache, Dentry, Inode, Stage
from tarbox.fs.stages import Stages
from tarbox.fs.txn import _UNKNOWN, Transactions
from tarbox.storage import Database


class _QuietPipelineAbort(logging.Filter):
    """psycopg warns when a pipeline whose block raised fails to end; the block's own
    error (a quota refusal, say) is what we report, so the echo is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("error ignored terminating <psycopg.Pipeline")


logging.getLogger("psycopg").addFilter(_QuietPipelineAbort())


class Store(Caches, Transactions, Changes, Flush, History, Stages):
    def __init__(
        self,
        db: Database,
        tenant_id: uuid.UUID,
        *,
        attr_timeout: float = 1.0,
        block_cache_bytes: int = 64 << 20,
        pinned_layer: int | None = None,
        isolated: bool = False,
    ) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.isolated = isolated  # not shared with other views (Tarbox.filesystem(isolated=True))
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
        self.dentry_cache: dict[tuple[int, str], Dentry] = {}
        self.children: dict[int, dict[str, int]] = {}  # complete listings only
        # resolved paths: (text, follow_symlinks) -> inode; any dirent change clears it
        self.path_cache: dict[tuple[str, bool], int] = {}
        self.inode_cache: dict[int, Inode] = {}
        self.extent_cache: dict[int, dict[int, bytes]] = {}
        self.block_cache = BlockCache(block_cache_bytes)
        # full blocks of files being streamed, and those read ahead of the reader:
        # kept apart so a long stream cannot push small files out of block_cache
        self.stream_cache = BlockCache(_STREAM_CACHE_BYTES)
        # dirty (write-back) state
        self.dirty = DirtySet()  # what is changed and not committed (a part with its own state)
        self.write_errors: dict[int, Exception] = {}
        self.open_counts: dict[int, int] = {}
        # staged publication: files with descriptors that wrote since the file was published
        self.writers: dict[int, int] = {}  # ino -> such descriptors
        self.stages: dict[int, Stage] = {}  # ino -> blocks already stored for it
        self.d_unstage: dict[int, int] = {}  # stage id -> ino: staging rows to delete (lost stages)
        self.staged_only: set[int] = set()  # held inos whose changes are all staged already
        self.publish_now: set[int] = set()  # inos fsync publishes although still being written
        # audit records of operations not yet committed (a part with its own state)
        self.audit_queue = AuditQueue()
        # transaction state
        self.txn_conn: psycopg.Connection | None = None
        self._txn_cm = None
        self._batch_depth = 0
        self._atomic = False  # the open batch is one transaction (Transactions.batch)
        self._atomic_failed: BaseException | None = None  # ... and a write in it failed
        self._mutated = False
        self.running_ahead = False  # an operation is running ahead of the lock (Transactions.operation)
        self._ino_next = 0
        self._ino_end = 0
        # write-back windows: the delays asked for by the runs in progress
        self.window_delays: list[float] = []
        self._window = False  # the open transaction is a window (not a batch, not one operation)
        self._window_id = 0
        self._quota_room = (None, None)  # (bytes, inodes) left under the quotas when the lock was taken
        self._byte_quota: object = _UNKNOWN  # the tenant's byte quota as last seen (None: none)
        self.delegation = ReadDelegation(db)  # the read delegation (a part with its own state)
        self.lost_windows = 0  # windows whose commit failed: their writes are gone
        self.stats = {
            "flushes": 0,
            "round_trips": 0,
            "windows": 0,
            "run_ahead": 0,  # operations committed in the one round trip of a run ahead of the lock
            "run_ahead_redone": 0,  # ... and those decided again under the lock
            "recalls_sent": 0,  # read delegations asked back from other sessions
        }

    def audit(
        self,
        run_id: uuid.UUID | None,
        op: str,
        path: str | None,
        path2: str | None = None,
        nbytes: int | None = None,
        *,
        layer: int | None = None,
    ) -> None:
        """Record an operation (in ``layer``, default the head); it is written by the
        commit that carries its changes."""
        with self.lock:
            self.audit_queue.add(run_id, op, path, path2, nbytes, self.head if layer is None else layer)
