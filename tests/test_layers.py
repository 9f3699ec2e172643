"""Layers: O(1) checkpoints, copy-on-write, union view with whiteouts, switch,
branching by writing to an old layer, pinned read-only views, diff."""

from __future__ import annotations

import errno
import subprocess

import psycopg
import pytest

import tarbox
from other_process import spawn_writer
from tarbox import ChangeKind


def rows_in(db_url, tenant_id, table, layer):
    with psycopg.connect(db_url, options="-c search_path=tarbox") as conn:
        return conn.execute(
            f"SELECT count(*) FROM {table} WHERE tenant_id = %s AND layer_id = %s", (tenant_id, layer)
        ).fetchone()[0]


def test_checkpoint_copies_nothing_and_writes_go_to_a_new_layer(tb, tenant, fs, db_url):
    fs.mkdir("/w")
    for i in range(20):
        fs.write_file(f"/w/f{i}", b"v1-%d" % i)
    base = fs.current_layer()
    used = fs.usage()
    cp = fs.checkpoint("first")
    assert cp.id == base.id and cp.frozen and cp.message == "first"
    head = fs.current_layer()
    assert head.parent_id == cp.id and not head.frozen
    for table in ("inodes", "dirents", "extents"):
        assert rows_in(db_url, tenant.id, table, head.id) == 0  # nothing copied
    assert fs.usage() == used  # no data copied
    fs.write_file("/w/f3", b"v2")
    assert fs.read_file("/w/f3") == b"v2"
    assert rows_in(db_url, tenant.id, "inodes", head.id) >= 1
    old = tb.filesystem(tenant, layer=cp.id)
    assert old.read_file("/w/f3") == b"v1-3"  # frozen layer unchanged


def test_union_view_whiteouts_and_renames(tb, tenant, fs, db_url):
    fs.mkdir("/d")
    fs.write_file("/d/keep", b"k")
    fs.write_file("/d/gone", b"g")
    fs.write_file("/d/moved", b"m")
    cp = fs.checkpoint("before")
    fs.remove("/d/gone")
    fs.rename("/d/moved", "/moved-out")
    fs.write_file("/d/new", b"n")
    assert fs.listdir("/d") == ["keep", "new"]
    assert fs.listdir("/") == ["d", "moved-out"]
    with pytest.raises(FileNotFoundError):
        fs.read_file("/d/gone")
    with tarbox.connect(db_url) as other:  # the database, not only our cache, has the whiteouts
        ofs = other.filesystem(tenant.id)
        assert ofs.listdir("/d") == ["keep", "new"] and ofs.listdir("/") == ["d", "moved-out"]
    # re-create a whited-out name
    fs.write_file("/d/gone", b"again")
    assert fs.read_file("/d/gone") == b"again"
    old = tb.filesystem(tenant, layer=cp.id)
    assert old.listdir("/d") == ["gone", "keep", "moved"]
    assert old.read_file("/d/gone") == b"g"


def test_switch_back_and_branch(tb, tenant, fs):
    fs.write_file("/a", b"one")
    cp1 = fs.checkpoint("one")
    fs.write_file("/a", b"two")
    fs.write_file("/b", b"only in two")
    cp2 = fs.checkpoint("two")
    fs.switch(cp1)
    assert fs.read_file("/a") == b"one" and not fs.exists("/b")
    fs.write_file("/c", b"branch")  # writing on a frozen layer branches off it
    branch_head = fs.current_layer()
    assert branch_head.parent_id == cp1.id and branch_head.id > cp2.id
    assert sorted(fs.listdir("/")) == ["a", "c"]
    fs.switch(cp2)
    assert fs.read_file("/a") == b"two" and fs.exists("/b") and not fs.exists("/c")
    ids = {layer.id for layer in fs.layers()}
    assert {cp1.id, cp2.id, branch_head.id} <= ids  # nothing was deleted


def test_copy_on_write_shares_unchanged_blocks(tb, tenant, fs):
    import os

    big = os.urandom(1 << 20)
    fs.write_file("/big", big)
    fs.checkpoint("c")
    before = fs.usage().used_bytes
    with fs.open("/big", "r+b") as f:
        f.seek(500_000)
        f.write(b"X")
    assert fs.usage().used_bytes - before == 128 * 1024  # one new block; the old one stays for history
    assert fs.read_file("/big")[500_000] == ord("X")


def test_pinned_view_is_read_only(tb, tenant, fs):
    fs.write_file("/a", b"1")
    cp = fs.checkpoint("c")
    pinned = tb.filesystem(tenant, layer=cp.id)
    with pytest.raises(PermissionError) as info:
        pinned.write_file("/a", b"2")
    assert info.value.errno == errno.EROFS
    fs.write_file("/a", b"3")  # writers continue on the head
    assert pinned.read_file("/a") == b"1"


def test_diff_between_any_layers(tb, tenant, fs):
    fs.mkdir("/d")
    fs.write_file("/d/same", b"s")
    fs.write_file("/d/edit", b"e1")
    fs.write_file("/d/del", b"x")
    a = fs.checkpoint("a")
    fs.write_file("/d/edit", b"e2-longer")
    fs.remove("/d/del")
    fs.write_file("/d/add", b"new")
    fs.rename("/d/same", "/d/renamed")
    b = fs.checkpoint("b")
    changes = {(c.path, c.kind) for c in fs.diff(a, b)}
    assert changes == {
        ("/d/edit", ChangeKind.MODIFIED),
        ("/d/del", ChangeKind.DELETED),
        ("/d/add", ChangeKind.ADDED),
        ("/d/same", ChangeKind.DELETED),
        ("/d/renamed", ChangeKind.ADDED),
    }
    edit = next(c for c in fs.diff(a, b) if c.path == "/d/edit")
    assert (edit.size_before, edit.size_after) == (2, 9)
    assert fs.diff(b, b) == []
    # across branches
    fs.switch(a)
    fs.write_file("/d/branch-only", b"b")
    from_b = {(c.path, c.kind) for c in fs.diff(b)}
    assert {("/d/branch-only", ChangeKind.ADDED), ("/d/add", ChangeKind.DELETED)} <= from_b


def test_checkpoint_is_visible_to_other_processes(tb, tenant, fs, db_url):
    fs.write_file("/x", b"1")
    cp = fs.checkpoint("c")
    with tarbox.connect(db_url) as other:
        ofs = other.filesystem(tenant.id)
        assert ofs.current_layer().parent_id == cp.id
        ofs.write_file("/x", b"2")
    assert fs.read_file("/x") == b"2"
    assert tb.filesystem(tenant, layer=cp.id).read_file("/x") == b"1"


def test_versions_of_a_sibling_branch_never_leak(tb, tenant, fs, db_url):
    fs.mkdir("/d")
    fs.write_file("/d/f", b"base")
    base = fs.checkpoint("base")
    for i in range(6):  # branch 1 changes /d/f in six layers
        fs.write_file("/d/f", b"branch1-%d" % i)
        fs.checkpoint(f"b1-{i}")
    fs.switch(base)
    fs.write_file("/d/other", b"branch 2")  # branch 2: its head id is above all of branch 1
    # the newest rows of /d/f below the head all belong to branch 1
    assert fs.read_file("/d/f") == b"base"
    assert fs.listdir("/d") == ["f", "other"]
    with tarbox.connect(db_url) as other:  # cold caches resolve the same
        assert other.filesystem(tenant.id).read_file("/d/f") == b"base"
    fs.remove("/d/f")  # a whiteout in branch 2 must not touch branch 1
    assert not fs.exists("/d/f")
    last_b1 = next(layer for layer in fs.layers() if layer.message == "b1-5")
    assert tb.filesystem(tenant, layer=last_b1.id).read_file("/d/f") == b"branch1-5"


def test_named_branches_have_their_own_heads(tb, tenant, fs, db_url):
    fs.write_file("/a", b"main-1")
    assert fs.current_branch() == "main"
    exp = fs.branch("experiment")  # checkpoints main, does not switch
    assert fs.current_branch() == "main" and set(fs.branches()) == {"main", "experiment"}
    fs.write_file("/a", b"main-2")
    fs.switch("experiment")
    assert fs.current_branch() == "experiment" and fs.current_layer().id == exp.id
    assert fs.read_file("/a") == b"main-1"
    fs.write_file("/b", b"only on experiment")
    cp = fs.checkpoint("exp work")
    assert fs.branches()["experiment"] == fs.current_layer().id and fs.current_layer().parent_id == cp.id
    fs.switch("main")
    assert fs.read_file("/a") == b"main-2" and not fs.exists("/b")
    fs.switch("experiment")
    assert fs.read_file("/b") == b"only on experiment"
    # detached: viewing a layer by id leaves every branch where it was
    heads = fs.branches()
    fs.switch(cp)
    fs.write_file("/c", b"detached")
    assert fs.current_branch() is None and fs.branches() == heads
    with pytest.raises(FileExistsError):
        fs.branch("experiment")
    with pytest.raises(tarbox.InvalidNameError):
        fs.branch("Bad Name")
    with pytest.raises(FileNotFoundError):
        fs.switch("no-such-branch")


def test_concurrent_checkpoints_never_fork_a_branch(tb, tenant, db_url):
    import threading

    errors = []

    def worker(k):
        try:
            with tarbox.connect(db_url) as own:
                fs = own.filesystem(tenant.id)
                for i in range(15):
                    fs.write_file(f"/w{k}-{i}", b"x")
                    fs.checkpoint(f"{k}-{i}")
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    fs = tb.filesystem(tenant)
    layers = fs.layers()
    assert len(fs.listdir("/")) == 45  # no write lost
    # one line of history: every layer but the base has exactly one child, and main is its tip
    children: dict[int, int] = {}
    for layer in layers:
        if layer.parent_id is not None:
            children[layer.parent_id] = children.get(layer.parent_id, 0) + 1
    assert all(n == 1 for n in children.values())
    assert fs.branches()["main"] == layers[-1].id == fs.current_layer().id
    assert sum(1 for layer in layers if not layer.frozen) == 1


def test_drop_history_frees_only_unreachable_blocks(tb, tenant, fs, db_url):
    import os

    MiB = 1 << 20
    base_data = b"?" + os.urandom(MiB - 1)  # not "!" at 0: the write below must change the block
    shared = os.urandom(MiB)
    fs.write_file("/base", base_data)
    cp1 = fs.checkpoint("cp1")
    exp = fs.branch("exp", cp1)
    fs.switch("exp")
    fs.write_file("/z", os.urandom(MiB))  # only in exp: freed by the drop
    fs.write_file("/shared-in-exp", shared)  # same content also on main: kept
    with fs.open("/base", "r+b") as f:  # copy-on-write: one new block in exp
        f.write(b"!")
    fs.checkpoint("exp1")
    fs.switch("main")
    fs.write_file("/shared", shared)
    before = fs.usage()

    with pytest.raises(OSError) as info:
        fs.drop_layer(exp)
    assert info.value.errno == errno.ENOTEMPTY  # exp has a child (its open head)
    with pytest.raises(OSError) as info:
        fs.drop_layer(exp, descendants=True)
    assert info.value.errno == errno.EBUSY and "exp" in str(info.value)  # branch head inside
    with pytest.raises(OSError) as info:
        fs.drop_layer(fs.layers()[0], descendants=True)
    assert info.value.errno == errno.EBUSY  # base layer
    with pytest.raises(OSError):
        fs.drop_layer(fs.current_layer())  # the current view

    fs.delete_branch("exp")
    dropped = fs.drop_layer(exp, descendants=True)
    assert exp.id in dropped and len(dropped) == 2
    after = fs.usage()
    assert before.used_bytes - after.used_bytes == MiB + 128 * 1024  # /z and the rewritten block
    assert fs.read_file("/base") == base_data and fs.read_file("/shared") == shared
    assert tb.filesystem(tenant, layer=cp1.id).read_file("/base") == base_data
    assert exp.id not in {layer.id for layer in fs.layers()}
    assert fs.gc() == (0, 0)  # the drop already released everything unreachable
    with psycopg.connect(db_url, options="-c search_path=tarbox") as conn:
        for table in ("inodes", "dirents", "extents", "layers"):
            n = conn.execute(
                f"SELECT count(*) FROM {table} WHERE tenant_id = %s AND layer_id = ANY(%s)", (tenant.id, dropped)
            ).fetchone()[0]
            assert n == 0, table
        rows = conn.execute("SELECT count(*) FROM inodes WHERE tenant_id = %s", (tenant.id,)).fetchone()[0]
    assert fs.usage().used_inodes == rows  # the counter matches what is stored


def test_patch_matches_gnu_diff(tb, tenant, fs, tmp_path):
    old = "".join(f"line {i}\n" for i in range(40))
    new = old.replace("line 3\n", "line three\n").replace("line 30\n", "") + "tail without newline"
    fs.write_text("/t.txt", old)
    fs.write_file("/bin", b"\x00\x01")
    a = fs.checkpoint("a")
    fs.write_text("/t.txt", new)
    fs.write_file("/bin", b"\x00\x02")
    (tmp_path / "old").write_text(old)
    (tmp_path / "new").write_text(new)
    gnu = subprocess.run(["diff", "-u", tmp_path / "old", tmp_path / "new"], capture_output=True, text=True).stdout
    changes = {c.path: c for c in fs.diff(a, patch=True)}
    ours = changes["/t.txt"].patch
    assert ours.splitlines()[:2] == ["--- a/t.txt", "+++ b/t.txt"]
    assert ours.splitlines()[2:] == gnu.splitlines()[2:]  # same hunks as GNU diff
    assert changes["/bin"].patch is None  # binary: listed, no patch


def test_checkpoints_during_another_process_writes_are_all_or_none(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    fs.mkdir("/w")
    writer = spawn_writer(
        db_url,
        tenant,
        """
        for i in range(60):
            # each file is written whole: 300 KiB of one repeated byte (3 blocks)
            fs.write_file(f"/w/f{i % 5}", bytes([i % 251]) * 300_000)
        """,
    )
    checkpoints = []
    while writer.poll() is None:
        checkpoints.append(fs.checkpoint("during"))
    assert writer.wait() == 0
    assert len(checkpoints) >= 2
    for cp in checkpoints:
        view = tb.filesystem(tenant, layer=cp.id)
        for name in view.listdir("/w"):
            data = view.read_file(f"/w/{name}")
            assert len(data) == 300_000 and data == data[:1] * 300_000, (cp.id, name)


def test_drop_and_gc_while_another_process_writes_the_same_blocks(tb, tenant, db_url):
    """Dropping history releases blocks that a writer in another process is
    re-referencing at the same moment (same content, deduplicated): the tenant
    lock orders them, so no surviving extent ever points at a missing block."""
    blobs = [bytes([k]) * 200_000 for k in range(4)]  # one full block and one partial each
    fs = tb.filesystem(tenant)
    names = []
    for r in range(6):
        name = f"exp{r}"
        fs.branch(name)
        fs.switch(name)
        for k, blob in enumerate(blobs):
            fs.write_file(f"/b{k}", blob)
        fs.checkpoint(name)
        fs.switch("main")
        names.append(name)
    writer = spawn_writer(
        db_url,
        tenant,
        """
        blobs = [bytes([k]) * 200_000 for k in range(4)]
        i = 0
        while not fs.exists("/stop"):  # runs until every drop is done
            k = i % 4
            fs.write_file(f"/m{k}", blobs[k])
            if i % 3 == 0:
                fs.remove(f"/m{k}")
            if i == 10:
                print("ready", flush=True)
            i += 1
        print(i, flush=True)
        for k in range(4):
            fs.write_file(f"/m{k}", blobs[k])
        """,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline() == "ready\n"
    dropped = 0
    for name in names:
        fs.delete_branch(name)
        layer = next(layer for layer in fs.layers() if layer.message == name)
        dropped += len(fs.drop_layer(layer, descendants=True))
        fs.gc()
    fs.write_file("/stop", b"")
    assert writer.wait() == 0
    print("writer iterations:", writer.stdout.read())
    assert dropped >= 12  # each branch: its checkpoint and its open head
    fresh = tarbox.connect(db_url)
    try:
        view = fresh.filesystem(tenant.id)
        for k, blob in enumerate(blobs):
            assert view.read_file(f"/m{k}") == blob
    finally:
        fresh.close()
    with psycopg.connect(db_url, options="-c search_path=tarbox") as conn:
        t = tenant.id
        missing = conn.execute(
            "SELECT count(*) FROM extents e WHERE e.tenant_id = %s AND NOT EXISTS"
            " (SELECT 1 FROM blocks b WHERE b.tenant_id = e.tenant_id AND b.hash = e.hash)",
            (t,),
        ).fetchone()[0]
        stored = conn.execute("SELECT coalesce(sum(len), 0) FROM blocks WHERE tenant_id = %s", (t,)).fetchone()[0]
        inodes = conn.execute("SELECT count(*) FROM inodes WHERE tenant_id = %s", (t,)).fetchone()[0]
    assert missing == 0
    usage = fs.usage()
    assert usage.used_bytes == stored and usage.used_inodes == inodes
    assert fs.gc() == (0, 0)
