"""Staged publication (docs/design.md): what a descriptor writes is published whole
when the last descriptor that wrote the file closes, or at fsync. Commits in between
(write-back windows, buffers past the flush threshold, checkpoints) store its
blocks but keep showing the previous version to every other process, and a
writer that dies leaves that previous version, never a prefix.

"Another process" here is a second client (its own store and connections); the
kill -9 cases run the writer in a real other process."""

from __future__ import annotations

import errno
import random
import signal
import subprocess
import time

import pytest

import tarbox
from other_process import spawn_writer
from tarbox.fs import fsck
from tarbox.fs.records import FLUSH_BYTES

BIG = FLUSH_BYTES + (4 << 20)  # past the flush threshold: blocks are stored before the close


def pattern(tag: bytes, size: int) -> bytes:
    """Distinct blocks (a repeated unit would deduplicate to a few)."""
    return random.Random(tag).randbytes(size)


@pytest.fixture
def other(db_url):
    client = tarbox.connect(db_url)
    yield client
    client.close()


def assert_clean(tb, tenant):
    report = fsck.check(tb.db, tenant.id)
    assert report.ok, report.problems


def stage_rows(tb, tenant) -> int:
    with tb.db.admin() as conn:
        return conn.execute(
            "SELECT count(*) FROM extents WHERE tenant_id = %s AND layer_id < 0", (tenant.id,)
        ).fetchone()[0]


def test_a_file_past_the_flush_threshold_appears_whole_at_close(tb, tenant, other):
    fs, seen = tb.filesystem(tenant), other.filesystem(tenant)
    data = pattern(b"new file;", BIG)
    f = fs.open("/big", "wb")
    f.write(data[: BIG - 1000])
    assert stage_rows(tb, tenant) > 0  # the threshold stored blocks already...
    assert seen.read_file("/big") == b""  # ...but the other process sees the file as created
    assert_clean(tb, tenant)
    f.write(data[BIG - 1000 :])
    f.close()
    assert seen.read_file("/big") == data
    assert stage_rows(tb, tenant) == 0
    assert_clean(tb, tenant)


def test_overwriting_in_place_shows_the_old_bytes_until_close(tb, tenant, other):
    fs, seen = tb.filesystem(tenant), other.filesystem(tenant)
    old = pattern(b"old;", 3 << 20)
    fs.write_file("/f", old)
    new = pattern(b"NEW!", BIG)
    with fs.open("/f", "r+b") as f:
        f.write(new[: 2 << 20])
        f.seek(BIG - (1 << 20))
        f.write(new[BIG - (1 << 20) :])
        f.seek(2 << 20)
        f.write(new[2 << 20 : BIG - (1 << 20)])
        assert seen.read_file("/f") == old
        assert seen.stat("/f").size == len(old)
        assert fs.read_file("/f") == new  # the writer's own process sees its writes at once
    assert seen.read_file("/f") == new
    assert_clean(tb, tenant)


def test_write_back_windows_do_not_publish_a_file_still_being_written(tb, tenant, other):
    fs, seen = tb.filesystem(tenant), other.filesystem(tenant)
    with fs.write_back(0.02):
        f = fs.open("/log", "wb")
        f.write(b"first half;")
        fs.write_file("/done", b"closed file")  # closed: rides the window
        time.sleep(0.3)  # several windows end meanwhile
        assert seen.read_file("/done") == b"closed file"
        assert seen.read_file("/log") == b""
        f.write(b"second half")
        time.sleep(0.3)
        assert seen.read_file("/log") == b""
        f.close()
        time.sleep(0.3)
        assert seen.read_file("/log") == b"first half;second half"
    assert_clean(tb, tenant)


def test_fsync_publishes_while_the_descriptor_stays_open(tb, tenant, other):
    fs, seen = tb.filesystem(tenant), other.filesystem(tenant)
    first = pattern(b"synced;", 1 << 20)
    with fs.open("/s", "wb") as f:
        f.write(first)
        f.fsync()
        assert seen.read_file("/s") == first
        f.write(pattern(b"more;", BIG))  # stored early, not published
        assert seen.read_file("/s") == first
    assert len(seen.read_file("/s")) == len(first) + BIG
    assert_clean(tb, tenant)


def test_two_descriptors_publish_when_the_last_one_closes(tb, tenant, other):
    fs, seen = tb.filesystem(tenant), other.filesystem(tenant)
    fs.write_file("/two", b"")
    a, b = fs.open("/two", "r+b"), fs.open("/two", "r+b")
    a.write(b"AAAA")
    b.seek(4)
    b.write(b"BBBB")
    a.close()
    fs.sync()
    assert seen.read_file("/two") == b""  # b is still writing
    b.close()
    assert seen.read_file("/two") == b"AAAABBBB"


def test_a_checkpoint_taken_mid_write_keeps_the_old_version(tb, tenant, other):
    fs = tb.filesystem(tenant)
    old = pattern(b"v1;", 2 << 20)
    fs.write_file("/c", old)
    new = pattern(b"v2;", BIG)
    f = fs.open("/c", "r+b")
    f.write(new[: BIG // 2])
    layer = fs.checkpoint("mid-write")
    f.write(new[BIG // 2 :])
    f.close()
    assert fs.read_file("/c") == new
    assert tb.filesystem(tenant, layer=layer.id).read_file("/c") == old
    assert other.filesystem(tenant).read_file("/c") == new
    assert_clean(tb, tenant)


def test_a_file_removed_by_another_process_while_staged_is_not_brought_back(tb, tenant, other):
    fs, seen = tb.filesystem(tenant), other.filesystem(tenant)
    fs.write_file("/gone", b"committed")
    base = fs.usage()
    f = fs.open("/gone", "r+b")
    f.write(pattern(b"staged;", BIG))  # blocks stored under a stage
    seen.unlink("/gone")
    f.write(pattern(b"more;", BIG))  # its commit finds the inode removed and drops our bytes
    with pytest.raises(OSError) as err:
        f.write(b"more")
    assert err.value.errno == errno.ESTALE
    f.close()
    fs.sync()
    assert not seen.exists("/gone") and not fs.exists("/gone")
    assert stage_rows(tb, tenant) == 0
    assert_clean(tb, tenant)
    assert fs.usage().used_bytes <= base.used_bytes  # the staged blocks went with it


_DIES_MID_WRITE = """
import os, random
f = fs.open(PATH, "r+b" if fs.exists(PATH) else "wb")
f.write(DATA)
print("staged", flush=True)
os.kill(os.getpid(), 9)
"""


def test_a_writer_killed_mid_file_leaves_the_old_version_and_gc_reclaims_its_blocks(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    old = pattern(b"before the crash;", 3 << 20)
    fs.write_file("/crash", old)
    fs.sync()
    before = fs.usage()
    body = _DIES_MID_WRITE.replace("PATH", "'/crash'").replace("DATA", f"random.randbytes({BIG})")
    proc = spawn_writer(db_url, tenant, body, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=120)
    assert out == b"staged\n" and proc.returncode == -signal.SIGKILL
    assert fs.read_file("/crash") == old
    assert stage_rows(tb, tenant) > 0  # the dead writer's stage pins its blocks...
    assert_clean(tb, tenant)  # ...which is consistent: stored and counted
    assert fs.usage().used_bytes > before.used_bytes
    fs.gc(stale_after=3600)  # a live writer's stage is safe from the default gc
    assert stage_rows(tb, tenant) > 0
    fs.gc(stale_after=0)
    assert stage_rows(tb, tenant) == 0
    assert fs.usage().used_bytes == before.used_bytes
    assert fs.read_file("/crash") == old
    assert_clean(tb, tenant)


def test_a_stage_reclaimed_by_gc_fails_the_close_with_eio_and_keeps_the_old_version(tb, tenant, other):
    fs = tb.filesystem(tenant)
    fs.write_file("/late", b"old")
    f = fs.open("/late", "r+b")
    f.write(pattern(b"late;", BIG))
    other.filesystem(tenant).gc(stale_after=0)  # as if the writer had been silent for too long
    with pytest.raises(OSError) as err:
        f.close()
    assert err.value.errno == 5  # EIO: the staged blocks may be gone
    assert other.filesystem(tenant).read_file("/late") == b"old"
    assert_clean(tb, tenant)


def test_switching_away_while_a_file_is_being_written_is_refused(tb, tenant):
    fs = tb.filesystem(tenant)
    fs.write_file("/a", b"1")
    cp = fs.checkpoint("one")
    f = fs.open("/b", "wb")
    f.write(pattern(b"big;", BIG))  # staged: its content belongs to this view
    with pytest.raises(OSError) as err:
        fs.switch(cp)
    assert err.value.errno == errno.EBUSY
    f.close()
    fs.switch(cp)  # fine once it is published
    assert not fs.exists("/b")
    fs.switch("main")
    assert len(fs.read_file("/b")) == BIG
    assert_clean(tb, tenant)
