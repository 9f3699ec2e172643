"""Streaming a large file keeps the process's memory bounded (peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

MiB = 1 << 20


def test_write_and_read_256_mib_with_bounded_rss(tb, tenant, db_url):
    script = textwrap.dedent(
        f"""
        import hashlib, json, os, resource
        import tarbox
        fs = tarbox.connect({db_url!r}).filesystem({str(tenant.id)!r})
        chunk = os.urandom(1 << 20)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        h = hashlib.sha256()
        with fs.open("/big", "wb") as f:
            for i in range(256):
                piece = chunk[i:] + chunk[:i]
                h.update(piece)
                f.write(piece)
        after_write = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = hashlib.sha256()
        with fs.open("/big", "rb") as f:
            while data := f.read(1 << 20):
                r.update(data)
        after_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"base": base, "write": after_write, "read": after_read,
                          "same": h.hexdigest() == r.hexdigest(), "size": fs.stat("/big").size}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    m = json.loads(out.stdout)
    assert m["same"] and m["size"] == 256 * MiB
    # ru_maxrss is in KiB; the flush threshold is 32 MiB of dirty blocks and the
    # block cache 128 MiB: the file itself (256 MiB) must never be held whole.
    assert (m["write"] - m["base"]) * 1024 < 200 * MiB
    assert (m["read"] - m["base"]) * 1024 < 200 * MiB


def test_sequential_reads_fetch_blocks_ahead_in_few_queries(tb, tenant):
    """A 4 MiB file (32 blocks of 128 KiB) read in 64 KiB pieces from a cold cache:
    without read-ahead that is one query per piece (64); with it, one per 9 blocks.
    Every byte must still come back right, also when reading backwards (no read-ahead
    helps there, and nothing stale may be served)."""
    import os

    fs = tb.filesystem(tenant)
    data = os.urandom(4 * MiB)
    fs.write_file("/seq", data)
    cold = tb.filesystem(tenant)._store
    cold.stream_cache = type(cold.stream_cache)(cold.stream_cache.capacity)  # forget what the write left cached
    cold.block_cache = type(cold.block_cache)(cold.block_cache.capacity)
    before = cold.stats["round_trips"]
    got = bytearray()
    with fs.open("/seq", "rb") as f:
        while piece := f.read(64 << 10):
            got += piece
    queries = cold.stats["round_trips"] - before
    assert bytes(got) == data
    assert queries <= 8, queries  # 32 blocks / 9 per query = 4, plus the open's revalidation
    back = bytearray()
    with fs.open("/seq", "rb") as f:
        for off in range(len(data) - (64 << 10), -1, -(64 << 10)):
            f.seek(off)
            back[:0] = f.read(64 << 10)
    assert bytes(back) == data
