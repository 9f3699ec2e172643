"""The commit path of one operation: it runs ahead of the tenant's lock on the caches
as they are, and one round trip takes the lock, checks the tenant's generation and
commits (``Store.operation``, ``tarbox_flush``). These tests make the caches stale on
purpose, through a second connection (a second Store, as another process has), and
check that every answer is still the one exact state gives."""

from __future__ import annotations

import errno
import threading

import pytest

import tarbox


@pytest.fixture
def two_views(tb, tenant, db_url):
    """This connection's view, whose caches are warm, and another connection's."""
    other = tarbox.connect(db_url)
    try:
        yield tb.filesystem(tenant), other.filesystem(tenant)
    finally:
        other.close()


@pytest.fixture
def fresh(tenant, db_url):
    """Look at the tenant through a new connection: nothing cached, nothing stale."""
    conns = []

    def view() -> tarbox.Filesystem:
        conns.append(tarbox.connect(db_url))
        return conns[-1].filesystem(tenant)

    yield view
    for c in conns:
        c.close()


def test_one_committed_operation_is_one_statement(fs):
    fs.mkdir("/d")
    fs.write_file("/d/a", b"x")
    before = fs.stats
    fs.write_file("/d/b", b"y" * 4096)
    fs.rename("/d/b", "/d/c")
    fs.remove("/d/a")
    assert fs.stats["round_trips"] - before["round_trips"] == 3
    assert fs.stats["run_ahead"] - before["run_ahead"] == 3
    assert sorted(fs.listdir("/d")) == ["c"]
    assert fs.read_file("/d/c") == b"y" * 4096


def test_a_commit_on_stale_caches_is_decided_again(two_views, fresh):
    mine, other = two_views
    mine.mkdir("/d")
    mine.write_file("/d/f", b"old")
    assert mine.listdir("/d") == ["f"]  # cached here, complete
    other.write_file("/d/g", b"from the other")  # our caches are now stale
    redone = mine.stats["run_ahead_redone"]
    mine.rename("/d/f", "/d/g")  # replaces the file the other connection wrote
    assert mine.stats["run_ahead_redone"] == redone + 1
    assert fresh().listdir("/d") == ["g"]
    assert fresh().read_file("/d/g") == b"old"
    # the attempt that was dropped left no audit record: one rename, one write each
    ops = [(r.op.value, r.path) for r in fresh().audit(path="/d/*")]
    assert ops.count(("rename", "/d/f")) == 1
    assert ops.count(("write", "/d/g")) == 1


@pytest.mark.parametrize(
    "prepare, act, check",
    [
        # the other connection created the name: removing it works, creating it is EEXIST
        (lambda o: o.write_file("/x", b"1"), lambda m: m.remove("/x"), lambda o: not o.exists("/x")),
        (lambda o: o.mkdir("/x"), lambda m: m.rmdir("/x"), lambda o: not o.exists("/x")),
        (lambda o: o.write_file("/x", b"1"), lambda m: m.rename("/x", "/y"), lambda o: o.exists("/y")),
    ],
    ids=["remove", "rmdir", "rename"],
)
def test_an_error_from_stale_caches_is_not_reported(two_views, fresh, prepare, act, check):
    mine, other = two_views
    assert not mine.exists("/x")  # our caches say: no such name
    prepare(other)
    act(mine)  # stale caches would say ENOENT
    assert check(fresh())


def test_an_error_on_current_caches_stands(two_views, fresh):
    mine, other = two_views
    mine.write_file("/x", b"1")
    other.write_file("/x2", b"2")
    with pytest.raises(FileExistsError):
        mine.mkdir("/x")
    with pytest.raises(FileNotFoundError):
        mine.remove("/missing")
    assert fresh().read_file("/x") == b"1"


def test_racing_creators_of_one_name_make_it_once(tb, tenant, db_url):
    """Without the generation check two writers deciding on the same stale state would
    both 'create' /race (the second row would silently replace the first)."""
    conns = [tarbox.connect(db_url) for _ in range(4)]
    views = [c.filesystem(tenant) for c in conns]
    for v in views:
        assert not v.exists("/race")  # every view's caches say it is missing
    barrier = threading.Barrier(len(views))
    outcome: list[object] = []

    def create(v):
        barrier.wait()
        try:
            v.mkdir("/race")
            outcome.append("made")
        except OSError as exc:
            outcome.append(exc.errno)

    threads = [threading.Thread(target=create, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    assert sorted(outcome, key=str) == sorted(["made"] + [errno.EEXIST] * 3, key=str)
    fs = tb.filesystem(tenant)
    assert [r.op.value for r in fs.audit(path="/race")] == ["mkdir"]


def test_quota_refusal_ahead_of_the_lock_loses_nothing(new_tenant, tb):
    t = new_tenant(quota_bytes=8192)
    fs = tb.filesystem(t)
    fs.write_file("/a", b"a" * 4096)
    with pytest.raises(tarbox.QuotaExceededError):
        fs.write_file("/b", b"b" * 8192)
    assert not fs.exists("/b")
    assert fs.read_file("/a") == b"a" * 4096
    fs.write_file("/c", b"c" * 100)  # the store goes on working
    assert sorted(fs.listdir("/")) == ["a", "c"]
