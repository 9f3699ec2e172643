"""Entry point of the Python API: a connection to a Tarbox database and its tenants."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg

from tarbox.errors import TenantExistsError, TenantNotFoundError
from tarbox.fs import fsck
from tarbox.fs.filesystem import Filesystem
from tarbox.fs.fsck import FsckReport
from tarbox.fs.records import DEFAULT_BLOCK_SIZE, ROOT_INO
from tarbox.fs.store import Store
from tarbox.fs.types import FileType
from tarbox.names import validate_tenant_name
from tarbox.storage import Database
from tarbox.storage.rows import one_row, one_value

_TENANT_TABLES = (
    "runs",
    "api_tokens",
    "audit",
    "stages",
    "extents",
    "blocks",
    "dirents",
    "inodes",
    "branches",
    "layers",
    "tenant_state",
    "tenants",
)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: uuid.UUID
    name: str
    created_at: datetime


class Tarbox:
    """A connection to one Tarbox database. Thread-safe; share one per process."""

    def __init__(
        self, url: str | None = None, *, attr_timeout: float = 1.0, read_delegations: bool | None = None
    ) -> None:
        self.db = Database(url, read_delegations=read_delegations)
        self.attr_timeout = attr_timeout
        self._stores: dict[uuid.UUID, Store] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- tenants

    def create_tenant(
        self,
        name: str,
        *,
        quota_bytes: int | None = None,
        quota_inodes: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> Tenant:
        validate_tenant_name(name)
        check_quotas(quota_bytes, quota_inodes)
        if block_size < 4096 or block_size > (8 << 20) or block_size & (block_size - 1):
            raise ValueError("block_size must be a power of two between 4 KiB and 8 MiB")
        tid = uuid.uuid4()
        now = time.time_ns()
        with self.db.admin() as conn, conn.transaction():
            try:
                row = one_row(
                    conn.execute(
                        "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) RETURNING created_at", (tid, name)
                    )
                )
            except psycopg.errors.UniqueViolation:
                raise TenantExistsError(f"tenant {name!r} already exists") from None
            layer = one_value(conn.execute("SELECT nextval('layer_id_seq')"))
            conn.execute(
                "INSERT INTO layers (tenant_id, layer_id, parent_id, message) VALUES (%s, %s, NULL, 'base')",
                (tid, layer),
            )
            conn.execute(
                """INSERT INTO tenant_state
                       (tenant_id, block_size, quota_bytes, quota_inodes, used_inodes, head_layer, branch)
                   VALUES (%s, %s, %s, %s, 1, %s, 'main')""",
                (tid, block_size, quota_bytes, quota_inodes, layer),
            )
            conn.execute("INSERT INTO branches (tenant_id, name, head_layer) VALUES (%s, 'main', %s)", (tid, layer))
            conn.execute(
                """INSERT INTO inodes (tenant_id, ino, layer_id, kind, mode, nlink, size,
                                       atime_ns, mtime_ns, ctime_ns, target, content_layer)
                   VALUES (%s, %s, %s, %s, %s, 2, 0, %s, %s, %s, NULL, NULL)""",
                (tid, ROOT_INO, layer, int(FileType.DIRECTORY), 0o755, now, now, now),
            )
        return Tenant(tid, name, row[0])

    def get_tenant(self, tenant: Tenant | str | uuid.UUID) -> Tenant:
        if isinstance(tenant, Tenant):
            return tenant
        with self.db.admin() as conn:
            if isinstance(tenant, uuid.UUID):
                row = conn.execute(
                    "SELECT tenant_id, name, created_at FROM tenants WHERE tenant_id = %s", (tenant,)
                ).fetchone()
            else:
                try:
                    as_id = uuid.UUID(str(tenant))
                except ValueError:
                    as_id = None
                row = conn.execute(
                    "SELECT tenant_id, name, created_at FROM tenants WHERE name = %s OR tenant_id = %s",
                    (str(tenant), as_id),
                ).fetchone()
        if row is None:
            raise TenantNotFoundError(f"no tenant named {tenant!s}")
        return Tenant(*row)

    def describe_tenant(self, tenant: Tenant | str | uuid.UUID) -> dict:
        """A tenant with its usage and quotas, JSON-ready (``tarbox tenant info``, the server)."""
        t = self.get_tenant(tenant)
        u = self.filesystem(t).usage()
        return {
            "id": str(t.id),
            "name": t.name,
            "created_at": t.created_at.isoformat(),
            "used_bytes": u.used_bytes,
            "used_inodes": u.used_inodes,
            "quota_bytes": u.quota_bytes,
            "quota_inodes": u.quota_inodes,
            **self._placement(t.id),
        }

    def _placement(self, tenant_id: uuid.UUID) -> dict:
        """Where a tenant's rows live: on Citus, the node and shard of its shard group."""
        if not self.db.distributed:
            return {}
        from tarbox.storage import citus

        with self.db.admin() as conn:
            host, port, shard = citus.tenant_node(conn, tenant_id)
        return {"node": f"{host}:{port}", "shard": shard}

    def list_tenants(self) -> list[Tenant]:
        with self.db.admin() as conn:
            rows = conn.execute("SELECT tenant_id, name, created_at FROM tenants ORDER BY name").fetchall()
        return [Tenant(*r) for r in rows]

    def delete_tenant(self, tenant: Tenant | str | uuid.UUID) -> None:
        """Delete a tenant and every row it owns."""
        t = self.get_tenant(tenant)
        with self.db.admin() as conn, conn.transaction():
            for table in _TENANT_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (t.id,))
        with self._lock:
            self._stores.pop(t.id, None)

    def set_quota(
        self,
        tenant: Tenant | str | uuid.UUID,
        *,
        quota_bytes: int | None = None,
        quota_inodes: int | None = None,
    ) -> None:
        """Set (or with ``None`` remove) a tenant's quotas."""
        check_quotas(quota_bytes, quota_inodes)
        t = self.get_tenant(tenant)
        with self.db.admin() as conn:
            conn.execute(
                "UPDATE tenant_state SET quota_bytes = %s, quota_inodes = %s WHERE tenant_id = %s",
                (quota_bytes, quota_inodes, t.id),
            )

    def set_audit_retention(self, tenant: Tenant | str | uuid.UUID, days: float) -> None:
        """Keep a tenant's audit records this many days (default 90); older ones are
        deleted by the writers' commits, at most hourly per process."""
        if days <= 0:
            raise ValueError("audit retention must be positive")
        t = self.get_tenant(tenant)
        with self.db.admin() as conn:
            conn.execute(
                "UPDATE tenant_state SET audit_retention = make_interval(secs => %s) WHERE tenant_id = %s",
                (days * 86400.0, t.id),
            )

    def fsck(self, tenant: Tenant | str | uuid.UUID | None = None, *, data: bool = True) -> list[FsckReport]:
        """Check the stored invariants of one tenant (default: every tenant). See ``tarbox.fs.fsck``."""
        tenants = [self.get_tenant(tenant)] if tenant is not None else self.list_tenants()
        return [fsck.check(self.db, t.id, t.name, data=data) for t in tenants]

    # ------------------------------------------------------------- filesystems

    def _store(self, tenant_id: uuid.UUID) -> Store:
        with self._lock:
            store = self._stores.get(tenant_id)
            if store is None:
                store = Store(self.db, tenant_id, attr_timeout=self.attr_timeout)
                self._stores[tenant_id] = store
            return store

    def filesystem(
        self,
        tenant: Tenant | str | uuid.UUID,
        *,
        read_only: bool = False,
        layer: int | None = None,
        hide_control: bool = False,
        isolated: bool = False,
    ) -> Filesystem:
        """The filesystem of a tenant (given as Tenant, name or UUID).

        With ``layer``, a read-only view pinned at that layer, while writers go on at the head.
        Views of a tenant share one store in a process (they see each other's writes at
        once); ``isolated`` gives a store of its own, which sees the others' commits as
        another process would (close-to-open) and whose pending writes and batches
        are its own: what :meth:`Filesystem.atomic` needs.
        """
        t = self.get_tenant(tenant)
        if isolated and layer is None:
            store = Store(self.db, t.id, attr_timeout=self.attr_timeout, isolated=True)
        else:
            store = self._store(t.id) if layer is None else self._pinned(t.id, layer)
        store.refresh()
        return Filesystem(
            store,
            read_only=read_only,
            tenant_name=t.name,
            view_factory=lambda lid: self._pinned(t.id, lid),
            hide_control=hide_control,
        )

    def _pinned(self, tenant_id: uuid.UUID, layer: int) -> Store:
        store = Store(self.db, tenant_id, attr_timeout=self.attr_timeout, pinned_layer=int(layer))
        store.refresh()
        return store

    def close(self) -> None:
        for store in list(self._stores.values()):
            try:
                store.commit()
            except Exception:
                pass
        self.db.close()

    def __enter__(self) -> Tarbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The largest quota: 2**53 - 1 (8 PiB of bytes), the largest integer every JSON client
# reads exactly (I-JSON, RFC 7493: numbers are doubles); well inside PostgreSQL's bigint.
QUOTA_MAX = (1 << 53) - 1


def check_quotas(quota_bytes: int | None, quota_inodes: int | None) -> None:
    """Refuse quotas that are not whole numbers from 0 to ``QUOTA_MAX`` (None: no quota)."""
    for name, value in (("quota_bytes", quota_bytes), ("quota_inodes", quota_inodes)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number of {name.split('_')[1]}, not {value!r}")
        if not 0 <= value <= QUOTA_MAX:
            raise ValueError(f"{name} must be between 0 and {QUOTA_MAX}, not {value}")


def connect(url: str | None = None, **kwargs) -> Tarbox:
    """Connect to ``url``, else ``$TARBOX_DATABASE_URL``, else the embedded server."""
    return Tarbox(url, **kwargs)
