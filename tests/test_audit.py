"""The audit log: every committed change of a tenant with its run, written by
the same commit as the change (so a refused or lost change leaves no record)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest

import tarbox
from tarbox import AuditOp
from tarbox.wasi import WasiHost
from wasi_support import guest

SCRIPT = b"""mkdir out
open out/a.txt wct
write 0 hello
close 0
rename out/a.txt out/b.txt
symlink b.txt out/link
unlink out/link
cat out/b.txt
"""


@pytest.fixture(scope="module")
def ops() -> bytes:
    return guest("ops")


def test_a_run_lists_what_its_guest_did(tb, tenant, ops):
    host = WasiHost(tb, tenant)
    r = host.run(ops, stdin=SCRIPT)
    assert r.ok, (r.status, r.stdout, r.trap)
    got = [(x.op, x.path, x.path2, x.bytes) for x in r.audit]
    assert got == [
        (AuditOp.MKDIR, "/workspace", None, None),  # the host made the preopen for the run
        (AuditOp.MKDIR, "/workspace/out", None, None),
        (AuditOp.CREATE, "/workspace/out/a.txt", None, 0),
        (AuditOp.WRITE, "/workspace/out/a.txt", None, 5),
        (AuditOp.RENAME, "/workspace/out/a.txt", "/workspace/out/b.txt", None),
        (AuditOp.SYMLINK, "/workspace/out/link", "b.txt", None),
        (AuditOp.REMOVE, "/workspace/out/link", None, None),
    ]
    assert {x.run_id for x in r.audit} == {r.run_id}
    head = tb.filesystem(tenant).current_layer().id
    assert {x.layer_id for x in r.audit} == {head}
    # a second run has its own id; the first one's records are unchanged
    r2 = host.run(ops, stdin=b"unlink out/b.txt\n")
    assert [(x.op, x.path) for x in r2.audit] == [(AuditOp.REMOVE, "/workspace/out/b.txt")]
    assert len(r.audit) == 7 and r2.run_id != r.run_id


def test_reads_are_recorded_only_when_asked(tb, tenant, ops):
    tb.filesystem(tenant).makedirs("/workspace")
    tb.filesystem(tenant).write_file("/workspace/in.txt", b"data")
    quiet = WasiHost(tb, tenant).run(ops, stdin=b"cat in.txt\n")
    assert quiet.ok and quiet.audit == []
    loud = WasiHost(tb, tenant, audit_reads=True).run(ops, stdin=b"cat in.txt\n")
    assert [(x.op, x.path) for x in loud.audit] == [(AuditOp.OPEN, "/workspace/in.txt")]


def test_a_refused_change_leaves_no_record(tb, new_tenant):
    t = new_tenant(quota_bytes=64 << 10)
    fs = tb.filesystem(t)
    fs.write_file("/small", b"x" * 1000)
    with pytest.raises(tarbox.QuotaExceededError):
        fs.write_file("/big", os.urandom(200 << 10))
    assert [(x.op, x.path) for x in fs.audit()] == [(AuditOp.WRITE, "/small")]


def test_layer_operations_and_filters(tb, tenant):
    fs = tb.filesystem(tenant)
    fs.write_file("/a.txt", b"1")
    cp = fs.checkpoint("first")
    fs.branch("exp")
    fs.write_file("/dir-b.txt", b"2")
    log = fs.audit()
    # branch() without a layer checkpoints first: one BRANCH record says both
    assert [x.op for x in log] == [AuditOp.WRITE, AuditOp.CHECKPOINT, AuditOp.BRANCH, AuditOp.WRITE]
    assert log[1].layer_id == cp.id and log[1].path2 == "first"
    assert [x.path for x in fs.audit(path="/dir-*")] == ["/dir-b.txt"]
    assert [x.op for x in fs.audit(op="branch")] == [AuditOp.BRANCH]
    assert fs.audit(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert [x.seq for x in fs.audit(limit=2)] == [log[0].seq, log[1].seq]


def test_each_cli_command_is_a_run(tb, tenant, db_url):
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}

    def cli(*args):
        p = subprocess.run(["tarbox", "-t", tenant.name, *args], env=env, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr.decode()
        return p.stdout

    cli("mkdir", "/d")
    cli("write", "/d/x", "content")
    records = json.loads(cli("--json", "audit"))
    assert [(r["op"], r["path"]) for r in records] == [("mkdir", "/d"), ("create", "/d/x"), ("write", "/d/x")]
    assert records[0]["run_id"] != records[1]["run_id"] == records[2]["run_id"]
    only = json.loads(cli("--json", "audit", "--run", records[1]["run_id"]))
    assert [r["seq"] for r in only] == [records[1]["seq"], records[2]["seq"]]
    assert b"/d/x" in cli("audit", "--path", "/d/*")
    bad = subprocess.run(["tarbox", "-t", tenant.name, "audit", "--op", "nope"], env=env, capture_output=True)
    assert bad.returncode != 0 and b"unknown operation" in bad.stderr


@pytest.mark.parametrize("uptime", [None, 30.0], ids=["this-machine", "booted-30s-ago"])
def test_records_past_the_retention_are_pruned(tb, tenant, db_url, monkeypatch, uptime):
    """Also as on a machine booted 30 s ago: the monotonic clock counts from boot, and a
    store that took 0 for "never pruned" did not prune in the first hour after boot."""
    if uptime is not None:
        real, offset = time.monotonic, time.monotonic() - uptime
        monkeypatch.setattr(time, "monotonic", lambda: real() - offset)
    fs = tb.filesystem(tenant)
    fs.write_file("/old", b"1")
    tb.set_audit_retention(tenant, 1 / 86400)  # one second
    time.sleep(1.2)
    with tarbox.connect(db_url) as other:  # a fresh process-level store prunes at its first commit
        other.filesystem(tenant).write_file("/new", b"2")
        assert [x.path for x in other.filesystem(tenant).audit()] == ["/new"]
    with pytest.raises(ValueError):
        tb.set_audit_retention(tenant, 0)
