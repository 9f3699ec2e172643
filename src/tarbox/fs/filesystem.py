"""Tenant-scoped POSIX-like filesystem over the store: paths, files, directories.
(Its path walk is ``walk.py``'s, its history calls, layers to diffs, ``timeline.py``'s,
and when its changes commit, batches to sync, ``commits.py``'s.)
"""

from __future__ import annotations

import contextvars
import errno
import io
import os
import stat as stat_mod
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tarbox.errors import fs_error
from tarbox.fs import control, paths
from tarbox.fs.commits import CommitControl
from tarbox.fs.file import OpenMode, TarboxFile, parse_mode
from tarbox.fs.records import ROOT_INO, RUN_AHEAD_MAX_BYTES, Inode, now_ns
from tarbox.fs.store import Store
from tarbox.fs.timeline import HistoryView
from tarbox.fs.types import AuditOp, DirEntry, FileType, Stat, Usage
from tarbox.fs.walk import PathWalk, Resolution


def _check_reserved(parent: int, name: str, path: str) -> None:
    """``/.tarbox`` is the control directory's name: no real entry may take it."""
    if parent == ROOT_INO and name == control.NAME:
        raise fs_error(errno.EPERM, path, "the name /.tarbox is reserved")


class _ControlWriter(io.BytesIO):
    """Buffers a write to a control file and performs it at close."""

    def __init__(self, fs: Filesystem, path: str) -> None:
        super().__init__()
        self._fs, self._path = fs, path

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            control.write(self._fs, self._path, data)


class Filesystem(HistoryView, CommitControl):
    """One tenant's files. Obtain it with ``Tarbox.filesystem(tenant)``."""

    def __init__(
        self,
        store: Store,
        *,
        read_only: bool = False,
        tenant_name: str | None = None,
        view_factory: Callable[[int], Store] | None = None,
        hide_control: bool = False,
    ) -> None:
        self._store = store
        self._paths = PathWalk(store)
        self.read_only = read_only or store.pinned is not None
        self.tenant_name = tenant_name
        self.hide_control = hide_control  # /.tarbox does not exist for this view
        self._view = view_factory  # layer id -> Store pinned at that layer (for diff)
        # audit: the run (WASI run, CLI command) this view's operations belong to, and
        # whether opens for reading are recorded too
        self.run_id: uuid.UUID | None = None
        self.audited = True  # False: this view's operations leave no records (benchmarks, tools)
        self.audit_reads = False
        # who new inodes belong to: (uid, gid), per thread or task (acting_as); root by default
        self._acting: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("tarbox_acting", default=(0, 0))

    @property
    def path_max(self) -> int | None:
        """The longest path, in bytes, an operation takes (None: no limit of ours, as
        under a mount, whose kernel checks what callers pass)."""
        return self._paths.path_max

    @path_max.setter
    def path_max(self, limit: int | None) -> None:
        self._paths.path_max = limit

    def resolve_beneath(
        self, base: str, rel: str, *, follow: bool, defer_long_name: bool = False
    ) -> tuple[str, Stat | None]:
        """``rel`` resolved from the directory ``base`` for a sandbox (the WASI host):
        the physical path and the stat of what it names (None: nothing), never above
        ``base`` (SandboxEscapeError). See ``PathWalk.resolve_beneath``."""
        return self._paths.resolve_beneath(base, rel, follow=follow, defer_long_name=defer_long_name)

    def same_store(self, other: Filesystem) -> bool:
        """Do both views share one store (one tenant, one process's caches), so that
        a rename or link between them is one operation?"""
        return self._store is other._store

    @contextmanager
    def acting_as(self, uid: int, gid: int) -> Iterator[None]:
        """Inodes created inside (in this thread or task) belong to ``uid:gid``, as a
        process's belong to its fsuid and fsgid (a directory with the set-group-ID bit
        gives them its group instead). A FUSE mount acts as each request's caller.
        Permission checks are the caller's to make (the kernel's, on a mount)."""
        token = self._acting.set((uid, gid))
        try:
            yield
        finally:
            self._acting.reset(token)

    @property
    def tenant_id(self) -> uuid.UUID:
        return self._store.tenant_id

    @property
    def generation(self) -> int | None:
        """The tenant's generation as this view last saw it: every commit of the tenant
        bumps it by one. Inside :meth:`atomic` the tenant is locked and this is the one
        the batch will publish, so one less is the last commit of anyone before it (a
        native run's write-back tells by it whether the tenant moved meanwhile)."""
        return self._store.gen

    @property
    def stats(self) -> dict[str, int]:
        """What this process did for the tenant so far (all its views of the tenant
        share these): ``round_trips`` to the database, ``flushes``, write-back
        ``windows``, operations committed ahead of the lock in one round trip
        (``run_ahead``) and those decided again under it (``run_ahead_redone``), read
        delegations asked back from other processes (``recalls_sent``). A copy."""
        return dict(self._store.stats)

    def _writable(self, path: paths.PathArg | None) -> None:
        if self.read_only:
            raise fs_error(errno.EROFS, None if path is None else os.fspath(path), "read-only filesystem view")

    def _ctl(self, path: paths.PathArg | None) -> str | None:
        """The /.tarbox path ``path`` names, if any (ENOENT when this view hides it)."""
        if path is None:
            return None
        p = control.control_path(os.fspath(path))  # None for bytes paths and non-control paths
        if p is not None and self.hide_control:
            raise fs_error(errno.ENOENT, os.fspath(path))
        return p

    def _no_ctl(self, *pths: paths.PathArg) -> None:
        for p in pths:
            if self._ctl(p) is not None:
                control.refuse(os.fspath(p))

    def _touch_dir(self, ino: int, nlink_delta: int = 0) -> None:
        node = self._store.inode(ino)
        if node is None:
            return
        node.mtime_ns = node.ctime_ns = now_ns()
        node.nlink += nlink_delta
        self._store.touch(node)

    def _mutate(
        self,
        body: Callable[[Store], None],
        path: paths.PathArg,
        op: AuditOp,
        path2: str | None = None,
        nbytes: int | None = None,
    ) -> None:
        """One mutating operation: ``body(store)`` makes its changes; they and the audit
        record commit together. ``Store.operation`` may run the body twice (ahead of the
        lock, then under it), so it decides everything from the store afresh."""
        self._writable(path)
        text = os.fspath(path)

        def whole() -> None:
            body(self._store)
            self._record(op, text, path2, nbytes)

        self._store.operation(whole, small=nbytes is None or nbytes <= RUN_AHEAD_MAX_BYTES)

    def record(self, op: AuditOp, path: str, path2: str | None = None, nbytes: int | None = None) -> None:
        """Audit, as this view's, an operation a caller composed from others it made
        unaudited (an upload through a hidden name is one ``write`` of the target). It
        commits with the next commit of this process: call it in the same ``batch``."""
        self._record(op, path, path2, nbytes)

    def _record(
        self,
        op: AuditOp,
        path: str | None,
        path2: str | None = None,
        nbytes: int | None = None,
        *,
        layer: int | None = None,
    ) -> None:
        """Audit an operation of this view (unless ``audited`` is off); it commits with its changes."""
        if self.audited:
            self._store.audit(self.run_id, op, path, path2, nbytes, layer=layer)

    # ------------------------------------------------------------------ reads

    def stat(self, path: paths.PathArg, *, follow_symlinks: bool = True) -> Stat:
        ctl = self._ctl(path)
        if ctl is not None:
            return control.stat(self, ctl)
        st = self._store
        with st.lock:
            st.refresh(force=False)
            key = (path, follow_symlinks) if isinstance(path, str) else None
            ino = st.path_cache.get(key) if key is not None else None
            node = st.inode(ino) if ino is not None else None
            if node is None:
                node = self._paths.existing(path, follow=follow_symlinks).node
                assert node is not None
                if key is not None:
                    if len(st.path_cache) > 100_000:
                        st.path_cache.clear()
                    st.path_cache[key] = node.ino
            return node.to_stat()

    def lstat(self, path: paths.PathArg) -> Stat:
        return self.stat(path, follow_symlinks=False)

    def exists(self, path: paths.PathArg) -> bool:
        try:
            self.stat(path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def lexists(self, path: paths.PathArg) -> bool:
        """Like ``os.path.lexists``: true for a symlink too, even a dangling one."""
        try:
            self.lstat(path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def is_dir(self, path: paths.PathArg) -> bool:
        try:
            return self.stat(path).is_dir
        except (FileNotFoundError, NotADirectoryError):
            return False

    def is_file(self, path: paths.PathArg) -> bool:
        try:
            return self.stat(path).is_file
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _dir(self, path: paths.PathArg) -> Inode:
        node = self._paths.existing(path).node
        assert node is not None
        if node.kind is not FileType.DIRECTORY:
            raise fs_error(errno.ENOTDIR, os.fspath(path))
        return node

    def listdir(self, path: paths.PathArg = "/") -> list[str]:
        """Names in a directory, sorted (an open of the directory: revalidates)."""
        ctl = self._ctl(path)
        if ctl is not None:
            return control.listdir(ctl)
        with self._store.lock:
            self._store.refresh()
            return sorted(self._store.listing(self._dir(path).ino))

    def scandir(self, path: paths.PathArg = "/") -> list[DirEntry]:
        """Entries with their types, sorted by name, fetched in one query."""
        ctl = self._ctl(path)
        if ctl is not None:
            return [DirEntry(n, 0, control.stat(self, paths.join(ctl, n)).type) for n in control.listdir(ctl)]
        with self._store.lock:
            self._store.refresh()
            kids = self._store.listing(self._dir(path).ino)
            nodes = self._store.inodes(kids.values())
            return [DirEntry(name, ino, nodes[ino].kind) for name, ino in sorted(kids.items()) if ino in nodes]

    def walk(self, top: paths.PathArg = "/") -> Iterator[tuple[str, list[str], list[str]]]:
        """Like ``os.walk`` (top-down, symlinks to directories not followed)."""
        top = os.fspath(top)
        entries = self.scandir(top)
        dirs = [e.name for e in entries if e.type is FileType.DIRECTORY]
        files = [e.name for e in entries if e.type is not FileType.DIRECTORY]
        yield top, dirs, files
        for d in dirs:
            yield from self.walk(paths.join(top, d))

    def read_file(self, path: paths.PathArg) -> bytes:
        ctl = self._ctl(path)
        if ctl is not None:
            return control.read(self, ctl)
        with self._store.lock:
            self._store.refresh()
            node = self._paths.existing(path).node
            assert node is not None
            if node.kind is FileType.DIRECTORY:
                raise fs_error(errno.EISDIR, os.fspath(path))
            if node.kind.is_special:
                raise fs_error(errno.ENXIO, os.fspath(path), "a FIFO, socket or device node has no content")
            return self._store.read(node, 0, node.size)

    def read_text(self, path: paths.PathArg, encoding: str = "utf-8") -> str:
        return self.read_file(path).decode(encoding)

    def readlink(self, path: paths.PathArg) -> str:
        with self._store.lock:
            self._store.refresh(force=False)
            node = self._paths.existing(path, follow=False).node
            assert node is not None
            if node.kind is not FileType.SYMLINK:
                raise fs_error(errno.EINVAL, os.fspath(path), "not a symbolic link")
            return node.target or ""

    def usage(self) -> Usage:
        rows = self._store.query(
            "SELECT used_bytes, used_inodes, quota_bytes, quota_inodes FROM tenant_state WHERE tenant_id = %s",
            (self._store.tenant_id,),
        )
        return Usage(*rows[0])

    # ----------------------------------------------------------------- writes

    def _create(
        self, res: Resolution, kind: FileType, mode: int, path: str, *, target: str | None = None, rdev: int = 0
    ) -> Inode:
        st = self._store
        assert res.parent is not None and res.name is not None
        paths.check_name(res.name, path)
        _check_reserved(res.parent, res.name, path)
        uid, gid = self._acting.get()
        parent = st.inode(res.parent)
        if parent is not None and parent.mode & stat_mod.S_ISGID:  # Linux: the group of the directory
            gid = parent.gid
            if kind is FileType.DIRECTORY:
                mode |= stat_mod.S_ISGID
        node = st.create_inode(
            kind, mode, target=target, nlink=2 if kind is FileType.DIRECTORY else 1, uid=uid, gid=gid, rdev=rdev
        )
        st.set_dentry(res.parent, res.name, node.ino)
        self._touch_dir(res.parent, 1 if kind is FileType.DIRECTORY else 0)
        if kind is FileType.DIRECTORY:
            st.note_new_dir(node.ino)
        return node

    def _new_name(self, text: str) -> Resolution:
        """Where a new non-directory ``text`` goes: EEXIST if the name is taken (a
        symlink is not followed), ENOENT for ``name/`` (Linux: only a directory)."""
        res = self._paths.resolve(text, follow=False)
        if res.node is not None or res.name is None:
            raise fs_error(errno.EEXIST, text)
        if text.endswith("/"):
            raise fs_error(errno.ENOENT, text)
        return res

    def mkdir(self, path: paths.PathArg, mode: int = 0o755, *, parents: bool = False, exist_ok: bool = False) -> None:
        text = os.fspath(path)
        if exist_ok and not self.read_only and control.control_path(text) is None:
            # the common mkdir -p of a directory that exists needs no write lock, only
            # the close-to-open check that another process has not removed it
            self._store.refresh()
            if self.is_dir(text):
                return
        if parents:
            sp = paths.split(text, self._paths.path_max)
            prefix = ""
            for part in sp.parts:
                prefix += "/" + part
                if part in (".", ".."):
                    continue
                self.mkdir(prefix, mode, exist_ok=True)
            if not exist_ok and not sp.parts:
                raise fs_error(errno.EEXIST, text)
            return
        self._no_ctl(text)

        def body(st: Store) -> None:
            res = self._paths.resolve(paths.without_trailing_slash(text)[0], follow=False)  # never follows the name
            if res.node is not None or res.name is None:
                if exist_ok and self.is_dir(text):  # a directory, or a symlink to one
                    return
                raise fs_error(errno.EEXIST, text)
            self._create(res, FileType.DIRECTORY, mode, text)

        self._mutate(body, text, AuditOp.MKDIR)

    def makedirs(self, path: paths.PathArg, mode: int = 0o755, exist_ok: bool = True) -> None:
        self.mkdir(path, mode, parents=True, exist_ok=exist_ok)

    def _open_node(
        self, path: str, *, create: bool, excl: bool = False, trunc: bool = False, mode: int = 0o644
    ) -> tuple[Inode, AuditOp | None]:
        """Resolve (and maybe create or truncate) a regular file; call inside ``writing()``.
        Also says what it did: CREATE, TRUNCATE or nothing (None)."""
        res = self._paths.resolve(path, follow=not excl)
        node = res.node
        if node is None:
            if not create:
                raise fs_error(errno.ENOENT, path)
            if res.name is None or path.endswith("/"):
                raise fs_error(errno.EISDIR, path)
            return self._create(res, FileType.FILE, mode, path), AuditOp.CREATE
        if excl:
            raise fs_error(errno.EEXIST, path)
        if node.kind is FileType.DIRECTORY:
            raise fs_error(errno.EISDIR, path)
        if node.kind is FileType.SYMLINK:  # only reachable with excl, handled above
            raise fs_error(errno.ELOOP, path)
        if node.kind.is_special:
            raise fs_error(errno.ENXIO, path, "a FIFO, socket or device node: only the kernel opens it (on a mount)")
        if trunc and node.size:
            self._store.truncate(node, 0)
            return node, AuditOp.TRUNCATE
        return node, None

    def write_file(self, path: paths.PathArg, data: bytes | bytearray | memoryview, mode: int = 0o644) -> int:
        """Create or replace a file's content. Visible to other processes on return."""
        text = os.fspath(path)
        ctl = self._ctl(text)
        if ctl is not None:
            self._writable(text)
            control.write(self, ctl, bytes(data))
            return len(data)

        def body(st: Store) -> None:
            node, _ = self._open_node(text, create=True, trunc=True, mode=mode)
            st.write(node, 0, data)
            if not len(data):
                st.touch(node)

        self._mutate(body, text, AuditOp.WRITE, nbytes=len(data))
        return len(data)

    def write_text(self, path: paths.PathArg, text: str, encoding: str = "utf-8") -> int:
        return self.write_file(path, text.encode(encoding))

    def append_file(self, path: paths.PathArg, data: bytes | bytearray | memoryview) -> int:
        text = os.fspath(path)
        if self._ctl(text) is not None:
            return self.write_file(text, data)

        def body(st: Store) -> None:
            node, _ = self._open_node(text, create=True)
            st.write(node, node.size, data)
            st.touch(node)

        self._mutate(body, text, AuditOp.APPEND, nbytes=len(data))
        return len(data)

    def open(
        self,
        path: paths.PathArg,
        mode: str = "rb",
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:  # a binary file (a TarboxFile) or, by ``mode``, a text one: callers know which
        """A real file object (binary, or text when ``mode`` has no 'b') that streams in blocks."""
        m = parse_mode(mode)
        text = os.fspath(path)
        if m.writable:
            self._writable(text)
        ctl = self._ctl(text)
        if ctl is not None:
            raw: io.RawIOBase = (
                _ControlWriter(self, ctl) if m.writable else io.BytesIO(control.read(self, ctl))  # type: ignore[assignment]
            )
            return raw if m.binary else io.TextIOWrapper(raw, encoding=encoding or "utf-8")
        raw = self._open_raw(text, m, revalidate=True)
        if m.binary:
            return raw
        if m.readable and m.writable:
            buf: io.BufferedIOBase = io.BufferedRandom(raw)
        elif m.writable:
            buf = io.BufferedWriter(raw)
        else:
            buf = io.BufferedReader(raw)
        return io.TextIOWrapper(buf, encoding=encoding or "utf-8", errors=errors, newline=newline)

    def open_file(
        self,
        path: str,
        *,
        read: bool = True,
        write: bool = False,
        create: bool = False,
        exclusive: bool = False,
        truncate: bool = False,
        append: bool = False,
        revalidate: bool = True,
    ) -> TarboxFile:
        """``open(2)`` with explicit flags, for hosts that speak in flags (the WASI host).
        ``revalidate=False`` when the caller already revalidated under the store lock."""
        if write or create or truncate:
            self._writable(path)
        self._no_ctl(path)
        return self._open_raw(path, OpenMode(read, write, append, create, exclusive, truncate, True), revalidate)

    def _open_raw(self, path: str, m: OpenMode, revalidate: bool) -> TarboxFile:
        """Open (creating or truncating inside a write transaction) and wrap a regular file."""
        st = self._store
        with st.lock:
            if m.create or m.trunc:
                with st.writing():
                    node, did = self._open_node(path, create=m.create, excl=m.excl, trunc=m.trunc)
                    if did is not None:
                        self._record(did, path, None, 0)
            else:
                if revalidate:
                    st.refresh()
                node, _ = self._open_node(path, create=False)
                if self.audit_reads:
                    self._record(AuditOp.OPEN, path)
            return TarboxFile(st, node.ino, path, m, record=self._record)

    def truncate(self, path: paths.PathArg, size: int) -> None:
        text = os.fspath(path)
        self._no_ctl(text)
        if size < 0:
            raise fs_error(errno.EINVAL, text, "negative size")

        def body(st: Store) -> None:
            node = self._paths.existing(text).node
            assert node is not None
            if node.kind is FileType.DIRECTORY:
                raise fs_error(errno.EISDIR, text)
            if node.kind.is_special:
                raise fs_error(errno.EINVAL, text, "a FIFO, socket or device node has no size")
            st.truncate(node, size)
            st.touch(node)

        self._mutate(body, text, AuditOp.TRUNCATE, nbytes=size)

    def _unlink_node(self, parent: int, name: str, node: Inode) -> None:
        st = self._store
        st.set_dentry(parent, name, None)
        node.nlink -= 1
        node.ctime_ns = now_ns()
        if node.nlink > 0 or st.open_counts.get(node.ino):
            st.touch(node)  # still linked elsewhere, or open: released at last close
        else:
            st.drop_inode(node)

    def remove(self, path: paths.PathArg) -> None:
        """Unlink a file or symlink (EISDIR for a directory, as on Linux)."""
        text = os.fspath(path)
        self._no_ctl(text)

        def body(st: Store) -> None:
            res = self._paths.existing(text, follow=False)
            node = res.node
            assert node is not None
            if res.name is None or node.kind is FileType.DIRECTORY:
                raise fs_error(errno.EISDIR, text)
            self._unlink_node(res.parent, res.name, node)  # type: ignore[arg-type]
            self._touch_dir(res.parent)  # type: ignore[arg-type]

        self._mutate(body, text, AuditOp.REMOVE)

    unlink = remove

    def rmdir(self, path: paths.PathArg) -> None:
        text = os.fspath(path)
        self._no_ctl(text)

        def body(st: Store) -> None:
            # as Linux: the final name is not followed even before a slash ("link/": ENOTDIR)
            res = self._paths.existing(paths.without_trailing_slash(text)[0], follow=False)
            node = res.node
            assert node is not None
            if node.kind is not FileType.DIRECTORY:
                raise fs_error(errno.ENOTDIR, text)
            if res.name is None:
                raise fs_error(errno.EBUSY if node.ino == ROOT_INO else errno.EINVAL, text)
            if st.listing(node.ino):
                raise fs_error(errno.ENOTEMPTY, text)
            st.set_dentry(res.parent, res.name, None)  # type: ignore[arg-type]
            st.drop_inode(node)
            self._touch_dir(res.parent, -1)  # type: ignore[arg-type]

        self._mutate(body, text, AuditOp.RMDIR)

    def remove_tree(self, path: paths.PathArg) -> None:
        """Delete a directory and everything below it (``rm -r``) in one write-back window."""
        text = os.fspath(path)
        with self._store.batch():
            st = self.lstat(text)
            if not st.is_dir:
                self.remove(text)
                return
            for name in self.listdir(text):
                child = paths.join(text, name)
                if self.lstat(child).is_dir:
                    self.remove_tree(child)
                else:
                    self.remove(child)
            self.rmdir(text)

    def rename(self, src: paths.PathArg, dst: paths.PathArg) -> None:
        """POSIX rename: atomically replaces ``dst`` (a file, or an empty directory)."""
        s, d = os.fspath(src), os.fspath(dst)
        self._no_ctl(s, d)

        def body(st: Store) -> None:
            # As Linux: walk both parents first, then look at the final names,
            # never following a final symlink, trailing slash or not.
            # A final name over NAME_MAX cannot exist: it is refused only once the
            # other path's directories were walked (and, for the target, after the
            # source was found), as Linux's lookup order has it.
            rs = self._paths.resolve(paths.without_trailing_slash(s)[0], follow=False, defer_long_name=True)
            rd = self._paths.resolve(paths.without_trailing_slash(d)[0], follow=False, defer_long_name=True)
            if rs.name_too_long:
                raise fs_error(errno.ENAMETOOLONG, s, "name longer than 255 bytes")
            if rs.name is None or rd.name is None:  # ends in '.' or '..' (or is '/'): EBUSY
                raise fs_error(errno.EBUSY, s if rs.name is None else d)
            if rs.node is None:
                raise fs_error(errno.ENOENT, s)
            if rd.name_too_long:
                raise fs_error(errno.ENAMETOOLONG, d, "name longer than 255 bytes")
            node = rs.node
            assert node is not None and rs.parent is not None and rd.parent is not None
            if node.kind is not FileType.DIRECTORY and (s.endswith("/") or d.endswith("/")):
                raise fs_error(errno.ENOTDIR, s)
            paths.check_name(rd.name, d)
            _check_reserved(rd.parent, rd.name, d)
            is_dir = node.kind is FileType.DIRECTORY
            old = rd.node
            # Linux checks the ancestry traps before anything else (do_renameat2).
            if node.ino in rd.ancestors:
                raise fs_error(errno.EINVAL, d, "cannot move a directory into itself")
            if old is not None and old.ino in rs.ancestors:
                raise fs_error(errno.ENOTEMPTY, d)
            if old is not None:
                if old.ino == node.ino:
                    return  # same file (or hard links to it): nothing to do
                if is_dir and old.kind is not FileType.DIRECTORY:
                    raise fs_error(errno.ENOTDIR, d)
                if not is_dir and old.kind is FileType.DIRECTORY:
                    raise fs_error(errno.EISDIR, d)
                if old.kind is FileType.DIRECTORY:
                    if st.listing(old.ino):
                        raise fs_error(errno.ENOTEMPTY, d)
                    st.set_dentry(rd.parent, rd.name, None)
                    st.drop_inode(old)
                    self._touch_dir(rd.parent, -1)
                else:
                    self._unlink_node(rd.parent, rd.name, old)
            st.set_dentry(rs.parent, rs.name, None)
            st.set_dentry(rd.parent, rd.name, node.ino)
            node.ctime_ns = now_ns()
            st.touch(node)
            if is_dir and rs.parent != rd.parent:
                self._touch_dir(rs.parent, -1)
                self._touch_dir(rd.parent, +1)
            else:
                self._touch_dir(rs.parent)
                if rd.parent != rs.parent:
                    self._touch_dir(rd.parent)

        self._mutate(body, s, AuditOp.RENAME, d)

    def symlink(self, target: str, path: paths.PathArg) -> None:
        """Create ``path`` as a symlink to ``target`` (which need not exist)."""
        text = os.fspath(path)
        target = paths.to_text(target)
        if not target:
            raise fs_error(errno.ENOENT, text, "empty symlink target")
        if "\x00" in target:
            raise fs_error(errno.EINVAL, text, "symlink target contains NUL")
        if paths.encoded_len(target, text) >= paths.PATH_MAX:  # Linux: PATH_MAX counts the NUL
            raise fs_error(errno.ENAMETOOLONG, text)
        self._no_ctl(text)

        def body(st: Store) -> None:
            self._create(self._new_name(text), FileType.SYMLINK, 0o777, text, target=target)

        self._mutate(body, text, AuditOp.SYMLINK, target)

    def link(self, src: paths.PathArg, dst: paths.PathArg) -> None:
        """Hard link: ``dst`` becomes another name of the inode ``src`` names."""
        s, d = os.fspath(src), os.fspath(dst)
        self._no_ctl(s, d)

        def body(st: Store) -> None:
            node = self._paths.existing(s, follow=False).node
            assert node is not None
            rd = self._paths.resolve(d, follow=False)
            if rd.node is not None or rd.name is None:
                raise fs_error(errno.EEXIST, d)
            if d.endswith("/"):  # Linux: creating "name/" that is not a directory, before EPERM
                raise fs_error(errno.ENOENT, d)
            if node.kind is FileType.DIRECTORY:
                raise fs_error(errno.EPERM, s, "hard links to directories are not allowed")
            paths.check_name(rd.name, d)
            _check_reserved(rd.parent, rd.name, d)  # type: ignore[arg-type]
            st.set_dentry(rd.parent, rd.name, node.ino)  # type: ignore[arg-type]
            node.nlink += 1
            node.ctime_ns = now_ns()
            st.touch(node)
            self._touch_dir(rd.parent)  # type: ignore[arg-type]

        self._mutate(body, d, AuditOp.LINK, s)

    def mknod(self, path: paths.PathArg, mode: int = 0o600 | stat_mod.S_IFREG, device: int = 0) -> None:
        """``os.mknod``: a regular file (empty), FIFO, socket or device node, by the type
        bits of ``mode`` (none: a regular file). Tarbox keeps the entry and its metadata;
        I/O on a FIFO, socket or device is the kernel's, on a mount (which is ``nodev``)."""
        text = os.fspath(path)
        fmt = stat_mod.S_IFMT(mode) or stat_mod.S_IFREG
        if fmt == stat_mod.S_IFDIR:
            raise fs_error(errno.EPERM, text, "mknod cannot make a directory (mkdir does)")
        try:
            kind = FileType.of_mode(fmt)
        except ValueError:
            raise fs_error(errno.EINVAL, text, f"no such file type: {fmt:#o}") from None
        if kind is FileType.SYMLINK:
            raise fs_error(errno.EINVAL, text, "mknod cannot make a symbolic link (symlink does)")
        self._no_ctl(text)

        def body(st: Store) -> None:
            rdev = device if kind in (FileType.CHAR_DEVICE, FileType.BLOCK_DEVICE) else 0
            self._create(self._new_name(text), kind, stat_mod.S_IMODE(mode), text, rdev=rdev)

        self._mutate(body, text, AuditOp.MKNOD)

    def chown(self, path: paths.PathArg, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """``os.chown``: ``-1`` keeps that one. ctime becomes now (even when nothing
        changes, as on Linux). Who may do it is the caller's to check (the kernel's, on
        a mount); Tarbox's API acts as the tenant's owner, who may."""
        text = os.fspath(path)
        for n in (uid, gid):
            if not -1 <= n < 1 << 32 or n == (1 << 32) - 1:
                raise fs_error(errno.EINVAL, text, f"no such user or group id: {n}")
        self._no_ctl(text)

        def body(st: Store) -> None:
            node = self._paths.existing(text, follow=follow_symlinks).node
            assert node is not None
            if uid != -1:
                node.uid = uid
            if gid != -1:
                node.gid = gid
            node.ctime_ns = now_ns()
            st.touch(node)

        self._mutate(body, text, AuditOp.CHOWN)

    def chmod(self, path: paths.PathArg, mode: int, *, follow_symlinks: bool = True) -> None:
        text = os.fspath(path)
        self._no_ctl(text)

        def body(st: Store) -> None:
            node = self._paths.existing(text, follow=follow_symlinks).node
            assert node is not None
            node.mode = mode & 0o7777
            node.ctime_ns = now_ns()
            st.touch(node)

        self._mutate(body, text, AuditOp.CHMOD)

    def utime(
        self,
        path: paths.PathArg,
        ns: tuple[int | None, int | None] | None = None,
        *,
        follow_symlinks: bool = True,
    ) -> None:
        """Set (atime_ns, mtime_ns); ``None`` sets both to now, a ``None`` in the pair
        keeps that one (``utimensat``'s UTIME_OMIT). ctime becomes now, unless both
        are kept: then nothing changes (as on Linux)."""
        text = os.fspath(path)
        self._no_ctl(text)
        if ns is not None and ns[0] is None and ns[1] is None:
            (self.stat if follow_symlinks else self.lstat)(text)  # ENOENT still applies
            return

        def body(st: Store) -> None:
            node = self._paths.existing(text, follow=follow_symlinks).node
            assert node is not None
            now = now_ns()
            atime, mtime = ns if ns is not None else (now, now)
            if atime is not None:
                node.atime_ns = atime
            if mtime is not None:
                node.mtime_ns = mtime
            node.ctime_ns = now
            st.touch(node)

        self._mutate(body, text, AuditOp.UTIME)
