"""Recalls of read delegations: one listening connection per ``Database``.

A tenant's Store may keep the tenant's lock shared between operations (a read
delegation): while it holds it nobody else can commit, so its opens need no round
trip. A writer in another process that finds the lock held asks for it back with a
NOTIFY on the tenant's recall channel. This module owns the dedicated connection
that LISTENs on the channels of the tenants whose stores want delegations, and
calls them back.

When that connection is down no store may keep a delegation, since no writer could
reach it: every subscriber is told it lost the feed, and ``epoch`` moves on, so a
store that took a delegation while the feed was going down lets it go too. The
channel of a tenant is derived from its binding token, so only processes bound to
the tenant can name it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import threading
import time
from collections.abc import Callable

import psycopg

_RECONNECT_DELAYS = (0.05, 0.2, 1.0, 5.0)


def recall_channel(binding_token: str) -> str:
    """The recall channel of the tenant whose binding token is ``binding_token``."""
    return "tbx_recall_" + hashlib.sha256(binding_token.encode()).hexdigest()[:40]


def send_recall(conn: psycopg.Connection, channel: str) -> None:
    """Ask every holder of a delegation on the tenant to give it back (autocommit ``conn``)."""
    conn.execute("SELECT pg_notify(%s, '')", (channel,))


class RecallFeed:
    """The listening connection of one Database, and who to call on a recall."""

    def __init__(self, url: str, options: str) -> None:
        self._url, self._options = url, options
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[tuple[Callable[[], None], Callable[[], None]]]] = {}
        self._listening: set[str] = set()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._closed = False
        self.up = False
        self.epoch = 0  # moves on each time the connection is lost
        self.stats = {"recalls": 0, "losses": 0, "connects": 0}

    def subscribe(self, channel: str, on_recall: Callable[[], None], on_lost: Callable[[], None]) -> int | None:
        """Listen on ``channel``. Returns the feed's epoch if the LISTEN is in place
        (hold a delegation only while ``epoch`` is still that); None until it is:
        the feed connects and listens in the background, and never makes a caller
        wait. ``on_recall`` and ``on_lost`` run on the feed's thread and must not block."""
        with self._lock:
            if self._closed:
                return None
            subs = self._subscribers.setdefault(channel, [])
            if (on_recall, on_lost) not in subs:
                subs.append((on_recall, on_lost))
            if self.up and channel in self._listening:
                return self.epoch
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tarbox-recall", daemon=True)
                self._thread.start()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        return None

    def is_current(self, epoch: int) -> bool:
        return self.up and self.epoch == epoch

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        failures = 0
        while not self._closed:
            try:
                self._serve()
                failures = 0
            except (psycopg.Error, OSError):
                failures += 1
            self._lost()
            if not self._closed:
                time.sleep(_RECONNECT_DELAYS[min(failures, len(_RECONNECT_DELAYS) - 1)])
        self._lost()

    def _serve(self) -> None:
        conn = psycopg.connect(self._url, autocommit=True, options=self._options, connect_timeout=10)
        self._conn = conn
        self.stats["connects"] += 1
        try:
            conn.add_notify_handler(lambda n: self._dispatch(n.channel))
            sock = conn.pgconn.socket
            while not self._closed:
                self._listen_new(conn)
                ready, _, _ = select.select([sock, self._wake_r], [], [], 5.0)
                if self._wake_r in ready:
                    os.read(self._wake_r, 4096)
                if sock in ready:
                    conn.pgconn.consume_input()
                    if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
                        raise psycopg.OperationalError("the recall feed's connection was lost")
                    while (n := conn.pgconn.notifies()) is not None:
                        self._dispatch(n.relname.decode())
                elif not ready:
                    conn.execute("SELECT 1")  # idle for a while: make sure the server is still there
        finally:
            self._conn = None
            with contextlib.suppress(Exception):
                conn.close()

    def _listen_new(self, conn: psycopg.Connection) -> None:
        with self._lock:
            new = [ch for ch in self._subscribers if ch not in self._listening]
        for ch in new:
            conn.execute(f'LISTEN "{ch}"')  # the name is ours (recall_channel): hex only
        with self._lock:
            self._listening.update(new)
            self.up = True

    def _dispatch(self, channel: str) -> None:
        self.stats["recalls"] += 1
        with self._lock:
            subs = list(self._subscribers.get(channel, ()))
        for on_recall, _ in subs:
            on_recall()

    def _lost(self) -> None:
        with self._lock:
            was_up = self.up
            self.up = False
            self._listening.clear()
            self.epoch += 1
            subs = [s for lst in self._subscribers.values() for s in lst]
        if was_up:
            self.stats["losses"] += 1
        for _, on_lost in subs:
            on_lost()
