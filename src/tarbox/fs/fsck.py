"""``fsck``: check every invariant of a tenant's stored filesystem.

Runs on one consistent snapshot (a REPEATABLE READ transaction of the owner
role, so RLS does not hide rows from it) and never writes. What is committed
must always pass: an uncommitted write-back window is not part of the check.

Checks (each a ``Problem.check`` name):

* ``layers``: exactly one base layer; every parent, the head and every branch
  head exist; every layer descends from the base (a tree, no cycles).
* ``dirent-target``: a directory entry names an inode that has a version in
  its own layer or an ancestor of it (whiteouts excepted).
* ``dirent-parent``: an entry's parent has a directory version there too.
* ``extent-block``: every extent's block exists.
* ``block-hash``: every block's data has its BLAKE3 hash and stated length,
  and is no longer than the block size.
* ``extent-size``: no extent lies past the end of the file version using it.
* ``usage``: the tenant's byte and inode counters equal what is stored.
* ``orphan``: an inode version no directory entry of any layer names.
* ``stage``: staging rows (extents at a negative layer, pinning the blocks of
  a file being written) belong to a stage that exists. Stages of a writer that
  died are not a problem: their blocks are stored and counted; gc ends them.
* ``row-security``: every table with a ``tenant_id`` has row-level security
  enabled and a policy, and the application role is no superuser, cannot
  bypass row security and owns none of them (isolation rests on these).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import blake3
import psycopg

from tarbox.storage import Database
from tarbox.storage.migrate import APP_ROLE
from tarbox.storage.rows import one_value

_EXAMPLES = 5  # offending rows quoted per check


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    detail: str


@dataclass(slots=True)
class FsckReport:
    tenant: str
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # rows (or blocks) each check looked at

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "ok": self.ok,
            "checked": self.checked,
            "problems": [{"check": p.check, "detail": p.detail} for p in self.problems],
        }


# Ancestor closure of the tenant's layers: (layer_id, ancestor) including itself.
_ANCESTRY = """
    WITH RECURSIVE anc(layer_id, ancestor) AS (
        SELECT layer_id, layer_id FROM layers WHERE tenant_id = %(t)s
        UNION
        SELECT a.layer_id, l.parent_id FROM anc a
        JOIN layers l ON l.tenant_id = %(t)s AND l.layer_id = a.ancestor
        WHERE l.parent_id IS NOT NULL)
"""

_ROW_CHECKS: list[tuple[str, str, str]] = [
    (
        "dirent-target",
        "SELECT count(*) FROM dirents WHERE tenant_id = %(t)s AND ino IS NOT NULL",
        _ANCESTRY
        + """SELECT format('%%s/%%s in layer %%s -> inode %%s, which has no version there', d.parent_ino, d.name,
                           d.layer_id, d.ino)
             FROM dirents d WHERE d.tenant_id = %(t)s AND d.ino IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM anc a JOIN inodes i ON i.tenant_id = %(t)s AND i.ino = d.ino
                   AND i.layer_id = a.ancestor
                 WHERE a.layer_id = d.layer_id)""",
    ),
    (
        "dirent-parent",
        "SELECT count(DISTINCT (parent_ino, layer_id)) FROM dirents WHERE tenant_id = %(t)s",
        _ANCESTRY
        + """SELECT DISTINCT format('entries of inode %%s in layer %%s: it is not a directory there',
                                    d.parent_ino, d.layer_id)
             FROM dirents d WHERE d.tenant_id = %(t)s AND NOT EXISTS (
                 SELECT 1 FROM anc a JOIN inodes i ON i.tenant_id = %(t)s AND i.ino = d.parent_ino
                   AND i.layer_id = a.ancestor AND i.kind = 2
                 WHERE a.layer_id = d.layer_id)""",
    ),
    (
        "extent-block",
        "SELECT count(*) FROM extents WHERE tenant_id = %(t)s",
        """SELECT format('inode %%s layer %%s block %%s: block %%s is missing', e.ino, e.layer_id, e.idx,
                         left(encode(e.hash, 'hex'), 16))
           FROM extents e WHERE e.tenant_id = %(t)s AND NOT EXISTS (
               SELECT 1 FROM blocks b WHERE b.tenant_id = %(t)s AND b.hash = e.hash)""",
    ),
    (
        "extent-size",
        "SELECT count(*) FROM inodes WHERE tenant_id = %(t)s AND kind = 1",
        """SELECT format('inode %%s layer %%s (size %%s) has block %%s past its end', i.ino, i.layer_id, i.size,
                         e.idx)
           FROM inodes i JOIN tenant_state s ON s.tenant_id = i.tenant_id
           JOIN extents e ON e.tenant_id = i.tenant_id AND e.ino = i.ino AND e.layer_id = i.content_layer
           WHERE i.tenant_id = %(t)s AND i.kind = 1 AND e.idx * s.block_size >= i.size""",
    ),
    (
        "stage",
        "SELECT count(*) FROM extents WHERE tenant_id = %(t)s AND layer_id < 0",
        """SELECT format('inode %%s block %%s: its stage %%s does not exist', e.ino, e.idx, -e.layer_id)
           FROM extents e WHERE e.tenant_id = %(t)s AND e.layer_id < 0 AND NOT EXISTS (
               SELECT 1 FROM stages s WHERE s.tenant_id = %(t)s AND s.stage_id = -e.layer_id AND s.ino = e.ino)""",
    ),
    (
        "orphan",
        "SELECT count(*) FROM inodes WHERE tenant_id = %(t)s",
        """SELECT format('inode %%s (version in layer %%s) is named by no directory entry', i.ino, i.layer_id)
           FROM inodes i WHERE i.tenant_id = %(t)s AND i.ino <> 1 AND NOT EXISTS (
               SELECT 1 FROM dirents d WHERE d.tenant_id = %(t)s AND d.ino = i.ino)""",
    ),
]


def check(db: Database, tenant_id: uuid.UUID, tenant_name: str | None = None, *, data: bool = True) -> FsckReport:
    """Check one tenant. ``data=False`` skips re-hashing block contents (the slow part)."""
    report = FsckReport(tenant_name or str(tenant_id))
    t = {"t": tenant_id}
    with db.admin() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

        def bad(name: str, sql: str, examples: int = _EXAMPLES) -> None:
            rows = conn.execute(sql, t).fetchall()
            for r in rows[:examples]:
                report.problems.append(Problem(name, r[0]))
            if len(rows) > examples:
                report.problems.append(Problem(name, f"... and {len(rows) - examples} more"))

        _check_security(conn, report)
        _check_layers(conn, t, report)
        for name, count_sql, sql in _ROW_CHECKS:
            report.checked[name] = one_value(conn.execute(count_sql, t))
            bad(name, sql)
        state = conn.execute(
            """SELECT s.used_bytes, s.used_inodes, s.block_size,
                      (SELECT coalesce(sum(len), 0) FROM blocks WHERE tenant_id = %(t)s),
                      (SELECT count(*) FROM inodes WHERE tenant_id = %(t)s)
               FROM tenant_state s WHERE s.tenant_id = %(t)s""",
            t,
        ).fetchone()
        if state is None:
            report.problems.append(Problem("usage", "the tenant has no state row"))
            return report
        used_bytes, used_inodes, block_size, stored_bytes, stored_inodes = state
        report.checked["usage"] = 2
        if used_bytes != stored_bytes:
            report.problems.append(Problem("usage", f"used_bytes is {used_bytes}, blocks hold {stored_bytes}"))
        if used_inodes != stored_inodes:
            report.problems.append(Problem("usage", f"used_inodes is {used_inodes}, {stored_inodes} versions stored"))
        if data:
            _check_blocks(conn, t, block_size, report)
    return report


def security_problems(db: Database) -> list[Problem]:
    """Only the ``row-security`` check (``tarbox doctor`` runs it without a tenant)."""
    report = FsckReport("")
    with db.admin() as conn:
        _check_security(conn, report)
    return report.problems


def _check_security(conn: psycopg.Connection, report: FsckReport) -> None:
    tables = conn.execute(
        """SELECT c.relname, c.relrowsecurity, pg_get_userbyid(c.relowner),
                  EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
           WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"""
    ).fetchall()
    report.checked["row-security"] = len(tables)
    for name, enabled, owner, has_policy in tables:
        if not enabled:
            report.problems.append(Problem("row-security", f"table {name}: row-level security is disabled"))
        if not has_policy:
            report.problems.append(Problem("row-security", f"table {name}: no policy"))
        if owner == APP_ROLE:
            report.problems.append(Problem("row-security", f"table {name} is owned by {APP_ROLE}"))
    role = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
    if role is None or role[0] or role[1]:
        report.problems.append(Problem("row-security", f"role {APP_ROLE} is missing, a superuser or bypasses RLS"))


def _check_layers(conn: psycopg.Connection, t: dict[str, Any], report: FsckReport) -> None:
    rows = conn.execute("SELECT layer_id, parent_id FROM layers WHERE tenant_id = %(t)s", t).fetchall()
    report.checked["layers"] = len(rows)
    parent: dict[int, int | None] = dict(rows)
    roots = [lid for lid, p in rows if p is None]
    if len(roots) != 1:
        report.problems.append(Problem("layers", f"{len(roots)} base layers (must be exactly one)"))
    for lid, p in rows:
        if p is not None and p not in parent:
            report.problems.append(Problem("layers", f"layer {lid} has parent {p}, which does not exist"))
    for lid in parent:  # walk up: must end at the base within len(parent) steps
        seen = 0
        cur: int | None = lid
        while cur is not None and cur in parent and seen <= len(parent):
            cur, seen = parent[cur], seen + 1
        if seen > len(parent):
            report.problems.append(Problem("layers", f"layer {lid} is on a cycle"))
    heads = conn.execute(
        """SELECT 'head', head_layer FROM tenant_state WHERE tenant_id = %(t)s
           UNION ALL SELECT 'branch ' || name, head_layer FROM branches WHERE tenant_id = %(t)s""",
        t,
    ).fetchall()
    for what, lid in heads:
        if lid not in parent:
            report.problems.append(Problem("layers", f"{what} points at layer {lid}, which does not exist"))


def _check_blocks(conn: psycopg.Connection, t: dict[str, Any], block_size: int, report: FsckReport) -> None:
    """Re-hash every block, streamed through a server-side cursor (bounded memory)."""
    n, found = 0, []
    with conn.cursor(name="tarbox_fsck_blocks", binary=True) as cur:
        cur.itersize = 64
        cur.execute("SELECT hash, len, data FROM blocks WHERE tenant_id = %(t)s", t)
        for h, length, data in cur:
            n += 1
            h, data = bytes(h), bytes(data)
            if blake3.blake3(data).digest() != h:
                found.append(f"block {h.hex()[:16]}: its data does not match its BLAKE3 hash")
            if len(data) != length:
                found.append(f"block {h.hex()[:16]}: its length is {len(data)}, recorded {length}")
            if len(data) > block_size:
                found.append(f"block {h.hex()[:16]}: longer than the block size {block_size}")
    report.checked["block-hash"] = n
    report.problems += [Problem("block-hash", d) for d in found[:_EXAMPLES]]
    if len(found) > _EXAMPLES:
        report.problems.append(Problem("block-hash", f"... and {len(found) - _EXAMPLES} more"))
