"""The flush plan (src/tarbox/fs/flushplan.py): the arguments of one ``tarbox_flush``
call. Built without a database from what a Store decided, and held against the
function the migrations made: its parameters' names, order and types."""

from __future__ import annotations

import uuid

import psycopg

from tarbox.fs.flushplan import FlushPlan
from tarbox.fs.records import _DELETE, Inode
from tarbox.fs.types import FileType

TENANT = uuid.UUID(int=7)


def _file(ino: int, size: int, content: int | None, **owner: int) -> Inode:
    return Inode(ino, FileType.FILE, 0o644, 1, size, 10, 20, 30, None, 5, content, **owner)


def _plan(**changes) -> FlushPlan:
    decided: dict = dict(
        tenant=TENANT,
        expect=None,
        head=5,
        upserted=[],
        committed_as={},
        deleted=[],
        dirents={},
        dropped=[],
        copied=[],
        truncated=[],
        extents=[],
        renewed=[],
        unstaged=[],
        lost=[],
        audit=[[]] * 7,
        blocks={},
        release=[],
        prune=False,
        durable=False,
    )
    return FlushPlan.of(**{**decided, **changes})


def test_nothing_to_write_sends_nulls_and_the_scalars():
    params = _plan(expect=41, durable=True).params()
    assert params[:3] == [TENANT, 41, 5]
    assert params[3:-2] == [None] * 44  # every array empty: NULL
    assert params[-2:] == [False, True]


def test_a_held_file_is_sent_as_committed_and_the_rest_as_it_is_now():
    plan = _plan(upserted=[_file(2, 100, 5), _file(3, 9000, 5)], committed_as={3: (4096, 4)})
    assert plan.ino == [2, 3]
    assert plan.size == [100, 4096]  # the held file keeps its committed size ...
    assert plan.content == [5, 4]  # ... and the layer of its committed bytes
    assert plan.kind == [int(FileType.FILE)] * 2
    assert (plan.atime, plan.mtime, plan.ctime) == ([10, 10], [20, 20], [30, 30])
    assert plan.uid is plan.gid is plan.rdev is None  # all root's, no device: not sent


def test_owners_are_sent_for_every_version_once_one_is_not_roots():
    plan = _plan(upserted=[_file(2, 1, 5), _file(3, 1, 5, uid=1000, gid=100)])
    assert (plan.uid, plan.gid, plan.rdev) == ([0, 1000], [0, 100], [0, 0])


def test_directory_entries_split_into_deleted_and_set_whiteouts_included():
    plan = _plan(dirents={(1, "gone"): _DELETE, (1, "new"): 9, (1, "hidden"): None})
    assert (plan.de_del_parent, plan.de_del_name) == ([1], ["gone"])
    assert (plan.de_parent, plan.de_name, plan.de_ino) == ([1, 1], ["new", "hidden"], [9, None])


def test_extents_stages_audit_and_blocks_keep_their_columns_together():
    audit = [[1], [None], ["write"], ["/a"], [None], [3], [5]]
    plan = _plan(
        extents=[(2, None, 0, b"h0"), (3, 77, 4, b"h1")],
        copied=[(2, 4)],
        truncated=[(3, 8)],
        dropped=[6],
        renewed=[(77, 3)],
        unstaged=[(78, 4)],
        lost=[(79, 5)],
        audit=audit,
        blocks={b"h0": b"data0"},
        release=[b"old"],
    )
    assert (plan.x_ino, plan.x_stage, plan.x_idx, plan.x_hash) == ([2, 3], [None, 77], [0, 4], [b"h0", b"h1"])
    assert (plan.x_copy_ino, plan.x_copy_base, plan.x_trunc_ino, plan.x_trunc_from, plan.x_drop) == (
        [2],
        [4],
        [3],
        [8],
        [6],
    )
    assert (plan.renew_stage, plan.renew_ino, plan.unstage_stage, plan.unstage_ino) == ([77], [3], [78], [4])
    assert (plan.lost_stage, plan.lost_ino) == ([79], [5])
    assert [plan.a_ns, plan.a_run, plan.a_op, plan.a_path, plan.a_path2, plan.a_bytes, plan.a_layer] == audit
    assert (plan.block_hash, plan.block_data, plan.release) == ([b"h0"], [b"data0"], [b"old"])


def test_the_statement_has_a_placeholder_per_parameter_bytea_in_binary():
    sql = FlushPlan.sql()
    assert sql.count("%s") + sql.count("%b") == len(_plan().params()) == 49
    assert sql.count("%b::bytea[]") == 4  # extent hashes, block hashes, block data, released hashes


def test_the_plan_is_the_signature_of_the_function_the_migrations_made(tb, db_url):
    """Names, order and types of ``tarbox_flush``'s parameters in the database, against
    the plan's fields and casts: a migration that changes one must change the other."""
    with psycopg.connect(db_url) as conn:
        (names, types), *others = conn.execute(
            "SELECT proargnames[1:pronargs], ARRAY(SELECT format_type(t, NULL) FROM unnest(proargtypes) t)"
            " FROM pg_proc WHERE proname = 'tarbox_flush'"
        ).fetchall()
        assert others == []  # one function of that name: no stale overload
        casts = [f.metadata["sql"] for f in FlushPlan.__dataclass_fields__.values()]
        ours = conn.execute(
            "SELECT ARRAY[" + ", ".join("format_type(%s::regtype, NULL)" for _ in casts) + "]",
            [c or "int8" for c in casts],
        ).fetchone()[0]
    assert names == [f"p_{name}" for name in FlushPlan.__dataclass_fields__]
    arrays = [(t, o) for t, o, c in zip(types, ours, casts, strict=True) if c]
    assert all(t == o for t, o in arrays), arrays
