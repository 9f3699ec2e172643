"""Citus mode: Tarbox's schema laid out on a Citus cluster, and what the
application's connections must do there.

Layout (docs/scaling.md): every tenant table is distributed by ``tenant_id`` and
colocated with ``tenant_state``, so a tenant's rows live in one shard group and
each per-tenant statement is a single-shard (router) query; ``tenants`` (small,
its names unique across tenants) is a reference table; ``tarbox_binding_key`` and
``schema_version`` stay plain tables (the key is copied to every node, see below).

Row-level security on Citus is enforced by the shards' own policies, on the
workers, in the sessions Citus opens there. Two consequences shape this module:

* a policy may not contain a subquery, so ``(SELECT tarbox_tenant())`` becomes
  ``tarbox_tenant()`` (for an index scan, PostgreSQL still evaluates the stable call
  once per scan);
* the tenant binding (``tarbox.tenant_id``, ``tarbox.tenant_token``) must reach the
  worker session, and Citus carries only ``SET LOCAL`` there, inside a transaction
  block, with ``citus.propagate_set_commands = 'local'``. So in Citus mode every
  statement of the application role runs in a transaction that opens by carrying the
  session's binding over (:class:`BindingCarrier`); a statement outside one sees no
  rows on any worker.

``tarbox_tenant()`` checks the binding against ``tarbox_binding_key``; on a worker
that must be a plain local table (a reference table would make every policy check
a nested distributed query, which Citus refuses), so :func:`distribute` copies the
key to each node and :func:`sync_nodes` does again for nodes added later.

Hosts connect to the coordinator: the tenant's advisory lock, the read
delegations' shared locks and the recall channel live there
(:func:`ensure_coordinator` refuses a worker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from tarbox.errors import DatabaseError
from tarbox.storage.rows import one_row, one_value

REFERENCE_TABLES = ("tenants",)
# tenant_state first: the others are colocated with it
DISTRIBUTED_TABLES = (
    "tenant_state",
    "layers",
    "inodes",
    "dirents",
    "extents",
    "blocks",
    "branches",
    "stages",
    "audit",
    "api_tokens",
    "runs",
)
POLICY_TABLES = ("tenants", *DISTRIBUTED_TABLES)


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    role: str  # coordinator | worker
    shards: int


def installed(conn: psycopg.Connection) -> bool:
    """Whether this database has the citus extension."""
    return one_value(conn.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"))


def distributed(conn: psycopg.Connection) -> bool:
    """Whether Tarbox's tables are laid out distributed here."""
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'tarbox.tenant_state'::regclass)"
    )
    return bool(one_value(row))


def ensure_coordinator(conn: psycopg.Connection, where: str) -> None:
    """Refuse a connection to a worker node (see the module docstring)."""
    if not one_value(conn.execute("SELECT citus_is_coordinator()")):
        raise DatabaseError(
            f"{where} is a Citus worker node; Tarbox hosts must connect to the coordinator"
            " (the tenant locks and the recall channel live there; docs/scaling.md)"
        )


def nodes(conn: psycopg.Connection) -> list[Node]:
    rows = conn.execute(
        """SELECT n.nodename, n.nodeport, CASE WHEN n.groupid = 0 THEN 'coordinator' ELSE 'worker' END,
                  (SELECT count(*) FROM pg_dist_placement p WHERE p.groupid = n.groupid)
           FROM pg_dist_node n WHERE n.isactive ORDER BY n.groupid, n.nodeport"""
    ).fetchall()
    return [Node(*r) for r in rows]


def tenant_node(conn: psycopg.Connection, tenant_id) -> tuple[str, int, int]:
    """(host, port, shard id) of the shard group holding a tenant's rows."""
    row = conn.execute(
        """SELECT n.nodename, n.nodeport, s.shardid
           FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
           WHERE s.shardid = get_shard_id_for_distribution_column('tarbox.tenant_state', %s)""",
        (tenant_id,),
    )
    host, port, shard = one_row(row)
    return (host, port, shard)


def distribute(conn: psycopg.Connection) -> tuple[list[str], int]:
    """Convert Tarbox's schema in this (Citus) database to the distributed layout, in
    place; existing rows move to the workers; every worker is given the binding key
    again. Idempotent. Returns what it laid out and how many workers were keyed."""
    if not installed(conn):
        raise DatabaseError("this database has no citus extension (CREATE EXTENSION citus; add the workers first)")
    ensure_coordinator(conn, "this database")
    with conn.transaction():
        done = lay_out(conn)
    keyed = sync_nodes(conn, force=True)
    # rows copied to the shards stay on the coordinator's disk, invisible, until truncated
    for table in (*REFERENCE_TABLES, *DISTRIBUTED_TABLES):
        conn.execute("SELECT truncate_local_data_after_distributing_table(%s)", (f"tarbox.{table}",))
    return done, keyed


def lay_out(conn: psycopg.Connection) -> list[str]:
    """The distribution itself, inside the caller's transaction (migrate runs it in the
    one that creates the schema, so no process ever sees it half laid out). The workers
    get the binding key after it commits (:func:`sync_nodes`; until then they show no
    rows: row-level security fails closed)."""
    done: list[str] = []
    conn.execute("SET LOCAL search_path = tarbox")
    # the quota trigger of tenant_state only compares NEW and OLD: safe on shards
    conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
    conn.execute("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
    # which workers hold the binding key (sync_nodes), on the coordinator only
    conn.execute(
        "CREATE TABLE IF NOT EXISTS citus_keyed_nodes"
        " (nodename text, nodeport integer, PRIMARY KEY (nodename, nodeport))"
    )
    have = {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tarbox'"
        ).fetchall()
    }
    # planning a distributed statement with sequential scans off took 100-350 ms on the
    # coordinator (measured); the shards' own plans are made on the workers
    conn.execute("ALTER FUNCTION tarbox_apply_blocks(bytea[], bytea[], bytea[], bigint) RESET enable_seqscan")
    for table in POLICY_TABLES:
        if table in have:
            continue
        check = "" if table == "tenants" else " WITH CHECK (tenant_id = tarbox_tenant())"
        conn.execute(f"ALTER POLICY tenant_isolation ON {table} USING (tenant_id = tarbox_tenant()){check}")
    for table in REFERENCE_TABLES:
        if table not in have:
            conn.execute("SELECT create_reference_table(%s)", (f"tarbox.{table}",))
            done.append(f"{table}: reference table")
    for table in DISTRIBUTED_TABLES:
        if table not in have:
            colocate = "none" if table == "tenant_state" else "tarbox.tenant_state"
            conn.execute(
                "SELECT create_distributed_table(%s, 'tenant_id', colocate_with => %s)",
                (f"tarbox.{table}", colocate),
            )
            done.append(f"{table}: distributed by tenant_id")
    return done


def unkeyed_nodes(conn: psycopg.Connection) -> list[tuple[str, int]]:
    """Active workers not known to hold the binding key."""
    return conn.execute(
        "SELECT nodename, nodeport FROM pg_dist_node WHERE isactive AND noderole = 'primary' AND groupid <> 0"
        " EXCEPT SELECT nodename, nodeport FROM tarbox.citus_keyed_nodes"
    ).fetchall()


def sync_nodes(conn: psycopg.Connection, *, force: bool = False) -> int:
    """Give every worker that lacks it the binding key (a node added by
    ``citus_add_node`` has none, and its shards would show no rows). Cheap when nothing
    changed: the coordinator records which nodes have the key. Returns how many nodes
    were given it. Outside any transaction (it must not wait on the caller's)."""
    if not force and not unkeyed_nodes(conn):
        return 0
    key = one_value(conn.execute("SELECT encode(key, 'hex') FROM tarbox.tarbox_binding_key"))
    if not re.fullmatch(r"[0-9a-f]+", key):
        raise DatabaseError("unexpected binding key format")
    rows = conn.execute(
        "SELECT nodename, nodeport, success, result FROM run_command_on_workers(%s)",
        (
            # the schema is there: Citus created it with the first distributed table
            "CREATE TABLE IF NOT EXISTS tarbox.tarbox_binding_key (key bytea NOT NULL);"
            " REVOKE ALL ON tarbox.tarbox_binding_key FROM PUBLIC;"
            " DELETE FROM tarbox.tarbox_binding_key;"
            f" INSERT INTO tarbox.tarbox_binding_key VALUES (decode('{key}', 'hex'))",
        ),
    ).fetchall()
    failed = [f"{h}:{p}: {res}" for h, p, ok, res in rows if not ok]
    if failed:
        raise DatabaseError("could not copy the binding key to " + "; ".join(failed))
    conn.execute("DELETE FROM tarbox.citus_keyed_nodes")
    for host, port, _, _ in rows:
        conn.execute("INSERT INTO tarbox.citus_keyed_nodes VALUES (%s, %s)", (host, port))
    return len(rows)


class BindingCarrier(psycopg.Connection):
    """An application connection for Citus mode: every transaction opens by carrying
    the session's tenant binding to the workers (``tarbox_carry_binding()``: ``SET
    LOCAL`` of the session's own values, migration 0013), and a statement sent outside
    a transaction runs in one of its own (pipelined: still one round trip)."""

    _CARRY = "SELECT tarbox_carry_binding()"
    carrying = False  # set once the session is configured (its own SETs are not wrapped)

    def execute(self, query, params=None, **kwargs):
        if not self.carrying or query in ("COMMIT", "ROLLBACK"):
            return super().execute(query, params, **kwargs)
        piped = self.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF
        if query == "BEGIN":  # also after a COMMIT earlier in the same pipeline
            if not piped:
                return super().execute(f"BEGIN; {self._CARRY}")
            cur = super().execute("BEGIN")
            super().execute(self._CARRY)
            return cur
        if piped or self.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return super().execute(query, params, **kwargs)
        if not self.autocommit:  # psycopg opens the transaction itself
            super().execute(self._CARRY)
            return super().execute(query, params, **kwargs)
        with self.pipeline():
            super().execute("BEGIN")
            super().execute(self._CARRY)
            cur = super().execute(query, params, **kwargs)
            super().execute("COMMIT")
        return cur
