"""fsck: a tenant with a varied history checks clean; each kind of damage, made
with raw SQL as the owner role, is reported under its own check name and only
there; the CLI exits 1 on damage."""

from __future__ import annotations

import os

import pytest

import tarbox


def _history(tb: tarbox.Tarbox, tenant) -> tarbox.Filesystem:
    """Files, dirs, symlinks, hard links, a large file, overwrites, deletes,
    checkpoints, a branch, a switch back, a dropped layer and gc."""
    fs = tb.filesystem(tenant)
    fs.makedirs("/a/b")
    fs.write_file("/a/b/f.txt", b"hello\n")
    fs.write_file("/a/big", os.urandom(300_000))
    fs.symlink("b/f.txt", "/a/link")
    fs.link("/a/b/f.txt", "/a/hard")
    cp1 = fs.checkpoint("one")
    with fs.open("/a/big", "r+b") as f:
        f.seek(5)
        f.write(b"x")
    fs.truncate("/a/big", 1000)
    fs.remove("/a/hard")
    fs.rename("/a/b", "/a/c")
    fs.chmod("/a/c/f.txt", 0o600)
    cp2 = fs.checkpoint("two")
    fs.branch("side", cp1)
    fs.switch("side")
    fs.write_file("/side.txt", b"side")
    fs.switch(cp2)
    fs.write_file("/after.txt", b"after")
    throwaway = fs.checkpoint("three")
    fs.write_file("/x", b"x")
    fs.checkpoint("four")
    fs.switch(cp2)  # leave three/four on no branch: drop them
    fs.drop_layer(throwaway, descendants=True)
    fs.gc()
    return fs


def _checks(tb, tenant) -> set[str]:
    (report,) = tb.fsck(tenant)
    return {p.check for p in report.problems}


def test_a_varied_history_is_clean(tb, tenant):
    _history(tb, tenant)
    (report,) = tb.fsck(tenant)
    assert report.ok, report.problems
    assert report.checked["block-hash"] > 0 and report.checked["dirent-target"] > 5


def test_after_the_wasi_workload_and_its_limits_is_clean(tb, tenant):
    from tarbox.wasi import WasiHost
    from wasi_support import guest

    host = WasiHost(tb, tenant, timeout=0.5)
    limits = guest("limits")
    for args in (["g", "spin"], ["g", "sleep"]):
        host.run(limits, args)
    r = WasiHost(tb, tenant).run(guest("writeback"), ["g", "churn", "50", "0"])
    assert r.ok
    assert tb.fsck(tenant)[0].ok


DAMAGE = {
    "extent-block": "DELETE FROM blocks WHERE tenant_id = %(t)s AND len = 131072"
    " AND hash = (SELECT hash FROM blocks WHERE tenant_id = %(t)s AND len = 131072 ORDER BY hash LIMIT 1)",
    "block-hash": "UPDATE blocks SET data = overlay(data placing '\\xff'::bytea from 1)"
    " WHERE tenant_id = %(t)s AND hash = (SELECT hash FROM blocks WHERE tenant_id = %(t)s ORDER BY hash LIMIT 1)",
    "usage": "UPDATE tenant_state SET used_bytes = used_bytes + 1 WHERE tenant_id = %(t)s",
    "dirent-target": "DELETE FROM inodes WHERE tenant_id = %(t)s AND ino IN"
    " (SELECT ino FROM dirents WHERE tenant_id = %(t)s AND name = 'side.txt')",
    "layers": "UPDATE layers SET parent_id = layer_id WHERE tenant_id = %(t)s"
    " AND layer_id = (SELECT max(layer_id) FROM layers WHERE tenant_id = %(t)s AND frozen)",
    "orphan": "INSERT INTO inodes SELECT tenant_id, 999999999, layer_id, kind, mode, nlink, size, atime_ns,"
    " mtime_ns, ctime_ns, target, content_layer FROM inodes WHERE tenant_id = %(t)s AND ino = 1 LIMIT 1",
    "extent-size": "UPDATE inodes SET size = 1 WHERE tenant_id = %(t)s AND size = 300000",
    # a staging row (negative layer) whose stage does not exist
    "stage": "INSERT INTO extents SELECT tenant_id, ino, -424242, idx, hash FROM extents"
    " WHERE tenant_id = %(t)s AND layer_id > 0 LIMIT 1",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_kind_of_damage_is_found(tb, tenant, damage):
    _history(tb, tenant)
    with tb.db.admin() as conn:
        n = conn.execute(DAMAGE[damage], {"t": tenant.id}).rowcount
    assert n >= 1  # the damage was really done
    found = _checks(tb, tenant)
    assert damage in found
    # deleting an inode row or adding one also moves the counters; nothing else may be reported
    assert found <= {damage, "usage"} | ({"dirent-parent"} if damage == "layers" else set()), found


def test_cli_fsck_exit_codes(tb, tenant, db_url):
    import json
    import subprocess

    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    fs = tb.filesystem(tenant)
    fs.write_file("/f", b"data")
    p = subprocess.run(["tarbox", "-t", tenant.name, "--json", "fsck"], env=env, capture_output=True)
    assert p.returncode == 0 and json.loads(p.stdout)[0]["ok"] is True
    with tb.db.admin() as conn:
        conn.execute("UPDATE tenant_state SET used_inodes = used_inodes + 5 WHERE tenant_id = %s", (tenant.id,))
    p = subprocess.run(["tarbox", "-t", tenant.name, "fsck"], env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "usage: used_inodes is" in p.stdout


def test_row_security_switched_off_is_found(tb, tenant):
    _history(tb, tenant)
    try:
        with tb.db.admin() as conn:
            conn.execute("ALTER TABLE blocks DISABLE ROW LEVEL SECURITY")
        assert _checks(tb, tenant) == {"row-security"}
    finally:
        with tb.db.admin() as conn:
            conn.execute("ALTER TABLE blocks ENABLE ROW LEVEL SECURITY")
    assert tb.fsck(tenant)[0].ok
