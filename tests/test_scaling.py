"""Scale-out (docs/scaling.md): the schema stays distributable by tenant, and
several Tarbox host processes share one PostgreSQL through TARBOX_DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from wasi_support import guest

# Tables without tenant_id stay on the coordinator (schema bookkeeping, the
# binding key); `tenants` is small and looked up by name, so it is a reference
# table (replicated), the only tenant table whose other unique key lacks tenant_id.
LOCAL = {"schema_version", "tarbox_binding_key"}
REFERENCE = {"tenants"}


def test_every_tenant_table_is_keyed_by_tenant_first(tb):
    with tb.db.admin() as conn:
        tables = conn.execute(
            """SELECT c.relname, EXISTS (SELECT 1 FROM pg_attribute a
                                       WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
               FROM pg_class c WHERE c.relnamespace = 'tarbox'::regnamespace AND c.relkind = 'r'"""
        ).fetchall()
        indexes = conn.execute(
            """SELECT c.relname, ic.relname, i.indisprimary, i.indisunique,
                      (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = i.indkey[0])
               FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
               WHERE c.relnamespace = 'tarbox'::regnamespace"""
        ).fetchall()
    tenant_tables = {name for name, has in tables if has}
    # on Citus the coordinator also records which workers hold the binding key
    local = LOCAL | ({"citus_keyed_nodes"} if tb.db.distributed else set())
    assert {name for name, has in tables if not has} == local
    assert {"tenant_state", "inodes", "dirents", "extents", "blocks", "layers", "audit"} <= tenant_tables
    primary = {table for table, _, is_pk, _, _ in indexes if is_pk}
    assert tenant_tables <= primary, "every tenant table needs a primary key"
    for table, index, is_pk, is_unique, first in indexes:
        if table in tenant_tables and not (table in REFERENCE and is_unique and not is_pk):
            assert first == "tenant_id", f"{table}.{index} does not start with tenant_id"


_HOST = """
import sys
import tarbox
from tarbox.wasi import Mount, WasiHost

tb = tarbox.connect()  # TARBOX_DATABASE_URL
wasm = open(sys.argv[1], "rb").read()
i = sys.argv[2]
for tenant in sys.argv[3:]:
    r = WasiHost(tb, tenant, mounts=[Mount("/workspace", f"/host{i}")]).run(wasm, ["g", "churn", "40", "0"])
    assert r.ok, (r.status, r.trap)
print("done", i)
"""


def test_several_host_processes_share_one_database(tb, db_url, tmp_path):
    wasm = tmp_path / "writeback.wasm"
    wasm.write_bytes(guest("writeback"))
    shared = tb.create_tenant(f"shared-{uuid.uuid4().hex[:8]}")
    own = [tb.create_tenant(f"own-{uuid.uuid4().hex[:8]}") for _ in range(3)]
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _HOST, str(wasm), str(i), own[i].name, shared.name],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(3)
        ]
        for i, p in enumerate(procs):
            out, errs = p.communicate(timeout=300)
            assert p.returncode == 0 and out.strip() == f"done {i}".encode(), errs.decode()[-2000:]
        fs = tb.filesystem(shared)
        for i in range(3):  # every host's files, seen from this process
            assert fs.listdir(f"/host{i}") == sorted(f"f{k}" for k in range(40))
            assert fs.read_file(f"/host{i}/f39") == b"f39"
            assert tb.filesystem(own[i]).listdir(f"/host{i}") == sorted(f"f{k}" for k in range(40))
        for t in (shared, *own):
            assert tb.fsck(t)[0].ok
    finally:
        for t in (shared, *own):
            tb.delete_tenant(t)
