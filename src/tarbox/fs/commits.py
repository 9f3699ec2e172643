"""When a Filesystem's changes commit, and what comes between them: the store held
for a sequence of calls (``locked``, ``writing``: one write transaction), batches
(one write-back window for many operations), atomic batches (one commit or none),
write-back windows (the WASI host's mode), an explicit commit or sync, and garbage
collection of unreferenced blocks.

``CommitControl`` is a part of ``Filesystem`` (its mixin); the Store does the work
(``fs/txn.py``: transactions, batches, windows; ``fs/gc.py``). It must not touch
files or paths: those are ``filesystem.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from tarbox.fs.store import Store
from tarbox.fs.types import WriteBack


class CommitControl:
    """Locks, batches, atomic batches, write-back windows, commit, sync and gc of one view."""

    _store: Store
    read_only: bool

    def _writable(self, path: str | None) -> None:  # Filesystem's
        raise NotImplementedError

    @contextmanager
    def locked(self, *, refresh: bool = False) -> Iterator[None]:
        """Hold this view's store for a sequence of calls, so that no other thread of
        this process comes between them (WASI's append: finding the end, writing
        there). ``refresh``: first catch up with what other processes committed."""
        with self._store.lock:
            if refresh:
                self._store.refresh()
            yield

    @contextmanager
    def writing(self) -> Iterator[None]:
        """``locked``, and inside one write transaction of the tenant: what the calls
        inside decide from what they read cannot be overtaken (a WASI call that
        resolves a path, then changes it). The operations inside check that the view
        may write."""
        with self._store.lock, self._store.writing():
            yield

    def batch(self) -> AbstractContextManager[None]:
        """Group many operations into one write-back window, committed at exit.

        Inside, other processes see nothing of the batch until it ends (or
        until it grows past the flush thresholds); this process sees all.
        """
        self._writable(None)
        return self._store.batch()

    def atomic(self) -> AbstractContextManager[None]:
        """Everything inside is one commit, at the end, or nothing is (an exception
        inside, a failed write, a crash). Unlike :meth:`batch` it never commits part
        way, whatever its size; meanwhile the tenant's other writers, and readers
        revalidating, wait for it. Only on a view with a store of its own
        (``Tarbox.filesystem(..., isolated=True)``), so that no other thread's
        operation joins the transaction."""
        self._writable(None)
        if not self._store.isolated:
            raise ValueError("atomic() needs a filesystem with a store of its own (isolated=True)")
        return self._store.batch(atomic=True)

    @contextmanager
    def write_back(self, seconds: float = 0.05) -> Iterator[WriteBack]:
        """Inside, changes collect in write-back windows committed at most ``seconds``
        after they began, at fsync, and on the way out (the WASI host's mode).

        Other processes still see a file once it is closed: they wait for the
        window to commit when they revalidate. A window whose commit fails loses
        its changes; ``WriteBack.lost`` counts such windows.
        """
        self._writable(None)
        st = self._store
        wb = WriteBack()
        lost, windows = st.lost_windows, st.stats["windows"]
        try:
            with st.write_back(seconds):
                yield wb
        finally:
            wb.windows = st.stats["windows"] - windows
            wb.lost = st.lost_windows - lost

    def commit(self) -> None:
        """Commit everything pending now (an open batch or write-back window of this
        store included), without waiting for the WAL flush (see :meth:`sync`)."""
        self._store.commit()

    def sync(self) -> None:
        """Commit everything pending and wait until it is durable (fsync)."""
        self._store.commit(durable=True)

    def gc(self, stale_after: float | None = None) -> tuple[int, int]:
        """Reclaim blocks no extent references, after ending stages (blocks of files being
        written) not renewed for ``stale_after`` seconds (default: an hour; their writer
        died). Returns (blocks, bytes) freed."""
        from tarbox.fs.gc import STAGE_LEASE, collect

        return collect(self._store, STAGE_LEASE if stale_after is None else stale_after)
