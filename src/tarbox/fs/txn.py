"""Transactions of a tenant's store: the tenant's write lock, read delegations,
batches and write-back windows (and the flusher thread that ends them), commit and
abort, and the bookkeeping of what is dirty. It decides when a flush happens; what
a flush writes is ``flush.py``'s."""

from __future__ import annotations

import errno
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from tarbox.errors import ConnectionLostError, DatabaseError, TenantNotFoundError, fs_error
from tarbox.fs.records import (
    _PIPELINE_MAX_BYTES,
    _PIPELINE_MAX_ROWS,
    _WINDOW_ROOM_BYTES,
    _WINDOW_ROOM_INODES,
    FLUSH_BYTES,
    FLUSH_ROWS,
)
from tarbox.fs.shared import SharedState
from tarbox.storage import db_error
from tarbox.storage.recall import recall_channel, send_recall

# the largest file of a tenant without a byte quota (ext4's limit with 4 KiB blocks)
MAX_FILE_SIZE = 16 << 40
_UNKNOWN = object()


class LockBusy(Exception):
    """The tenant's lock is held by another session (TBD01): recall delegations, then wait."""


class Conflict(Exception):
    """Another process committed after this one's caches were filled: an operation
    decided on them ahead of the lock must be decided again (never leaves the Store)."""


def translate_db_error(exc: psycopg.Error, path: str | None = None) -> Exception:
    """Tarbox's own SQLSTATEs (quotas, reclaimed stages) as filesystem errors; the rest
    as the database layer maps them (read-only, disk full, connection lost)."""
    code = getattr(exc, "sqlstate", None)
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if code == "TBC01":
        return Conflict(msg)
    if code == "TBD01":
        return LockBusy(msg)
    if code == "TBT01":
        return TenantNotFoundError(msg)
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
        self._due: list[tuple[float, int, weakref.ref[SharedState], int]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, store: SharedState, when: float, window: int) -> None:
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


class Transactions(SharedState):
    """transactions of the tenant store (mixed into ``Store``; see its docstring)."""

    def operation(self, body: Callable[[], None], *, small: bool = True) -> None:
        """Run one mutating operation and commit it.

        When nothing else is pending, ``body`` runs ahead of the lock: it decides on
        the caches as they are, and one round trip (``tarbox_flush``) takes the lock,
        checks that the tenant's generation is still the caches', writes the rows and
        commits. If another process committed in between (``Conflict``), the body's
        changes are dropped with the caches and it runs again under the lock, as in
        ``writing()``. An error the body raises is trusted once the caches are known
        to be current (one round trip); otherwise the body runs again under the lock.
        ``small``: the operation writes little enough data to run ahead at all.
        """
        with self.lock:
            if small and self._may_run_ahead() and self._run_ahead(body):
                return
            with self.writing():
                body()

    def _may_run_ahead(self) -> bool:
        """Nothing is pending (so dropping the body's changes drops nothing else), no
        transaction, batch, window or delegation is open, and the caches have a generation."""
        return (
            self.txn_conn is None
            and (not self.delegation.held or self.delegation.recallable)
            and not self.window_delays
            and not self._batch_depth
            and self.gen is not None
            and self.pinned is None
            and not self.head_frozen
            and not self.dirty.ext
            and not self.stages
            and not self.writers
            and not self.has_dirty()
        )

    def note_write(self) -> None:
        """The transaction in progress has changed something (a row, a counter): it
        ends in a commit or a rollback, never just by being left."""
        self._mutated = True

    def _run_ahead(self, body: Callable[[], None]) -> bool:
        """Run ``body`` without the lock and commit it if the caches were current.
        Returns whether it committed (False: run it again under the lock)."""
        expect = self.gen
        assert expect is not None
        self.running_ahead, self._mutated = True, False
        try:
            body()
        except Conflict:
            self._drop_ahead()
            return False
        except Exception:
            self.running_ahead = False
            if self._mutated:
                self._drop_ahead()
            if self._current(expect):
                raise  # decided on current caches: the error stands
            self._drop_ahead()
            return False
        except BaseException:
            self._drop_ahead()
            raise
        finally:
            self.running_ahead = False
        if not self.has_dirty():  # nothing to write: the answer stands if the caches were current
            if self._current(expect):
                return True
            self._drop_ahead()
            return False
        if self.dirty.block_bytes > _PIPELINE_MAX_BYTES or self.dirty_rows() > _PIPELINE_MAX_ROWS:
            self._drop_ahead()
            return False
        try:
            if self.delegation.held:
                self._flush_on_delegation(expect)
            else:
                with self.db.tenant(self.tenant_id) as conn:
                    self.flush_dirty(conn, expect=expect)
        except (Conflict, LockBusy):
            # LockBusy: someone holds the lock; the locked path recalls and waits
            self._drop_ahead()
            return False
        except ConnectionLostError:
            # The connection broke: the commit did or did not happen. Only an unchanged
            # generation (asked on a fresh connection) proves it did not.
            self._drop_ahead()
            self.db.discard_broken()
            if not self._current(expect):
                raise
            return False
        except BaseException:
            self._drop_ahead()
            raise
        self.stats["run_ahead"] += 1
        return True

    def _flush_on_delegation(self, expect: int) -> None:
        """Commit an operation that ran ahead in our read delegation's transaction: one
        round trip. If opens used the delegation since it was taken, take it again in
        that round trip (reads and writes interleave); if not (a run of writes), let it
        go: the next open takes one again, and the writes in between stay single
        statements."""
        reshare = self.delegation.opens > 0
        conn, cm = self.delegation.detach()  # its slot stays ours if it is taken again
        try:
            row = self.flush_dirty(conn, expect=expect, in_delegation=True, reshare=reshare)
        except BaseException:
            _rollback(conn)
            cm.__exit__(None, None, None)
            self.delegation.forget()
            raise
        if row is None:  # not taken again: the connection goes back to the pool
            _rollback(conn)  # (a no-op unless nothing was written and it is still open)
            cm.__exit__(None, None, None)
            self.delegation.forget()
            return
        row = self.keep_delegation(conn, cm, row)
        if row[0] != self.gen:  # someone committed between our commit and the share
            self.drop_clean_caches()
            self.adopt_state(row)

    def _current(self, expect: int) -> bool:
        """Is the tenant's generation still ``expect``? One round trip; it waits for
        write-back windows open elsewhere, as a revalidation does (close-to-open). Free
        while we hold a read delegation: no one else can have committed."""
        if self.delegation.held and self.delegation.intact():
            return self.gen == expect
        row = self.read_state(settle=True)
        if row[0] == expect:
            self.validated_at = time.monotonic()
            return True
        return False

    def _drop_ahead(self) -> None:
        """Forget what a body running ahead changed: its dirty state, and the caches,
        whose records it may have changed in place."""
        self.running_ahead = False
        self._forget_changes_and_caches()
        self.stats["run_ahead_redone"] += 1

    def _forget_changes_and_caches(self) -> None:
        """Drop every uncommitted change and every cached record (records may have been
        changed in place by what is dropped); the next operation starts from the database."""
        self.clear_dirty()
        self.dentry_cache.clear()
        self.children.clear()
        self.path_cache.clear()
        self.inode_cache.clear()
        self.extent_cache.clear()
        self.gen = None

    @contextmanager
    def writing(self, *, publish: bool = False) -> Iterator[None]:
        """Scope of one mutating operation: holds the tenant write lock, then flushes.

        Inside a batch the lock is already held and the flush is deferred; with
        write-back on, the operation opens (or joins) a window instead.
        ``publish`` commits at the end whatever the mode (layer operations).
        """
        with self.lock:
            if self.running_ahead:
                if publish:
                    raise Conflict("a publishing operation inside one running ahead of the lock")
                yield  # part of an operation running ahead of the lock: it commits it
                return
            if self._atomic_failed is not None:
                raise fs_error(
                    getattr(self._atomic_failed, "errno", None) or errno.EIO,
                    None,
                    f"an earlier write in the atomic batch failed ({self._atomic_failed})",
                )
            if self.txn_conn is None:
                self._begin()
                if publish or not self.window_delays or not self._far_from_quotas():
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
                elif (
                    self.txn_conn is not None
                ):  # refused before changing anything (EEXIST, ENOENT, ...): keep others' buffered writes
                    _rollback(self.txn_conn)
            finally:
                self._end()
            raise
        self._flush_and_end()

    def _over_thresholds(self) -> bool:
        return self.dirty.wbuf_bytes + self.dirty.block_bytes > FLUSH_BYTES or self.dirty_rows() > FLUSH_ROWS

    def _txn_failed(self) -> bool:
        """Is the open transaction unusable (a statement failed, or the connection broke)?"""
        return (
            self.txn_conn is not None and self.txn_conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS
        )

    @contextmanager
    def batch(self, *, atomic: bool = False) -> Iterator[None]:
        """Defer commits: every operation inside shares one write-back window.

        ``atomic``: everything inside is one transaction, committed at the end or not at
        all. Past the flush thresholds dirty rows and blocks are sent without a COMMIT
        (memory stays bounded; the tenant's lock stays held, so other writers and
        revalidating readers of the tenant wait for the end). After a failed write
        inside, every later write and the end raise the failure: nothing is committed.
        Only for a store of its own (``Tarbox.filesystem(..., isolated=True)``): on a
        shared store other threads' operations would join the transaction."""
        with self.lock:
            if self._batch_depth == 0:
                if self._window:
                    self._close_window()
                if self.txn_conn is None:
                    self._begin()
                self._atomic, self._atomic_failed = atomic, None
            elif atomic and not self._atomic:
                raise ValueError("an atomic batch cannot start inside a batch that is not atomic")
            self._batch_depth += 1
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            with self.lock:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    atomic_failure, self._atomic, self._atomic_failed = self._atomic_failed, False, None
                    if self.txn_conn is not None:
                        if atomic and failed:
                            self._abort()  # nothing of it is committed
                            self._end()
                        else:
                            self._flush_and_end()
                    if atomic_failure is not None and not failed:
                        raise fs_error(
                            getattr(atomic_failure, "errno", None) or errno.EIO,
                            None,
                            f"an earlier write in the atomic batch failed ({atomic_failure}); nothing was committed",
                        )

    @contextmanager
    def write_back(self, seconds: float) -> Iterator[None]:
        """While inside, changes collect in windows of up to ``seconds`` (see the module
        docstring); everything pending is committed on the way out."""
        with self.lock:
            self.window_delays.append(seconds)
        try:
            yield
        finally:
            with self.lock:
                self.window_delays.remove(seconds)
                try:
                    self.commit()
                finally:
                    if not self.window_delays:
                        self.release_delegation()

    def commit(self, durable: bool = False, *, publish: int | None = None) -> None:
        """Flush pending writes now (close/fsync). ``durable`` waits for the WAL flush;
        ``publish`` is a file to publish although descriptors are still writing it (fsync)."""
        with self.lock:
            if self.running_ahead:  # a commit in the middle of an operation: it must hold the lock
                raise Conflict("a commit inside an operation running ahead of the lock")
            if publish is not None:
                self.publish_now.add(publish)
                self.unhold(publish)
            try:
                if self.txn_conn is not None:
                    if self._batch_depth:
                        self._commit_and_relock(durable)
                    else:
                        self._close_window(durable)
                elif self.has_dirty() or durable:
                    self._begin()
                    self._flush_and_end(durable)
            finally:
                self.publish_now.discard(publish)

    def publish_close(self) -> None:
        """A file written to was closed. Without write-back that commits now; with it the
        open window (or a new one) carries the file, unless it is time to commit."""
        with self.lock:
            if not self.window_delays or self._batch_depth:
                self.commit()
                return
            if self.txn_conn is None:
                if not self.has_dirty():
                    return
                self._begin()
                if not self._far_from_quotas():
                    self._flush_and_end()
                    return
                self._start_window()
            if self._over_thresholds():
                self._close_window()

    def _flush_and_end(self, durable: bool = False) -> None:
        assert self.txn_conn is not None
        try:
            self.flush_dirty(self.txn_conn, durable)
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            self._end()

    def _far_from_quotas(self) -> bool:
        """Is the tenant far enough from its quotas for a window to run ahead of the check?"""
        room_bytes, room_inodes = self._quota_room
        return (room_bytes is None or room_bytes > _WINDOW_ROOM_BYTES) and (
            room_inodes is None or room_inodes > _WINDOW_ROOM_INODES
        )

    def _start_window(self) -> None:
        self._window = True
        self._window_id += 1
        self.stats["windows"] += 1
        _flusher.schedule(self, time.monotonic() + min(self.window_delays), self._window_id)

    def _close_window(self, durable: bool = False) -> None:
        """Commit the open window and give the lock back."""
        if self.txn_conn is not None:
            self._flush_and_end(durable)

    def _expire(self, ident: int) -> float | None:
        """Called by the flusher when window ``ident`` (or read delegation ``-ident``) is due.
        Returns a delay to try again after."""
        if not self.lock.acquire(timeout=0.005):
            return 0.002  # an operation is in progress; the window commits right after it
        try:
            if ident < 0:
                if self.delegation.held and self.delegation.ident == -ident:
                    again = self.delegation.due_in(time.monotonic())
                    if again is not None:
                        return again  # in use: look again later
                    self.release_delegation()
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
        conn, cm, _ = self.connect_with(lambda conn, upgrade: self._acquire(conn, upgrade=upgrade))
        self.txn_conn, self._txn_cm = conn, cm
        self._mutated = False

    def connect_with(self, start: Callable[[psycopg.Connection, bool], object]) -> tuple[Any, ...]:
        """A connection with ``start(conn, upgrade)`` run on it: the read delegation's
        (``upgrade``) or a pooled one. One found broken (a server restart, a terminated
        backend) is replaced once; on any failure the connection goes back to the pool."""
        for attempt in (0, 1):
            if self.delegation.held:
                (conn, cm), upgrade = self.delegation.detach(), True
                self.delegation.forget()
            else:
                cm = self.db.tenant(self.tenant_id)
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
        cm, self.txn_conn, self._txn_cm = self._txn_cm, None, None
        self._window = False
        if cm is not None:
            cm.__exit__(None, None, None)

    def _acquire(self, conn: psycopg.Connection, *, upgrade: bool = False) -> None:
        row = self._take_lock(conn, upgrade)
        if row is None:
            raise TenantNotFoundError(f"tenant {self.tenant_id} does not exist")
        before = row[0]
        self.adopt_usage(row)
        if before != self.gen:
            self.drop_clean_caches()
            row = self.read_state(conn)
            with self._using(conn):
                self.adopt_state((before, *row[1:]))
                self.recheck_pending()
        self.gen = before + 1  # the generation our commit will publish
        self.validated_at = time.monotonic()
        if self.head_frozen and self.pinned is None:
            # the view is a frozen layer (after switch): writing branches off it
            with self._using(conn):
                self.open_child(self.head, "")

    def file_size_limit(self) -> int:
        """The largest apparent size a file may have: the tenant's byte quota (asked once
        per store, then kept current by every lock and flush), or ``MAX_FILE_SIZE``."""
        if self._byte_quota is _UNKNOWN:
            rows = self.query("SELECT quota_bytes FROM tenant_state WHERE tenant_id = %s", (self.tenant_id,))
            self._byte_quota = rows[0][0] if rows else None
        quota = self._byte_quota
        return MAX_FILE_SIZE if not isinstance(quota, int) else min(quota, MAX_FILE_SIZE)

    def adopt_usage(self, row: tuple[Any, ...]) -> None:
        """Remember how far the tenant is from its quotas: (gen, used bytes, byte quota,
        used inodes, inode quota) as the lock and the flush function return them."""
        _, used_bytes, quota_bytes, used_inodes, quota_inodes = row
        self._byte_quota = quota_bytes
        self._quota_room = (
            None if quota_bytes is None else quota_bytes - used_bytes,
            None if quota_inodes is None else quota_inodes - used_inodes,
        )

    def _take_lock(self, conn: psycopg.Connection, upgrade: bool) -> tuple[Any, ...] | None:
        """BEGIN and take the tenant's write lock: one round trip when it is free. When
        it is held elsewhere (a read delegation, another writer's window), recall the
        delegations and wait for it a bounded while at a time, recalling again between."""
        self.stats["round_trips"] += 1
        try:
            with conn.pipeline():
                if upgrade:
                    conn.execute("COMMIT")
                conn.execute("BEGIN")
                cur = conn.execute("SELECT * FROM tarbox_lock_usage(false, 0)")
            return cur.fetchone()
        except psycopg.Error as exc:
            if getattr(exc, "sqlstate", None) != "TBD01":
                raise
        _rollback(conn)
        wait_ms = 50
        while True:
            self.stats["round_trips"] += 2
            self.stats["recalls_sent"] += 1
            send_recall(conn, recall_channel(self.db.tenant_token(self.tenant_id)))
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    cur = conn.execute("SELECT * FROM tarbox_lock_usage(true, %s)", (wait_ms,))
                return cur.fetchone()
            except psycopg.errors.LockNotAvailable:
                _rollback(conn)
                wait_ms = min(wait_ms * 2, 1000)

    @contextmanager
    def _using(self, conn: psycopg.Connection) -> Iterator[None]:
        """Route ``query`` through ``conn`` (the locked transaction) for a moment."""
        prev, self.txn_conn = self.txn_conn, conn
        try:
            yield
        finally:
            self.txn_conn = prev

    def _commit_and_relock(self, durable: bool = False) -> None:
        conn = self.txn_conn
        assert conn is not None
        try:
            if self._atomic:  # past a threshold: send what is dirty, commit at the end
                self.flush_dirty(conn, commit=False)
                return
            self.flush_dirty(conn, durable)
            self._acquire(conn)
        except BaseException as exc:
            self._abort(exc)
            self._end()
            raise

    def _abort(self, cause: BaseException | None = None) -> None:
        """A write failed: roll back and forget everything not committed. Files whose
        buffered writes go with it fail at close with the cause's errno when it is the
        quota or a full disk (their data was refused too), else EIO."""
        if self.txn_conn is not None:
            _rollback(self.txn_conn)
        if self._window:
            # closes already reported success for what the window held
            self.lost_windows += 1
        code = getattr(cause, "errno", None)
        if code not in (errno.EDQUOT, errno.ENOSPC):
            code = errno.EIO
        for ino in set(self.dirty.wbuf) | set(self.dirty.ext):
            self.write_errors.setdefault(ino, fs_error(code, None, "buffered writes were lost"))
        for ino, st in self.stages.items():
            self.d_unstage[st.sid] = ino  # its staging rows (if committed) go at the next flush
        self.stages.clear()
        self._forget_changes_and_caches()
        if self._atomic:
            # an atomic batch's earlier rows went with the rollback: nothing more may commit
            self._atomic_failed = cause or fs_error(errno.EIO, None, "write failed")
            self._end()
        elif self._window:
            self._end()
        elif self.txn_conn is not None and self._batch_depth > 0:
            # the batch keeps its connection: take the lock afresh
            try:
                self._acquire(self.txn_conn)
            except BaseException:
                self._end()

    def has_dirty(self) -> bool:
        return self.dirty.holds_changes(len(self.staged_only)) or bool(self.d_unstage) or bool(len(self.audit_queue))

    def dirty_rows(self) -> int:
        """Rows the next flush writes, at most (asked after every operation: kept O(1))."""
        return self.dirty.rows() + len(self.audit_queue)

    def clear_dirty(self, held: Iterable[int] = ()) -> None:
        """Forget what was committed (or lost); ``held`` files keep their staged changes."""
        self.staged_only = self.dirty.clear(held)
        self.audit_queue.clear()
