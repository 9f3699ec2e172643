"""What the Store's mixins share, declared once for the type checker (issue 31, until
each concern is a part with its own state, as ``audit_queue`` and ``delegation`` are).

Every mixin of ``Store`` derives from ``SharedState``: the type checker then knows
each shared field's type and each method one mixin calls on another, and checks
each mixin's definition against the declaration here. Nothing of it exists at run
time but an empty class: ``Store.__init__`` sets the fields (their meaning is
commented there), and the methods are the mixins' own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from tarbox.fs.audit import AuditQueue
    from tarbox.fs.delegation import ReadDelegation
    from tarbox.fs.dirty import DirtySet
    from tarbox.fs.records import BlockCache, Dentry, Inode, Stage
    from tarbox.storage import Database


class SharedState:
    # the tenant and its view
    db: Database
    tenant_id: uuid.UUID
    isolated: bool
    pinned: int | None
    head_frozen: bool
    attr_timeout: float
    lock: threading.RLock
    gen: int | None
    validated_at: float
    head: int
    chain: frozenset[int]
    chain_ids: list[int]
    block_size: int
    # clean caches
    dentry_cache: dict[tuple[int, str], Dentry]
    children: dict[int, dict[str, int]]
    path_cache: dict[tuple[str, bool], int]
    inode_cache: dict[int, Inode]
    extent_cache: dict[int, dict[int, bytes]]
    block_cache: BlockCache
    stream_cache: BlockCache
    # dirty state
    dirty: DirtySet
    write_errors: dict[int, Exception]
    open_counts: dict[int, int]
    # staged publication
    writers: dict[int, int]
    stages: dict[int, Stage]
    d_unstage: dict[int, int]
    staged_only: set[int]
    publish_now: set[int]
    # parts with their own state
    audit_queue: AuditQueue
    delegation: ReadDelegation
    # transactions, batches, windows
    txn_conn: psycopg.Connection | None
    _txn_cm: AbstractContextManager[Any] | None
    _batch_depth: int
    _atomic: bool
    _atomic_failed: BaseException | None
    _mutated: bool
    running_ahead: bool
    _ino_next: int
    _ino_end: int
    window_delays: list[float]
    _window: bool
    _window_id: int
    _quota_room: tuple[int | None, int | None]
    _byte_quota: object
    lost_windows: int
    stats: dict[str, int]

    if TYPE_CHECKING:
        # cache.py
        def query(
            self, sql: str, params: tuple[Any, ...] | dict[str, Any] = (), *, binary: bool = False, write: bool = False
        ) -> list[tuple[Any, ...]]: ...
        def refresh(self, force: bool = True) -> None: ...
        def read_state(self, conn: psycopg.Connection | None = None, *, settle: bool = False) -> tuple[Any, ...]: ...
        def adopt_state(self, row: tuple[Any, ...] | None = None) -> None: ...
        def keep_delegation(
            self, conn: psycopg.Connection, cm: Any, row: tuple[Any, ...] | None
        ) -> tuple[Any, ...]: ...
        def release_delegation(self) -> None: ...
        def drop_clean_caches(self) -> None: ...
        def dentry(self, parent: int, name: str) -> Dentry: ...
        def inode(self, ino: int) -> Inode | None: ...
        def xmap(self, node: Inode) -> dict[int, bytes]: ...
        def read_block(self, node: Inode, idx: int, xm: dict[int, bytes]) -> bytes | bytearray: ...

        # changes.py
        def alloc_ino(self) -> int: ...
        def touch(self, node: Inode) -> Inode: ...
        def drop_inode(self, node: Inode) -> None: ...
        def seal_blocks(self, only: int | None = None) -> None: ...

        # flush.py
        def flush_dirty(
            self,
            conn: psycopg.Connection,
            durable: bool = False,
            *,
            expect: int | None = None,
            in_delegation: bool = False,
            reshare: bool = False,
            commit: bool = True,
        ) -> tuple[Any, ...] | None: ...

        # history.py
        def open_child(self, parent: int, message: str) -> int: ...

        # stages.py
        def held_inos(self) -> set[int]: ...
        def unhold(self, ino: int) -> None: ...
        def recheck_pending(self) -> None: ...

        # txn.py
        def note_write(self) -> None: ...
        def writing(self, *, publish: bool = False) -> AbstractContextManager[None]: ...
        def commit(self, durable: bool = False, *, publish: int | None = None) -> None: ...
        def connect_with(self, start: Callable[[psycopg.Connection, bool], object]) -> tuple[Any, ...]: ...
        def file_size_limit(self) -> int: ...
        def adopt_usage(self, row: tuple[Any, ...]) -> None: ...
        def has_dirty(self) -> bool: ...
        def dirty_rows(self) -> int: ...
        def clear_dirty(self, held: Iterable[int] = ()) -> None: ...
        def _expire(self, ident: int) -> float | None: ...
