"""Content-addressed blocks, quotas, and visibility across processes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import tarbox

MiB = 1 << 20


def test_dedup_within_tenant_not_across(tb, new_tenant):
    a, b = new_tenant(), new_tenant()
    fa, fb = tb.filesystem(a), tb.filesystem(b)
    blob = os.urandom(MiB)
    fa.write_file("/1", blob)
    used = fa.usage().used_bytes
    assert used == MiB
    fa.write_file("/2", blob)  # same content: no new blocks
    assert fa.usage().used_bytes == used
    fb.write_file("/1", blob)  # other tenant: stored again (no cross-tenant dedup)
    assert fb.usage().used_bytes == MiB


def test_small_edit_of_large_file_stores_only_changed_block(fs):
    size = 64 * MiB
    with fs.open("/big", "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    before = fs.usage().used_bytes
    assert before == size
    with fs.open("/big", "r+b") as f:
        f.seek(33 * MiB + 5)
        f.write(b"!")
    after = fs.usage().used_bytes
    # one block rewritten, the old one released: storage unchanged, never > 1 MiB more
    assert after - before < MiB
    assert after == size


def test_overwrite_and_delete_release_blocks(fs):
    fs.write_file("/a", os.urandom(300_000))
    fs.write_file("/a", os.urandom(1000))
    assert fs.usage().used_bytes == 1000
    for _ in range(50):
        fs.append_file("/a", b"line\n")  # every append rewrites the tail block
    assert fs.usage().used_bytes == 1000 + 250
    fs.remove("/a")
    assert fs.usage().used_bytes == 0


def test_gc_reclaims_unreferenced_blocks(tb, fs, db_url):
    import psycopg

    fs.write_file("/a", b"keep")
    # simulate a crash leftover: a block no extent references
    with psycopg.connect(db_url, options="-c search_path=tarbox") as conn:
        tid = tb.get_tenant(fs.tenant_name).id
        conn.execute(
            "INSERT INTO blocks (tenant_id, hash, len, data) VALUES (%s, %s, 6, 'orphan')",
            (tid, b"\x01" * 32),
        )
        conn.execute("UPDATE tenant_state SET used_bytes = used_bytes + 6 WHERE tenant_id = %s", (tid,))
    assert fs.gc() == (1, 6)
    assert fs.read_file("/a") == b"keep"
    assert fs.usage().used_bytes == 4
    assert fs.gc() == (0, 0)


def test_byte_quota(tb, new_tenant):
    t = new_tenant(quota_bytes=MiB)
    fs = tb.filesystem(t)
    fs.write_file("/ok", os.urandom(MiB // 2))
    with pytest.raises(tarbox.QuotaExceededError) as info:
        fs.write_file("/too-much", os.urandom(MiB))
    assert info.value.errno == errno.EDQUOT
    assert not fs.exists("/too-much")
    assert fs.usage().used_bytes == MiB // 2
    assert len(fs.read_file("/ok")) == MiB // 2
    fs.remove("/ok")
    fs.write_file("/now-fits", os.urandom(MiB - 10))


def test_inode_quota(tb, new_tenant):
    t = new_tenant(quota_inodes=5)  # the root counts
    fs = tb.filesystem(t)
    for i in range(4):
        fs.write_file(f"/f{i}", b"")
    with pytest.raises(OSError) as info:
        fs.mkdir("/one-more")
    assert info.value.errno == errno.EDQUOT
    assert fs.listdir("/") == [f"f{i}" for i in range(4)]


def test_concurrent_writers_cannot_overshoot_quota(tb, db_url, new_tenant):
    t = new_tenant(quota_bytes=4 * MiB)
    ok, refused = [], []

    def writer(k: int) -> None:
        with tarbox.connect(db_url) as own:  # own caches, like another process
            fs = own.filesystem(t.id)
            for i in range(6):
                try:
                    fs.write_file(f"/w{k}-{i}", os.urandom(256 * 1024))
                    ok.append(1)
                except tarbox.QuotaExceededError:
                    refused.append(1)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    fs = tb.filesystem(t)
    assert fs.usage().used_bytes <= 4 * MiB
    assert len(ok) == 16 and len(refused) == 8
    assert len(fs.listdir("/")) == 16


def test_close_to_open_across_processes(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    fs.write_file("/shared", b"v1")
    assert fs.read_file("/shared") == b"v1"  # now cached here
    script = textwrap.dedent(
        f"""
        import tarbox
        fs = tarbox.connect({db_url!r}).filesystem({str(tenant.id)!r})
        with fs.open("/shared", "wb") as f:
            f.write(b"v2 from another process")
        fs.mkdir("/made-elsewhere")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert fs.read_file("/shared") == b"v2 from another process"
    assert fs.listdir("/") == ["made-elsewhere", "shared"]


def test_writes_in_a_batch_are_invisible_until_it_ends(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    with tarbox.connect(db_url) as other:
        ofs = other.filesystem(tenant.id)
        with fs.batch():
            fs.write_file("/in-batch", b"x")
            assert fs.exists("/in-batch")
            assert ofs.listdir("/") == []
        assert ofs.listdir("/") == ["in-batch"]


def test_stale_cache_never_resurrects_deleted_entries(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    fs.mkdir("/d")
    fs.write_file("/d/f", b"1")
    with tarbox.connect(db_url) as other:
        other.filesystem(tenant.id).remove_tree("/d")
    fs.write_file("/g", b"2")  # commits under the write lock: sees the removal first
    assert fs.listdir("/") == ["g"]
    with pytest.raises(FileNotFoundError):
        fs.write_file("/d/f2", b"3")


def test_sync_commits_a_batch_durably(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    with tarbox.connect(db_url) as other:
        ofs = other.filesystem(tenant.id)
        with fs.batch():
            fs.write_file("/a", b"1")
            fs.sync()  # fsync inside a batch: commits what is pending, durably
            assert ofs.read_file("/a") == b"1"
            fs.write_file("/b", b"2")
            assert not ofs.exists("/b")
        assert ofs.read_file("/b") == b"2"


def test_file_fsync_publishes_before_close(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    with tarbox.connect(db_url) as other, fs.open("/log", "wb") as f:
        f.write(b"first")
        f.fsync()
        assert other.filesystem(tenant.id).read_file("/log") == b"first"
