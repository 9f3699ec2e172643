"""The plan of one flush: the arguments of one call of the server-side function
``tarbox_flush`` (migration 0015), as a dataclass whose fields are the function's
parameters, named as they are there (without ``p_``) and in their order.

That order is written once, here: the statement's placeholders and casts are made
from the fields, and ``params`` lists the values in the same order. A test reads the
function's parameter names from the database and compares them with these fields,
so a migration that changes the signature cannot drift from the client unnoticed.
``FlushPlan.of`` builds a plan from what the Store decided to write; it is a pure
function of its arguments (no database, no Store), tested on its own.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from tarbox.fs.records import _DELETE, Inode


def _param(sql_type: str = "") -> Any:
    """A field sent as ``%s::sql_type`` (bytea as binary, ``%b``); none: a scalar."""
    return field(metadata={"sql": sql_type})


Column = list[Any] | None  # an array parameter; None (NULL) when empty: the function treats both alike


@dataclass(slots=True)
class FlushPlan:
    tenant: uuid.UUID = _param()
    gen: int | None = _param()  # the generation an operation run ahead of the lock expects (None: lock held)
    head: int = _param()
    # inodes: deleted at the head; upserted at the head
    ino_del: Column = _param("int8[]")
    ino: Column = _param("int8[]")
    kind: Column = _param("int2[]")
    mode: Column = _param("int4[]")
    nlink: Column = _param("int4[]")
    size: Column = _param("int8[]")
    atime: Column = _param("int8[]")
    mtime: Column = _param("int8[]")
    ctime: Column = _param("int8[]")
    target: Column = _param("text[]")
    content: Column = _param("int8[]")
    # their owners and device numbers (None: all 0, root's and none)
    uid: Column = _param("int4[]")
    gid: Column = _param("int4[]")
    rdev: Column = _param("int8[]")
    # directory entries: deleted at the head; set (ino None: a whiteout)
    de_del_parent: Column = _param("int8[]")
    de_del_name: Column = _param("text[]")
    de_parent: Column = _param("int8[]")
    de_name: Column = _param("text[]")
    de_ino: Column = _param("int8[]")
    # extents: files dropped; maps copied from their base layer; truncated; blocks set
    x_drop: Column = _param("int8[]")
    x_copy_ino: Column = _param("int8[]")
    x_copy_base: Column = _param("int8[]")
    x_trunc_ino: Column = _param("int8[]")
    x_trunc_from: Column = _param("int8[]")
    x_ino: Column = _param("int8[]")
    x_stage: Column = _param("int8[]")  # None: at the head, else at the staging layer -stage
    x_idx: Column = _param("int8[]")
    x_hash: Column = _param("bytea[]")
    # stages renewed, ended, and lost (ended without their blocks being required)
    renew_stage: Column = _param("int8[]")
    renew_ino: Column = _param("int8[]")
    unstage_stage: Column = _param("int8[]")
    unstage_ino: Column = _param("int8[]")
    lost_stage: Column = _param("int8[]")
    lost_ino: Column = _param("int8[]")
    # audit records
    a_ns: Column = _param("int8[]")
    a_run: Column = _param("uuid[]")
    a_op: Column = _param("text[]")
    a_path: Column = _param("text[]")
    a_path2: Column = _param("text[]")
    a_bytes: Column = _param("int8[]")
    a_layer: Column = _param("int8[]")
    # blocks stored and released
    block_hash: Column = _param("bytea[]")
    block_data: Column = _param("bytea[]")
    release: Column = _param("bytea[]")
    # also delete audit records past the tenant's retention; wait for the WAL flush
    prune: bool = _param()
    durable: bool = _param()

    @staticmethod
    def sql() -> str:
        """The statement, its placeholders in the fields' order."""
        return f"SELECT * FROM tarbox_flush({', '.join(_PLACEHOLDERS)})"

    def params(self) -> list[Any]:
        """The values in the fields' order; an empty array goes as NULL (it costs
        nothing to send)."""
        return [v if v.__class__ is not list or v else None for v in _VALUES(self)]

    @classmethod
    def of(
        cls,
        *,
        tenant: uuid.UUID,
        expect: int | None,
        head: int,
        upserted: Sequence[Inode],
        committed_as: Mapping[int, tuple[int, int | None]],
        deleted: Iterable[int],
        dirents: Mapping[tuple[int, str], object],
        dropped: Iterable[int],
        copied: Sequence[tuple[int, int]],
        truncated: Sequence[tuple[int, int]],
        extents: Sequence[tuple[int, int | None, int, bytes]],
        renewed: Sequence[tuple[int, int]],
        unstaged: Sequence[tuple[int, int]],
        lost: Sequence[tuple[int, int]],
        audit: Sequence[list[Any]],
        blocks: Mapping[bytes, bytes],
        release: Iterable[bytes],
        prune: bool,
        durable: bool,
    ) -> FlushPlan:
        """A plan from what the Store decided: ``upserted`` inode versions (those in
        ``committed_as``, held files, keep their committed (size, content layer)),
        ``deleted`` inodes, ``dirents`` set (a dentry, a whiteout None, or deleted),
        extent changes, ``extents`` (ino, stage or None, index, hash), stages
        (stage id, ino), the audit queue's seven columns, the blocks to store now and
        the hashes released."""
        owned = any(n.owned for n in upserted)
        de_del = [k for k, v in dirents.items() if v is _DELETE]
        de_set = [(k, v) for k, v in dirents.items() if v is not _DELETE]
        a_ns, a_run, a_op, a_path, a_path2, a_bytes, a_layer = audit
        return cls(
            tenant=tenant,
            gen=expect,
            head=head,
            ino_del=list(deleted),
            ino=[n.ino for n in upserted],
            kind=[int(n.kind) for n in upserted],
            mode=[n.mode for n in upserted],
            nlink=[n.nlink for n in upserted],
            size=[committed_as[n.ino][0] if n.ino in committed_as else n.size for n in upserted],
            atime=[n.atime_ns for n in upserted],
            mtime=[n.mtime_ns for n in upserted],
            ctime=[n.ctime_ns for n in upserted],
            target=[n.target for n in upserted],
            content=[committed_as[n.ino][1] if n.ino in committed_as else n.content_layer for n in upserted],
            uid=[n.uid for n in upserted] if owned else None,
            gid=[n.gid for n in upserted] if owned else None,
            rdev=[n.rdev for n in upserted] if owned else None,
            de_del_parent=[k[0] for k in de_del],
            de_del_name=[k[1] for k in de_del],
            de_parent=[k[0] for k, _ in de_set],
            de_name=[k[1] for k, _ in de_set],
            de_ino=[v for _, v in de_set],
            x_drop=list(dropped),
            x_copy_ino=[c[0] for c in copied],
            x_copy_base=[c[1] for c in copied],
            x_trunc_ino=[c[0] for c in truncated],
            x_trunc_from=[c[1] for c in truncated],
            x_ino=[r[0] for r in extents],
            x_stage=[r[1] for r in extents],
            x_idx=[r[2] for r in extents],
            x_hash=[r[3] for r in extents],
            renew_stage=[r[0] for r in renewed],
            renew_ino=[r[1] for r in renewed],
            unstage_stage=[r[0] for r in unstaged],
            unstage_ino=[r[1] for r in unstaged],
            lost_stage=[r[0] for r in lost],
            lost_ino=[r[1] for r in lost],
            a_ns=a_ns,
            a_run=a_run,
            a_op=a_op,
            a_path=a_path,
            a_path2=a_path2,
            a_bytes=a_bytes,
            a_layer=a_layer,
            block_hash=list(blocks),
            block_data=list(blocks.values()),
            release=list(release),
            prune=prune,
            durable=durable,
        )


_NAMES = tuple(f.name for f in fields(FlushPlan))
_VALUES = operator.attrgetter(*_NAMES)  # every field's value, in order, in one C call (once per flush)
_PLACEHOLDERS = tuple(
    "%s"
    if not f.metadata["sql"]
    else f"%b::{f.metadata['sql']}"
    if f.metadata["sql"] == "bytea[]"
    else f"%s::{f.metadata['sql']}"
    for f in fields(FlushPlan)
)
