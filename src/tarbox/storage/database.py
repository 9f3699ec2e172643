"""Connections to PostgreSQL: an owner pool for administration and an
application pool whose sessions run as ``tarbox_app``, bound by row-level
security to one tenant at a time.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from tarbox.errors import ConnectionLostError, DatabaseError, DatabaseFullError, ReadOnlyDatabaseError
from tarbox.storage import citus
from tarbox.storage import migrate as _migrate
from tarbox.storage.recall import RecallFeed
from tarbox.storage.rows import one_value
from tarbox.storage.server import embedded_url

_OPTIONS = f"-c search_path={_migrate.SCHEMA}"


def _describe(info: dict) -> str:
    """Connection parameters without the password, for error messages."""
    return " ".join(f"{k}={v}" for k, v in info.items() if k != "password")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _db_wait() -> float:
    """Seconds an operation waits for a pooled connection ($TARBOX_DB_WAIT, default 30)
    before failing with a DatabaseError: how long a request rides out a database restart."""
    text = os.environ.get("TARBOX_DB_WAIT", "30")
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 < wait < float("inf"):
        raise DatabaseError(f"TARBOX_DB_WAIT must be a number of seconds above 0, not {text!r}")
    return wait


def db_error(exc: psycopg.Error) -> DatabaseError:
    """The one mapping of PostgreSQL errors about the database as a whole to Tarbox's
    (the filesystem adds its own SQLSTATEs, such as quota refusals, on top)."""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return ReadOnlyDatabaseError(f"the database is read-only: {_first_line(exc)}")
    if isinstance(exc, psycopg.errors.DiskFull):
        return DatabaseFullError(f"the database server is out of disk space: {_first_line(exc)}")
    if isinstance(exc, psycopg.OperationalError):
        return ConnectionLostError(f"database connection failed: {exc}".strip())
    return DatabaseError(_first_line(exc))


class Database:
    """Owns the pools of one PostgreSQL database holding Tarbox's schema."""

    def __init__(self, url: str | None = None, *, pool_size: int = 16, read_delegations: bool | None = None) -> None:
        url = url or os.environ.get("TARBOX_DATABASE_URL") or None
        self.embedded = url is None
        wait = _db_wait()  # a bad setting is refused before anything connects
        self.url = url if url is not None else embedded_url()
        try:
            self._where = _describe(psycopg.conninfo.conninfo_to_dict(self.url))
        except psycopg.ProgrammingError as exc:
            raise DatabaseError(f"invalid database URL (TARBOX_DATABASE_URL or --url): {exc}") from None
        try:
            try:
                conn = psycopg.connect(self.url, autocommit=True, options=_OPTIONS, connect_timeout=10)
            except psycopg.Error:
                if not self.embedded:
                    raise
                # the URL read from a running server's pid file did not connect: take the
                # path that starts the server and creates the database
                self.url = embedded_url(fast=False)
                self._where = _describe(psycopg.conninfo.conninfo_to_dict(self.url))
                conn = psycopg.connect(self.url, autocommit=True, options=_OPTIONS, connect_timeout=10)
            with conn:
                self.citus = citus.installed(conn)
                if self.citus:
                    citus.ensure_coordinator(conn, self._where)
                self.schema_version = _migrate.migrate(conn, distribute=self.citus)
                self.distributed = self.citus and citus.distributed(conn)
                if self.distributed:  # a worker added since would show no rows without the key
                    citus.sync_nodes(conn)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL ({self._where}): {exc}".strip()) from exc
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise ReadOnlyDatabaseError(
                f"the database is read-only and Tarbox's schema must be created or upgraded first: {exc}"
            ) from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"preparing the database failed ({self._where}): {exc}".strip()) from exc
        self._closed = False
        self._lock = threading.Lock()
        self._admin = ConnectionPool(
            self.url,
            min_size=0,
            max_size=4,
            kwargs={"autocommit": True, "options": _OPTIONS},
            # administration is rare: a liveness check per checkout is cheap insurance
            # against a connection the server dropped (restart, terminated backend)
            check=ConnectionPool.check_connection,
            name="tarbox-admin",
            timeout=wait,
            open=True,
        )
        # the owner role for hot, read-only lookups (API tokens): no liveness check per
        # checkout, which would double their cost; a dead connection fails one lookup
        # and is replaced
        self._lookup = ConnectionPool(
            self.url,
            min_size=0,
            max_size=4,
            kwargs={"autocommit": True, "options": _OPTIONS, "prepare_threshold": None},
            name="tarbox-lookup",
            timeout=wait,
            open=True,
        )
        self._tokens: dict[uuid.UUID, str] = {}
        self._feed: RecallFeed | None = None
        # read delegations held at once (each keeps one pooled connection in a transaction);
        # off by choice or by TARBOX_READ_DELEGATIONS=0 (e.g. behind a pooler that drops LISTEN)
        if read_delegations is None:
            read_delegations = os.environ.get("TARBOX_READ_DELEGATIONS", "1").strip().lower() not in ("0", "no", "off")
        self.max_delegations = max(1, pool_size // 4) if read_delegations else 0
        self.delegations = 0
        # the tenant each pooled connection is bound to now (a connection gone is forgotten)
        self._bound: weakref.WeakKeyDictionary[psycopg.Connection, uuid.UUID] = weakref.WeakKeyDictionary()
        self._app = ConnectionPool(
            self.url,
            min_size=1,
            max_size=pool_size,
            # autocommit: a read is one round trip; writers send BEGIN/COMMIT themselves.
            # No server-side prepared statements: a statement that fails inside a
            # pipeline (a quota refusal) skips the Parse of those after it, and psycopg
            # 3.3 can then believe one prepared that the server never saw ("prepared
            # statement _pg3_N does not exist", found by the quota suite).
            kwargs={"autocommit": True, "options": _OPTIONS, "prepare_threshold": None},
            connection_class=citus.BindingCarrier if self.distributed else psycopg.Connection,
            configure=self._configure_citus_app if self.distributed else self._configure_app,
            name="tarbox-app",
            timeout=wait,
            open=True,
        )

    @staticmethod
    def _configure_app(conn: psycopg.Connection) -> None:
        # Asynchronous commit: a commit cannot be torn, and fsync() asks for a
        # synchronous one, which also makes every earlier commit durable.
        # Generic plans: the functions' statements (tarbox_flush) take arrays, and a
        # custom plan per call would replan every flush. No JIT: with sequential scans
        # off every plan costs over jit_above_cost, and where PostgreSQL is built with
        # LLVM (Debian's 15) each statement was compiled, 100-300 ms apiece (measured).
        # One round trip for all of it.
        conn.execute(
            f"SET ROLE {_migrate.APP_ROLE}; SET synchronous_commit = off; SET enable_seqscan = off;"
            " SET plan_cache_mode = force_generic_plan; SET jit = off"
        )

    @staticmethod
    def _configure_citus_app(conn: psycopg.Connection) -> None:
        # Citus carries SET LOCAL to the workers (the binding, storage/citus.py). Its
        # router planner cannot route a generic plan of a join inside plpgsql, so the
        # plan cache stays on its default; and with sequential scans off, planning a
        # distributed statement took 100-350 ms on the coordinator (measured), so they
        # stay on (the shards are planned on the workers, with their own settings).
        conn.execute(
            f"SET ROLE {_migrate.APP_ROLE}; SET synchronous_commit = off; SET jit = off;"
            " SET citus.propagate_set_commands = 'local'"
        )
        conn.carrying = True  # type: ignore[attr-defined]

    @contextmanager
    def admin(self) -> Iterator[psycopg.Connection]:
        """A connection of the owner role (bypasses RLS): tenants, migrations, fsck."""
        with self._translate(), self._admin.connection() as conn:
            yield conn

    def lookup_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The one row (or None) of a read-only owner-role lookup on a hot path (a token
        check). Its pooled connections are not pinged before use, so one may be dead
        (the server restarted since it was opened): then the lookup is asked again on
        a connection of its own, which is safe as it changes nothing. Not on another
        pooled one: with the database really gone, the pool would go on trying to
        reconnect in the background and keep requests waiting after it is back."""
        try:
            with self._translate(), self._lookup.connection() as conn:
                return conn.execute(sql, params).fetchone()
        except ConnectionLostError:
            pass  # the pool drops that connection; later lookups take the others or new ones
        url = self.url  # connected inside _translate: a failed connect is a DatabaseError (503) too
        with self._translate(), psycopg.connect(url, autocommit=True, options=_OPTIONS, connect_timeout=10) as own:
            return own.execute(sql, params).fetchone()

    @contextmanager
    def tenant(self, tenant_id: uuid.UUID, *, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """An autocommit ``tarbox_app`` connection bound to one tenant (``timeout``: seconds to
        wait for one, default the pool's)."""
        with self._translate(), self._app.connection(timeout=timeout) as conn:
            if self._bound.get(conn) != tenant_id:
                conn.execute(
                    "SELECT set_config('tarbox.tenant_id', %s, false), set_config('tarbox.tenant_token', %s, false)",
                    (str(tenant_id), self.tenant_token(tenant_id)),
                )
                self._bound[conn] = tenant_id
            yield conn

    def tenant_token(self, tenant_id: uuid.UUID) -> str:
        """The signature that binds a connection to ``tenant_id`` (minted by the owner role;
        row-level security shows nothing to a binding without it)."""
        token = self._tokens.get(tenant_id)
        if token is None:
            with self.admin() as conn:
                token = one_value(conn.execute("SELECT tarbox_tenant_token(%s)", (tenant_id,)))
            self._tokens[tenant_id] = token
        return token

    def recall_feed(self) -> RecallFeed:
        """The connection listening for recalls of this process's read delegations."""
        with self._lock:
            if self._feed is None:
                self._feed = RecallFeed(self.url, _OPTIONS)
            return self._feed

    def take_delegation_slot(self) -> bool:
        with self._lock:
            if self._closed or self.delegations >= self.max_delegations:
                return False
            self.delegations += 1
            return True

    def give_delegation_slot(self) -> None:
        with self._lock:
            self.delegations -= 1

    def discard_broken(self) -> None:
        """Test the idle pooled connections and replace the broken ones: after a server
        restart every one of them is dead, and retrying on the next would fail again."""
        self._app.check()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except PoolTimeout as exc:
            raise DatabaseError(f"no database connection available ({self._where}): {exc}") from exc
        except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.DiskFull) as exc:
            raise db_error(exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            feed = self._feed
        if feed is not None:
            feed.close()
        self._app.close()
        self._lookup.close()
        self._admin.close()
