"""The lower layer of native runs: a tenant's workspace materialised on local disk at a
frozen layer, kept between runs and brought forward by what changed.

``<home>/exec/<tenant>/trees/<n>/`` holds the workspace as it is at one layer;
``current`` says which tree, at which layer. A run leases the tree (a shared
``flock`` on ``trees/<n>.lock``) for as long as overlayfs uses it as its lower
layer, which must not change meanwhile. Bringing it to a newer layer applies only the
rows the layers in between wrote (``Filesystem.rows_changed``), found on disk by the
tree's index (``trees/<n>.index``: each path's inode): in place when no run holds it,
else on a clone made of hard links
(files are always replaced, never written through, so a clone never changes its
origin). A tree no run holds and ``current`` does not name is removed. A crash part
way through an update leaves the tree's ``trees/<n>.dirty`` marker behind, and the
next lease rebuilds.

The trees are a cache of what the database holds: losing them costs one export.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path

from tarbox.client import Tarbox
from tarbox.errors import TarboxError
from tarbox.fs import Filesystem, FileType
from tarbox.sandbox.upper import OpKind

CHUNK = 1 << 20
# index file -> ((its inode, mtime, size), the index): see LowerTrees._load_index
_INDEXES: dict[str, tuple[tuple[int, int, int], dict]] = {}
# the indexes a merge changed in memory only: saved with the next update. Lost with the
# process, they cost re-reading what the merge recorded; never a wrong file (an index
# that says less makes the tree copy more)
_UNSAVED: set[str] = set()


@dataclass(slots=True)
class Lease:
    """A tree held for one run: ``path`` stays as it is until :meth:`release`."""

    path: Path
    layer: int
    _fd: int
    _trees: LowerTrees

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._trees.collect()


class LowerTrees:
    """The materialised trees of one tenant's workspace (see the module docstring)."""

    def __init__(self, base: Path, tb: Tarbox, tenant_id, root: str = "/workspace") -> None:
        self.base, self.tb, self.tenant_id, self.root = base, tb, tenant_id, root.rstrip("/") or "/"
        (base / "trees").mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o700)

    def lease(self, layer: int, history: Filesystem | None = None) -> Lease:
        """The workspace at ``layer`` (a frozen layer), held until released. ``history``:
        a view of the tenant to read the layers from (one is made when not given)."""
        with self._managing():
            cur = self._current()
            if cur is not None and cur["layer"] == layer:
                fd = self._lock(cur["tree"], fcntl.LOCK_SH)
                return Lease(self._tree(cur["tree"]), layer, fd, self)
            view = self.tb.filesystem(self.tenant_id, layer=layer, hide_control=True)
            if cur is not None:
                lease = self._bring_forward(cur, layer, view, history)
                if lease is not None:
                    return lease
            return self._rebuild(layer, view)

    def _bring_forward(self, cur: dict, layer: int, view: Filesystem, history: Filesystem | None) -> Lease | None:
        """``cur``'s tree moved to ``layer`` by the rows the layers between wrote; None
        when they cannot tell (another branch, a layer dropped, no index): the caller
        rebuilds."""
        history = history or self.tb.filesystem(self.tenant_id, hide_control=True)
        try:
            rows = history.rows_changed(cur["layer"], layer)
            root_ino = view.lstat(self.root).ino if view.is_dir(self.root) else None
        except (TarboxError, OSError):
            return None
        if rows is None or root_ino != cur.get("root_ino"):
            return None
        entries, inodes = rows
        if not entries and not inodes:  # only checkpoints since: the tree is this layer
            self._write_current({**cur, "layer": layer})
            return Lease(self._tree(cur["tree"]), layer, self._lock(cur["tree"], fcntl.LOCK_SH), self)
        index = self._load_index(cur["tree"])
        if index is None:
            return None
        fd = self._lock(cur["tree"], fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd >= 0:  # nobody holds it: update in place
            n = cur["tree"]
        else:
            n = self._next_number()
            _clone(self._tree(cur["tree"]), self._tree(n))
            fd = self._lock(n, fcntl.LOCK_EX)
            index = dict(index)  # the held tree keeps its own (entries are replaced, never changed)
        with self._changing(n):
            try:
                changed = apply_rows(view, self.root, root_ino, entries, inodes, self._tree(n), index)
                if changed or n != cur["tree"] or str(self._index_path(n)) in _UNSAVED:
                    self._save_index(n, index)
            except BaseException:
                self._forget_index(n)  # changed part way: the file (and a rebuild) decide
                raise
        self._write_current({"tree": n, "layer": layer, "root_ino": root_ino})
        fcntl.flock(fd, fcntl.LOCK_SH)
        return Lease(self._tree(n), layer, fd, self)

    def _rebuild(self, layer: int, view: Filesystem) -> Lease:
        n = self._next_number()
        fd = self._lock(n, fcntl.LOCK_EX)
        index: dict[str, list] = {}
        with self._changing(n):
            export_tree(view, self.root, self._tree(n), index)
            root_ino = view.lstat(self.root).ino if view.is_dir(self.root) else None
            self._save_index(n, index)
        self._write_current({"tree": n, "layer": layer, "root_ino": root_ino})
        fcntl.flock(fd, fcntl.LOCK_SH)
        return Lease(self._tree(n), layer, fd, self)

    def _load_index(self, n: int) -> dict | None:
        """Tree ``n``'s index: this process's copy while the file is the one it wrote or
        read last (parsing it costs more than the rest of a small update), else the file."""
        path = self._index_path(n)
        try:
            st = os.stat(path)
            known = _INDEXES.get(str(path))
            if known is not None and known[0] == (st.st_ino, st.st_mtime_ns, st.st_size):
                return known[1]
            index = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        _INDEXES[str(path)] = ((st.st_ino, st.st_mtime_ns, st.st_size), index)
        return index

    def _save_index(self, n: int, index: dict) -> None:
        path = self._index_path(n)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, separators=(",", ":")))
        os.replace(tmp, path)
        st = os.stat(path)
        _INDEXES[str(path)] = ((st.st_ino, st.st_mtime_ns, st.st_size), index)
        _UNSAVED.discard(str(path))

    def _forget_index(self, n: int) -> None:
        _INDEXES.pop(str(self._index_path(n)), None)
        _UNSAVED.discard(str(self._index_path(n)))

    def merge(self, layer: int, ops, placed: dict) -> bool:
        """Move a written-back run's changes (``ops``: their files are moved) into the tree at
        ``layer``, if it is still the current one and no run holds it, so that the next
        lease finds them in place instead of reading them back. ``placed``: each op's path
        -> its lstat in the tenant right after the write-back, recorded in the index. The
        tree keeps its label: the next lease's rows name these changes, and the index
        says the tree holds those versions already."""
        with self._managing():
            cur = self._current()
            if cur is None or cur["layer"] != layer:
                return False
            index = self._load_index(cur["tree"])
            fd = -1 if index is None else self._lock(cur["tree"], fcntl.LOCK_EX | fcntl.LOCK_NB)
            if index is None or fd < 0:
                return False
            try:
                n = cur["tree"]
                with self._changing(n):  # left behind if this fails part way
                    _merge_into(self._tree(n), self.root, ops)
                    try:
                        _record_merged(index, self.root, ops, placed)  # the cached index, in memory
                        _UNSAVED.add(str(self._index_path(n)))
                    except BaseException:
                        self._forget_index(n)
                        raise
                return True
            finally:
                os.close(fd)

    def collect(self) -> None:
        """Remove the trees nobody holds that ``current`` does not name."""
        with self._managing():
            cur = self._current()
            keep = None if cur is None else cur["tree"]
            for entry in (self.base / "trees").iterdir():
                if not entry.is_dir() or not entry.name.isdigit() or int(entry.name) == keep:
                    continue
                fd = self._lock(int(entry.name), fcntl.LOCK_EX | fcntl.LOCK_NB)
                if fd < 0:
                    continue
                try:
                    remove_tree(entry)
                    self._forget_index(int(entry.name))
                    n = int(entry.name)
                    for leftover in (self._lock_path(n), self._index_path(n), self._dirty_path(n)):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(leftover)
                finally:
                    os.close(fd)

    # ------------------------------------------------------------ bookkeeping

    def _tree(self, n: int) -> Path:
        return self.base / "trees" / str(n)

    def _lock_path(self, n: int) -> Path:
        return self.base / "trees" / f"{n}.lock"

    def _index_path(self, n: int) -> Path:
        return self.base / "trees" / f"{n}.index"

    def _dirty_path(self, n: int) -> Path:
        return self.base / "trees" / f"{n}.dirty"

    @contextlib.contextmanager
    def _changing(self, n: int):
        """Tree ``n`` marked as being changed until the block ends well (a crash or an
        error leaves the mark, and the tree is rebuilt). An empty file made and removed:
        cheaper than rewriting ``current`` twice, each an ext4 replace-by-rename flush."""
        os.close(os.open(self._dirty_path(n), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        yield
        os.unlink(self._dirty_path(n))

    def _lock(self, n: int, how: int) -> int:
        """An fd holding ``how`` on tree ``n``'s lock file, or -1 (LOCK_NB, held elsewhere)."""
        fd = os.open(self._lock_path(n), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)
        except BlockingIOError:
            os.close(fd)
            return -1
        return fd

    @contextlib.contextmanager
    def _managing(self):
        """The tenant's management lock. The cache may have been pruned (caches.py) while
        this process waited for it, or before: then the lock file it holds is no longer
        the one at its path, and it starts over on a new directory."""
        while True:
            self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.base / "trees").mkdir(exist_ok=True)
            path = self.base / "manage.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass  # renamed away meanwhile
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)

    def _current(self) -> dict | None:
        try:
            cur = json.loads((self.base / "current").read_text())
        except (FileNotFoundError, ValueError):
            return None
        n = cur.get("tree", -1)
        if cur.get("dirty") or not self._tree(n).is_dir() or self._dirty_path(n).exists():
            return None  # a crash part way through an update: rebuilt
        return cur

    def _write_current(self, cur: dict) -> None:
        tmp = self.base / "current.tmp"
        tmp.write_text(json.dumps(cur))
        os.replace(tmp, self.base / "current")

    def _next_number(self) -> int:
        taken = [int(e.name) for e in (self.base / "trees").iterdir() if e.name.isdigit()]
        return max(taken, default=0) + 1


# ---------------------------------------------------------------- copying out


def export_tree(view: Filesystem, root: str, dst: Path, index: dict[str, list]) -> None:
    """The subtree ``root`` of ``view`` written to the empty or absent ``dst``, each
    entry put in ``index`` (relative path -> [ino, is a directory])."""
    if dst.exists():
        remove_tree(dst)
    dst.mkdir(mode=0o700, parents=True)
    if view.is_dir(root):
        _export_dir(view, root, "", dst, index)


def _export_dir(view: Filesystem, path: str, rel: str, local: Path, index: dict[str, list]) -> None:
    """The directory ``path`` (``rel`` below the root, made at ``local``) filled from
    ``view``, depth first; its times and mode set after its entries."""
    listing = view.scandir(path)
    for stale in set(os.listdir(local)) - {e.name for e in listing}:  # a run's merge left it
        _remove_path(local / stale)
    for e in listing:
        child, child_rel = f"{path.rstrip('/')}/{e.name}", f"{rel}/{e.name}" if rel else e.name
        is_dir = e.type is FileType.DIRECTORY
        there = local / e.name
        if is_dir:
            index[child_rel] = [e.ino, True]
            if there.is_symlink() or (there.exists() and not there.is_dir()):
                _remove_path(there)
            there.mkdir(mode=0o700, exist_ok=True)
            _export_dir(view, child, child_rel, there, index)
            continue
        st = view.lstat(child)
        if not _has(there, index.get(child_rel), st):
            if there.is_dir() and not there.is_symlink():
                _remove_path(there)
            _copy_out(view, child, there, st)
        index[child_rel] = _entry(st)
    _set_meta(view, path, local)


def apply_rows(
    view: Filesystem,
    root: str,
    root_ino: int | None,
    entries: dict[tuple[int, str], int | None],
    inodes: set[int],
    dst: Path,
    index: dict[str, list],
) -> bool:
    """Bring ``dst`` (the subtree ``root`` at an older layer, described by ``index``) to
    ``view``, given the rows the layers between wrote (``Filesystem.rows_changed``).
    Touches only the paths those rows name (and the whole of a directory that appeared
    or moved). ``index`` is updated to ``view``; says whether that changed it."""
    dirs = {known[0]: rel for rel, known in index.items() if known[1]}
    # what the changed inodes are at ``view``, in one query, not a path lookup each
    stats = view.stat_inodes(inodes | {ino for ino in entries.values() if ino is not None})
    dirs[root_ino] = ""
    touched: set[str] = set()
    index_changed = False

    def forget(rel: str) -> None:
        nonlocal index_changed
        index_changed = True
        for key in [k for k in index if k == rel or k.startswith(rel + "/")]:
            ino, is_dir, *_ = index.pop(key)
            if is_dir and dirs.get(ino) == key:
                del dirs[ino]
        touched.add(rel)

    # names that no longer hold what they held (removed, replaced, moved away): away
    # first, so that every directory still in ``dirs`` keeps its old path in ``view``.
    # A directory replaced by another stays on disk: the new one is reconciled with it
    # below (a run that replaced it has merged the new content there already).
    for (parent, name), ino in entries.items():
        if parent in dirs:
            rel = _join(dirs[parent], name)
            if rel in index and index[rel][0] != ino:
                now = stats.get(ino) if ino is not None else None
                replaced_by_dir = now is not None and now.type is FileType.DIRECTORY
                if not (replaced_by_dir and index[rel][1]):
                    _remove_path(dst / rel)
                forget(rel)
    # then what the names hold now: parents before children (a new directory comes
    # whole, so its own entries are found made already)
    pending = [(parent, name, ino) for (parent, name), ino in entries.items() if ino is not None]
    while pending:
        later = []
        for parent, name, ino in pending:
            if parent not in dirs:
                later.append((parent, name, ino))
                continue
            rel = _join(dirs[parent], name)
            if rel in index:
                continue  # the same inode: its content, if changed, is an inode row below
            path = f"{root.rstrip('/')}/{rel}"
            st = stats.get(ino)
            if st is None:
                continue
            index[rel] = _entry(st)
            index_changed = True
            touched.add(rel)
            if st.type is FileType.DIRECTORY:
                if (dst / rel).is_symlink() or ((dst / rel).exists() and not (dst / rel).is_dir()):
                    _remove_path(dst / rel)
                (dst / rel).mkdir(mode=0o700, exist_ok=True)  # a run's merge may have made it
                dirs[st.ino] = rel
                _export_dir(view, path, rel, dst / rel, index)
                for key, (kino, kdir, *_) in index.items():
                    if kdir and key.startswith(rel + "/"):
                        dirs[kino] = key
            else:  # a name new to the index: whatever the disk has there is not trusted
                if (dst / rel).is_dir() and not (dst / rel).is_symlink():
                    _remove_path(dst / rel)
                _copy_out(view, path, dst / rel, st)
        if len(later) == len(pending):
            break  # the rest are under directories that are gone
        pending = later
    if inodes:
        by_ino: dict[int, list[str]] = {}
        for rel, (ino, *_) in index.items():
            by_ino.setdefault(ino, []).append(rel)
        if root_ino is not None:
            by_ino.setdefault(root_ino, []).append("")
        for ino in inodes:
            for rel in by_ino.get(ino, ()):
                path = f"{root.rstrip('/')}/{rel}" if rel else root
                local = dst / rel if rel else dst
                known = index.get(rel, [0, True])
                st = stats.get(ino)
                if st is not None and not known[1] and not _has(local, known, st):
                    _copy_out(view, path, local, st)
                    index[rel] = _entry(st)
                    index_changed = True
                touched.add(rel)
    parents = {os.path.dirname(rel) for rel in touched} | {rel for rel in touched if rel in dirs.values()}
    for rel in sorted(parents, key=len, reverse=True):  # children first: their writes move the times
        path = f"{root.rstrip('/')}/{rel}" if rel else root
        local = dst / rel if rel else dst
        if local.is_dir() and not local.is_symlink() and view.is_dir(path):
            _set_meta(view, path, local)
    return index_changed


def _merge_into(tree: Path, root: str, ops) -> None:
    """A written-back run's operations carried out on the local tree ``tree``."""
    dirs = []
    for op in ops:
        local = _local(tree, root, op.path)
        if local == tree:
            continue
        if op.kind is OpKind.DELETE:
            _remove_path(local)
        elif op.kind in (OpKind.DIR, OpKind.REPLACE_DIR):
            stale = local.is_symlink() or (local.exists() and not local.is_dir())
            if op.kind is OpKind.REPLACE_DIR or stale:
                _remove_path(local)
            local.mkdir(mode=0o700, exist_ok=True)
            dirs.append((local, op))
        else:
            _remove_path(local)
            if op.kind is OpKind.FILE and op.local is not None:
                os.rename(op.local, local)  # one filesystem: the file moves, nothing is copied
            elif op.kind is OpKind.SYMLINK and op.target is not None:
                os.symlink(op.target, local)
            elif op.kind is OpKind.LINK and op.target is not None:
                os.link(_local(tree, root, op.target), local)
            else:
                os.mkfifo(local, op.mode)
    for local, op in reversed(dirs):
        os.chmod(local, op.mode)
        os.utime(local, ns=(op.mtime_ns, op.mtime_ns))


def _record_merged(index: dict[str, list], root: str, ops, placed: dict) -> None:
    """``index`` told of a merged run's operations (see :meth:`LowerTrees.merge`)."""
    prefix = root.rstrip("/") + "/"
    for op in ops:
        if not op.path.startswith(prefix):
            continue
        rel = op.path[len(prefix) :]
        if op.removes or op.kind is not OpKind.DIR:  # what was there is gone (or replaced)
            known = index.pop(rel, None)
            was_dir = known[1] if known is not None else op.removes  # not indexed: assume the worst
            if was_dir or op.kind is OpKind.REPLACE_DIR:  # a directory went: its entries with it
                for key in [k for k in index if k.startswith(rel + "/")]:
                    del index[key]
        st = placed.get(op.path)
        if op.kind is not OpKind.DELETE and st is not None:
            index[rel] = _entry(st)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _local(dst: Path, root: str, path: str) -> Path:
    if path == root:
        return dst
    rel = path[len(root) :].lstrip("/") if root != "/" else path.lstrip("/")
    return dst / rel if rel else dst


def _entry(st) -> list:
    """The index's record of an entry: its inode, whether a directory, and for anything
    else the ctime of the version the tree holds (every change moves it)."""
    if st.type is FileType.DIRECTORY:
        return [st.ino, True]
    return [st.ino, False, st.ctime_ns]


def _has(local: Path, known: list | None, st) -> bool:
    """Does the tree hold ``st``'s version at ``local`` already? Exactly when the index
    recorded that inode at that ctime (size and mtime prove nothing: tar and ``cp -p``
    restore them)."""
    return (
        known is not None
        and len(known) == 3
        and (known[0], known[2]) == (st.ino, st.ctime_ns)
        and st.type is not FileType.DIRECTORY
        and os.path.lexists(local)
    )


def _copy_out(view: Filesystem, path: str, local: Path, st) -> None:
    """One non-directory of ``view`` (``st``: its lstat) at ``local``, replacing whatever
    was there (a new inode: a hard-linked clone keeps the old one)."""
    tmp = local.with_name(f".{local.name}.tarbox-tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if st.type is FileType.FILE:
        with view.open(path, "rb") as src, open(tmp, "xb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    elif st.type is FileType.SYMLINK:
        os.symlink(view.readlink(path), tmp)
    elif st.type is FileType.FIFO:
        os.mkfifo(tmp, 0o600)
    else:
        return  # sockets and device nodes are not materialised (docs/exec.md)
    os.replace(tmp, local)
    _set_meta(view, path, local, st)


def _set_meta(view: Filesystem, path: str, local: Path, st=None) -> None:
    st = st or view.lstat(path)
    if st.type is not FileType.SYMLINK:
        os.chmod(local, st.mode)
    os.utime(local, ns=(st.atime_ns, st.mtime_ns), follow_symlinks=False)


def _clone(src: Path, dst: Path) -> None:
    """``src`` again at ``dst``: directories made anew, everything else hard-linked."""
    dst.mkdir(mode=0o700)
    for top, subdirs, files in os.walk(src):
        local = dst / os.path.relpath(top, src)
        for name in subdirs:
            st = os.lstat(os.path.join(top, name))
            (local / name).mkdir(mode=0o700)
            os.chmod(local / name, stat_mod.S_IMODE(st.st_mode))
        for name in files:
            os.link(os.path.join(top, name), local / name, follow_symlinks=False)
    for top, subdirs, _ in os.walk(src, topdown=False):
        for name in subdirs + ["."]:
            st = os.lstat(os.path.join(top, name))
            os.utime(dst / os.path.relpath(os.path.join(top, name), src), ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(dst, 0o700)


def _remove_path(local: Path) -> None:
    if local.is_dir() and not local.is_symlink():
        remove_tree(local)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local)


def remove_tree(path: Path) -> None:
    def writable_then_retry(func, p, info):  # a read-only directory of the tenant's
        if not isinstance(info[1], PermissionError):
            raise info[1]
        os.chmod(os.path.dirname(p), 0o700)
        func(p)

    shutil.rmtree(path, onerror=writable_then_retry)
