"""Opens without a round trip: a store keeps the tenant's lock shared between
operations (a read delegation), and a writer elsewhere recalls it through the
recall feed (storage/recall.py). Close-to-open must hold whatever happens to the
feed or to the delegation's connection: these tests write from other processes and
cut both connections in the middle of a run."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

import tarbox
from other_process import spawn_writer


@pytest.fixture
def reader(db_url, tenant):
    """A connection of its own (its own Store, feed and delegation), as an agent process has."""
    tb = tarbox.connect(db_url)
    yield tb.filesystem(tenant)
    tb.close()


def _delegated(fs, path: str) -> None:
    """Open ``path`` until the store holds a delegation: the first open of a store
    never takes one, and the recall feed starts in the background."""
    deadline = time.monotonic() + 30
    while not fs._store.delegation.held:
        assert time.monotonic() < deadline, "no read delegation"
        fs.read_file(path)
        time.sleep(0.01)


def _each_open_asks(fs, path: str, content: bytes, times: int = 8) -> None:
    """Open ``path`` ``times`` times, each one round trip, and never hold a delegation.
    More opens, and more time, than a store needs to start delegating when it may."""
    for _ in range(times):
        before = fs.stats["round_trips"]
        assert fs.read_file(path) == content
        assert fs.stats["round_trips"] == before + 1
        time.sleep(0.05)
    assert not fs._store.delegation.held


def _terminate(db, pid: int) -> None:
    with db.admin() as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s::int)", (pid,)).fetchone()[0]


def test_reopening_a_file_costs_no_round_trip(reader):
    reader.write_file("/f", b"one")
    assert reader.read_file("/f") == b"one"
    _delegated(reader, "/f")
    before = reader.stats["round_trips"]
    for _ in range(20):
        assert reader.read_file("/f") == b"one"
        assert reader.stat("/f").size == 3
    assert reader.stats["round_trips"] == before


def test_a_writer_elsewhere_recalls_the_delegation(reader, db_url, tenant):
    """The reader keeps using its delegation (so it never goes idle) while another
    process writes: without a recall the writer would wait for ever."""
    reader.write_file("/f", b"old")
    reader.write_file("/tick", b"t")
    assert reader.read_file("/f") == b"old"
    _delegated(reader, "/tick")
    writer = spawn_writer(db_url, tenant, "fs.write_file('/f', b'new')\n")
    deadline = time.monotonic() + 60
    while writer.poll() is None:
        assert time.monotonic() < deadline, "the writer is still waiting for the reader's lock"
        reader.read_file("/tick")  # a zero-round-trip open: keeps the delegation busy
        time.sleep(0.005)
    assert writer.returncode == 0
    assert reader.read_file("/f") == b"new"  # close-to-open
    assert reader._store.db.recall_feed().stats["recalls"] >= 1


def test_the_feed_cut_mid_run_falls_back_to_round_trips(reader, db_url, tenant):
    reader.write_file("/f", b"v1")
    assert reader.read_file("/f") == b"v1"
    _delegated(reader, "/f")
    st = reader._store
    feed = st.db.recall_feed()
    assert feed.up
    conn = feed._conn
    assert conn is not None
    losses = feed.stats["losses"]
    _terminate(st.db, conn.info.backend_pid)
    # the feed's thread notices, the delegation is let go; until then no open may trust it
    deadline = time.monotonic() + 30
    while feed.stats["losses"] == losses:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    writer = spawn_writer(db_url, tenant, "fs.write_file('/f', b'v2')\n")
    assert writer.wait(timeout=60) == 0
    assert reader.read_file("/f") == b"v2"
    # the feed comes back, and with it opens without round trips
    deadline = time.monotonic() + 30
    while not (feed.up and st.delegation.held):
        assert time.monotonic() < deadline
        reader.read_file("/f")
        time.sleep(0.05)
    before = reader.stats["round_trips"]
    assert reader.read_file("/f") == b"v2"
    assert reader.stats["round_trips"] == before


def test_the_delegations_connection_cut_is_noticed_at_the_next_open(reader, db_url, tenant):
    reader.write_file("/f", b"v1")
    assert reader.read_file("/f") == b"v1"
    _delegated(reader, "/f")
    st = reader._store
    _terminate(st.db, st.delegation.conn.info.backend_pid)
    # the server released the shared lock with the session: a writer gets through at once
    writer = spawn_writer(db_url, tenant, "fs.write_file('/f', b'v2')\n")
    assert writer.wait(timeout=60) == 0
    assert reader.read_file("/f") == b"v2"


def test_no_delegation_without_the_feed(db_url, tenant):
    """A database whose listening connection cannot come up: every open asks."""
    tb = tarbox.connect(db_url)
    try:
        feed = tb.db.recall_feed()
        feed._url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"  # unreachable
        fs = tb.filesystem(tenant)
        fs.write_file("/f", b"x")
        _each_open_asks(fs, "/f", b"x")
    finally:
        tb.close()


def test_a_writer_waiting_for_a_write_back_window_is_not_lost(reader, db_url, tenant):
    """Recalls are sent to whoever holds the lock; a window (exclusive) is not a
    delegation and simply ends; the writer gets the lock after it."""
    fs = reader
    with fs.write_back(0.2):
        fs.write_file("/w", b"in a window")
        writer = spawn_writer(db_url, tenant, "fs.write_file('/other', b'x')\n", stderr=subprocess.PIPE)
        time.sleep(0.05)
    assert writer.wait(timeout=60) == 0, writer.stderr.read()
    assert fs.read_file("/other") == b"x"
    assert fs.read_file("/w") == b"in a window"


def test_close_to_open_while_both_processes_read_and_write(reader, db_url, tenant):
    """The other process says each file it closed on its stdout; this one, reading and
    writing between the lines (so its writes keep taking the delegation back in their
    round trip), must see every file it was told about at its next open."""
    reader.mkdir("/b")
    reader.write_file("/mine-0", b"0")
    _delegated(reader, "/mine-0")
    writer = spawn_writer(
        db_url,
        tenant,
        """
        import sys
        for k in range(40):
            fs.write_file(f"/b/{k}", str(k).encode())
            print(k, flush=True)
        """,
        stdout=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, writer.kill)  # a writer never let in fails the test, not hangs it
    watchdog.start()
    seen = 0
    for line in writer.stdout:
        k = int(line)
        assert reader.read_file(f"/b/{k}") == str(k).encode()  # closed before we opened
        reader.write_file(f"/mine-{k + 1}", b"x")
        assert reader.read_file(f"/mine-{k}")
        seen += 1
    watchdog.cancel()
    assert writer.wait(timeout=60) == 0 and seen == 40
    assert sorted(reader.listdir("/b"), key=int) == [str(k) for k in range(40)]
    assert reader.stats["recalls_sent"] + reader._store.db.recall_feed().stats["recalls"] >= 1


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_read_delegations_can_be_turned_off(db_url, tenant, monkeypatch, how):
    """For a pooler that does not carry LISTEN (PgBouncer in transaction mode): then
    every open asks, as before delegations existed."""
    if how == "environment":
        monkeypatch.setenv("TARBOX_READ_DELEGATIONS", "0")
        tb = tarbox.connect(db_url)
    else:
        tb = tarbox.connect(db_url, read_delegations=False)
    try:
        fs = tb.filesystem(tenant)
        fs.write_file("/f", b"x")
        _each_open_asks(fs, "/f", b"x")
    finally:
        tb.close()


def test_a_process_that_opens_once_starts_no_feed(db_url, tenant):
    """A CLI command opens once: no listening connection, no delegation."""
    tb = tarbox.connect(db_url)
    try:
        fs = tb.filesystem(tenant)
        fs.write_file("/once", b"1")
        assert fs.read_file("/once") == b"1"
        assert tb.db._feed is None and not fs._store.delegation.held
    finally:
        tb.close()
