"""Layer counts come from a layer's own rows; the oracle is the path-by-path diff.

For histories without directory moves or new hard links, both must agree
exactly. The two documented exceptions are checked on their own.
"""

from __future__ import annotations

import uuid

import psycopg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tarbox import ChangeKind, FileType

NAMES = ["a", "b", "c"]
DIRS = ["/", "/d", "/d/e"]
path = st.builds(lambda d, n: d.rstrip("/") + "/" + n, st.sampled_from(DIRS), st.sampled_from(NAMES))
data = st.binary(max_size=300)

op = st.one_of(
    st.tuples(st.just("write"), path, data),
    st.tuples(st.just("append"), path, data),
    st.tuples(st.just("mkdir"), path),
    st.tuples(st.just("remove"), path),
    st.tuples(st.just("rmdir"), path),
    st.tuples(st.just("move"), path, path),  # files and symlinks only (see the module docstring)
    st.tuples(st.just("symlink"), st.sampled_from(NAMES), path),
    st.tuples(st.just("chmod"), path, st.sampled_from([0o600, 0o644, 0o755])),
    st.tuples(st.just("truncate"), path, st.integers(0, 400)),
)


def apply(fs, ops) -> None:
    for o in ops:
        try:
            match o:
                case ("write", p, b):
                    fs.write_file(p, b)
                case ("append", p, b):
                    fs.append_file(p, b)
                case ("mkdir", p):
                    fs.mkdir(p)
                case ("remove", p):
                    fs.remove(p)
                case ("rmdir", p):
                    fs.rmdir(p)
                case ("move", a, b):
                    if fs.lstat(a).type is not FileType.DIRECTORY:
                        fs.rename(a, b)
                case ("symlink", t, p):
                    fs.symlink(t, p)
                case ("chmod", p, m):
                    fs.chmod(p, m)
                case ("truncate", p, n):
                    fs.truncate(p, n)
        except OSError:
            pass


def expected(changes) -> tuple[int, int, int, int]:
    kinds = [c.kind for c in changes]
    nbytes = sum(c.size_after for c in changes if c.kind is not ChangeKind.DELETED and c.type is FileType.FILE)
    return (kinds.count(ChangeKind.ADDED), kinds.count(ChangeKind.MODIFIED), kinds.count(ChangeKind.DELETED), nbytes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(op, max_size=15), second=st.lists(op, max_size=15))
@example(first=[("write", "/a", b"x")], second=[("remove", "/a"), ("mkdir", "/a")])  # type change
@example(first=[("write", "/a", b"x"), ("write", "/b", b"yy")], second=[("move", "/a", "/b")])  # replace
def test_counts_equal_the_diff_against_the_parent(tb, first, second):
    tenant = tb.create_tenant(f"t-{uuid.uuid4().hex[:12]}")
    try:
        fs = tb.filesystem(tenant)
        apply(fs, first)
        base = fs.checkpoint("first")
        apply(fs, second)
        # the open head, then the same layer once frozen (computed again, then stored)
        head = fs.current_layer()
        want = expected(fs.diff(base, head))
        got = fs.layer_counts(head)
        assert (got.added, got.modified, got.deleted, got.bytes) == want
        fs.checkpoint("second")
        layers = {layer.id: layer for layer in fs.layers(counts=True)}
        c = layers[head.id].counts
        assert (c.added, c.modified, c.deleted, c.bytes) == want
        again = tb.filesystem(tenant).layers(counts=True)  # from the stored column
        assert next(layer for layer in again if layer.id == head.id).counts == c
    finally:
        tb.delete_tenant(tenant)


def test_counts_are_stored_once_frozen(tb, tenant, fs, db_url):
    fs.write_file("/x", b"12345")
    open_layer = fs.current_layer()
    assert fs.layer_counts().added == 1
    fs.write_file("/y", b"1")
    assert fs.layer_counts().added == 2  # the open layer is counted afresh each time
    fs.checkpoint("two files")
    with psycopg.connect(db_url, options="-c search_path=tarbox") as conn:
        q = "SELECT counts FROM layers WHERE tenant_id = %s AND layer_id = %s"
        assert conn.execute(q, (tenant.id, open_layer.id)).fetchone()[0] is None
        c = fs.layer_counts(open_layer)
        assert (c.added, c.modified, c.deleted, c.bytes) == (2, 0, 0, 6)
        assert conn.execute(q, (tenant.id, open_layer.id)).fetchone()[0] == [2, 0, 0, 6]


def test_a_directory_move_counts_as_one_entry(fs):
    """Per-entry counting: moving a directory is one deletion and one addition,
    while the path diff lists every path below it on both sides."""
    fs.mkdir("/src")
    for i in range(5):
        fs.write_file(f"/src/f{i}", b"x")
    base = fs.checkpoint("tree")
    fs.rename("/src", "/dst")
    c = fs.layer_counts()
    assert (c.added, c.modified, c.deleted) == (1, 0, 1)
    assert expected(fs.diff(base))[:3] == (6, 0, 6)


def test_a_new_hard_link_counts_the_entry_not_the_old_path(fs):
    fs.write_file("/f", b"abc")
    base = fs.checkpoint("file")
    fs.link("/f", "/g")
    c = fs.layer_counts()
    assert (c.added, c.modified, c.deleted) == (1, 0, 0)
    assert expected(fs.diff(base))[:3] == (1, 1, 0)  # /f's nlink changed, so its version did
