"""What native runs keep on local disk between runs, and when it goes.

Each tenant's local trees, their indexes and the kept copies live under
``$TARBOX_HOME/exec/<tenant id>/`` (mode 0700). All of it is a cache of the tenant's
files in the database: removing it costs the next run a rebuild, never a file.
``prune_local_caches`` removes a tenant's whole cache when the tenant no longer exists (its files
must not outlive it on this disk) or when no run used it for ``idle_for`` seconds,
and never one that a run is using: it takes every lock a run holds (the tree and
copy locks, the management lock) without waiting, and skips the tenant if any is
taken or a live process has a run directory there. The directory is renamed away
while those locks are held, so a run that was waiting for the management lock sees
that its lock file is gone and starts over on a new directory (lower.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tarbox.client import Tarbox
from tarbox.sandbox.lower import remove_tree
from tarbox.storage.server import home_dir

USED = "used"  # touched at the start of every run: its mtime is the cache's last use
DEFAULT_IDLE = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Pruned:
    """One tenant's cache removed: why, and how many bytes it held."""

    tenant_id: uuid.UUID
    reason: str  # "tenant deleted" or "idle"
    nbytes: int


def mark_used(base: Path) -> None:
    """Note that a run of the tenant whose cache is ``base`` starts now."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)  # pruned since this host was made
    with contextlib.suppress(FileNotFoundError):
        os.utime(base / USED)
        return
    os.close(os.open(base / USED, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def last_used(base: Path) -> float:
    """When a run last started on the cache ``base`` (its directory's time if none is noted)."""
    for p in (base / USED, base):
        with contextlib.suppress(FileNotFoundError):
            return p.stat().st_mtime
    return 0.0


def prune_local_caches(tb: Tarbox, *, home: Path | None = None, idle_for: float = DEFAULT_IDLE) -> list[Pruned]:
    """Remove the local caches of deleted tenants and of those idle for ``idle_for``
    seconds, skipping any a run is using. Returns what was removed."""
    root = (home or home_dir()) / "exec"
    if not root.is_dir():
        return []
    live = {t.id for t in tb.list_tenants()}
    now = time.time()
    removed = []
    for base in sorted(root.iterdir()):
        try:
            tenant_id = uuid.UUID(base.name)
        except ValueError:
            continue  # not a tenant's cache (a rename in progress, something else)
        if not base.is_dir():
            continue
        reason = "tenant deleted" if tenant_id not in live else "idle" if now - last_used(base) >= idle_for else None
        if reason is None:
            continue
        nbytes = _remove_unless_used(base, root)
        if nbytes is not None:
            removed.append(Pruned(tenant_id, reason, nbytes))
    return removed


def _remove_unless_used(base: Path, root: Path) -> int | None:
    """Remove ``base`` if no run holds any of its locks; its size, or None (in use)."""
    held: list[int] = []
    try:
        locks = [
            base / "manage.lock",
            *sorted((base / "trees").glob("*.lock")),
            *sorted((base / "spares").glob("*.lock")),
        ]
        for lock in locks:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
        if _live_run(base):
            return None
        nbytes = _size(base)
        away = root / f".pruned-{base.name}-{time.time_ns()}"
        os.rename(base, away)
    except FileNotFoundError:
        return None  # removed meanwhile by another prune
    finally:
        for fd in held:
            os.close(fd)
    remove_tree(away)
    return nbytes


def run_owner_alive(run_dir: Path) -> bool | None:
    """Whether the process that made the run directory ``run_dir`` (named
    ``<run id>-<pid>``) is still alive; None for a name that is not a run's."""
    pid = run_dir.name.rsplit("-", 1)[-1]
    return os.path.exists(f"/proc/{pid}") if pid.isdigit() else None


def _live_run(base: Path) -> bool:
    runs = base / "runs"
    return runs.is_dir() and any(run_owner_alive(entry) for entry in runs.iterdir())


def _size(base: Path) -> int:
    """Disk space under ``base``, each inode once (a tree's clone shares its files)."""
    total, seen = 0, set()
    for dirpath, _, names in os.walk(base):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
    return total
