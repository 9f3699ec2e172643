"""A store's read delegation, as one state machine: a transaction on a pooled
connection that holds the tenant's advisory lock shared, so that nobody else can
commit while it lasts and opens need not ask the server.

It owns the delegation's connection and its bookkeeping: when it was taken and last
used, whether a writer elsewhere recalled it, the Database slot it holds, the recall
feed's epoch it was taken in, and the back-off after a recall. It decides whether one
may be taken, whether a held one is still intact, and when it is due to be given
back; the Store sends the SQL and schedules the flusher (fs/cache.py, fs/txn.py).

In write-back mode a delegation lasts one window delay. Otherwise it is "recallable":
it stays while it is used, a writer elsewhere gets it back through the recall feed
(storage/recall.py), and it ends when the feed is lost, when its connection shows
any sign of life of its own (an idle connection in a transaction receives nothing
unless the server ended it), after ``IDLE`` seconds unused, or after ``MAX`` seconds
in any case (a recall lost on the way costs a writer at most that).
"""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from tarbox.storage.database import Database

IDLE = 2.0
MAX = 10.0
# opens that ask the server before a store starts taking read delegations (a
# short-lived process, a CLI command, never starts the recall feed)
OPENS_BEFORE_DELEGATING = 3
_FIRST_BACKOFF = 0.05
_LONGEST_BACKOFF = 1.0


class ReadDelegation:
    """The read delegation of one Store (at most one at a time). Called under the
    store's lock, but for ``recall``, which the recall feed's thread calls."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.conn: psycopg.Connection | None = None  # the delegation's connection (None: none held)
        self._cm: Any = None  # the pool's context for ``conn``
        self.ident = 0  # one more at each delegation taken: the flusher's due entries name it
        self.recallable = False  # held until recalled (else until the window delay passes)
        self.opens = 0  # opens it answered since it was taken
        self.used_at = 0.0  # monotonic time of its last use
        self._taken_at = 0.0
        self._recalled = False  # a writer elsewhere asked for it back
        self._slot = False  # holds one of the Database's delegation slots
        self._epoch = -1  # the recall feed's epoch it was taken in
        self._backoff = _FIRST_BACKOFF  # after a recall, wait this long before delegating again
        self._backoff_until = 0.0
        self._opens_asked = 0  # revalidations that asked the server (the first never delegate)

    @property
    def held(self) -> bool:
        return self.conn is not None

    def wanted(self, now: float) -> bool:
        """May a recallable delegation be asked for at this revalidation? Not at a
        store's first few, nor during the back-off after a recall."""
        self._opens_asked += 1
        return self._opens_asked > OPENS_BEFORE_DELEGATING and now >= self._backoff_until

    def take_slot(self, epoch: int) -> bool:
        """Take one of the Database's delegation slots for a delegation to be taken in
        the recall feed's ``epoch``; False when none is free."""
        if not self._db.take_delegation_slot():
            return False
        self._epoch, self._slot = epoch, True
        return True

    def give_slot(self) -> None:
        if self._slot:
            self._slot = False
            self._db.give_delegation_slot()

    def keep(self, conn: psycopg.Connection, cm: Any) -> None:
        """``conn``'s transaction holds the shared lock: it is the delegation now,
        recallable if it holds a slot."""
        self.conn, self._cm = conn, cm
        self.ident += 1
        self.recallable = self._slot
        self._recalled = False
        self.opens = 0
        self.used_at = self._taken_at = time.monotonic()

    def used(self) -> None:
        """It answered an open."""
        self.used_at = time.monotonic()
        self.opens += 1

    def feed_current(self) -> bool:
        """Is the recall feed still the one it was taken under (no recall missed)?"""
        return self._db.recall_feed().is_current(self._epoch)

    def recall(self) -> bool:
        """A writer elsewhere wants the tenant's lock (on the feed's thread: must not
        block). Returns whether there was a recallable delegation to give back."""
        if self.conn is None or not self.recallable:
            return False
        self._recalled = True
        self._backoff_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _LONGEST_BACKOFF)
        return True

    def intact(self) -> bool:
        """Does the held delegation still keep everyone else from committing?"""
        assert self.conn is not None
        if self._recalled or time.monotonic() - self._taken_at > MAX:
            return False
        if self.recallable and not self.feed_current():
            return False
        return not select.select([self.conn.pgconn.socket], [], [], 0)[0]

    def due_in(self, now: float) -> float | None:
        """When the flusher finds it due: seconds to look again after, while it is in
        use; None: give it back now."""
        idle, left = now - self.used_at, self._taken_at + MAX - now
        if self.recallable and not self._recalled and idle < IDLE and left > 0:
            return min(IDLE - idle, left)
        return None

    def detach(self) -> tuple[psycopg.Connection, Any]:
        """Hand the connection over (to a write, or back to the pool); the slot stays
        with it, for the delegation to be taken again in the same round trip."""
        assert self.conn is not None
        conn, cm = self.conn, self._cm
        self.conn, self._cm = None, None
        return conn, cm

    def forget(self) -> None:
        """The delegation's connection is someone else's now (or gone): drop the
        bookkeeping and give the slot back."""
        self.conn, self._cm = None, None
        self._recalled = False
        self.give_slot()
