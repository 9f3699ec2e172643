"""fsspec filesystem for Tarbox, registered as protocol ``tarbox`` (entry point
``fsspec.specs``), so every fsspec-aware tool reads and writes tenants' files:

    fsspec.open("tarbox://agent-1/workspace/data.csv")       # tenant in the URL
    pandas.read_csv("tarbox://agent-1/workspace/data.csv")
    fsspec.filesystem("tarbox", tenant="agent-1", layer=7)    # read-only view of a layer

Options (``storage_options``): ``tenant`` (name or id; the URL's host part sets
it), ``layer`` (a layer id: a read-only view of it), ``database_url`` (PostgreSQL URL;
default ``$TARBOX_DATABASE_URL``, else the embedded server), ``read_only``,
``auto_mkdir`` (default true: writing a file creates its missing parent
directories, as fsspec's tools expect of object stores).
Paths are absolute within the tenant (``/workspace/data.csv``).

Files are Tarbox's own streaming file objects (buffered), so a written file is
published whole at close, like every descriptor write (docs/design.md).
"""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fsspec.spec import AbstractFileSystem

import tarbox
from tarbox.fs import Filesystem, FileType, Stat

_CHUNK = 1 << 20
_clients: dict[str | None, tarbox.Tarbox] = {}
_clients_lock = threading.Lock()


def _client(url: str | None) -> tarbox.Tarbox:
    """One client (its pools and caches) per database per process."""
    with _clients_lock:
        tb = _clients.get(url)
        if tb is None:
            tb = _clients[url] = tarbox.connect(url)
        return tb


_KINDS = {FileType.FILE: "file", FileType.DIRECTORY: "directory", FileType.SYMLINK: "link"}


class TarboxFileSystem(AbstractFileSystem):
    """One tenant's filesystem (optionally one layer of it) as an fsspec filesystem."""

    protocol = "tarbox"
    root_marker = "/"
    cachable = True

    def __init__(
        self,
        tenant: str | None = None,
        *,
        layer: int | None = None,
        database_url: str | None = None,
        read_only: bool = False,
        auto_mkdir: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if tenant is None:
            raise ValueError("tarbox: name the tenant (tarbox://TENANT/path or tenant=...)")
        self.tenant = str(tenant)
        self.layer = None if layer is None else int(layer)
        self.auto_mkdir = auto_mkdir
        self.tb = _client(database_url)
        self.fs: Filesystem = self.tb.filesystem(self.tenant, layer=self.layer, read_only=read_only)

    # ------------------------------------------------------------------ paths

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("tarbox://"):
            path = "/" + path[len("tarbox://") :].partition("/")[2]  # drop the tenant
        elif path.startswith("tarbox:"):
            path = path[len("tarbox:") :]
        path = "/" + path.strip("/")
        return path

    @staticmethod
    def _get_kwargs_from_urls(path):
        parts = urlsplit(str(path))
        return {"tenant": parts.netloc} if parts.scheme == "tarbox" and parts.netloc else {}

    def unstrip_protocol(self, name: str) -> str:
        return f"tarbox://{self.tenant}{self._strip_protocol(name)}"

    # --------------------------------------------------------------- metadata

    def _info(self, path: str, st: Stat, lst: Stat | None = None) -> dict:
        link = lst is not None and lst.is_symlink
        return {
            "name": path,
            "size": st.size,
            "type": "directory" if st.is_dir else "file",
            "mode": st.st_mode,
            "ino": st.ino,
            "nlink": st.nlink,
            "mtime": st.mtime_ns / 1e9,
            "islink": link,
        }

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        lst = self.fs.lstat(path)
        st = self.fs.stat(path) if lst.is_symlink else lst
        return self._info(path, st, lst)

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        if not self.fs.is_dir(path):
            return [self.info(path)] if detail else [path]
        base = path.rstrip("/")
        entries = self.fs.scandir(path)
        names = [f"{base}/{e.name}" for e in entries]
        if not detail:
            return names
        out = []
        for e, name in zip(entries, names, strict=True):
            if e.type is FileType.SYMLINK:
                out.append(self.info(name))
            else:
                out.append(self._info(name, self.fs.lstat(name)))
        return out

    def exists(self, path, **kwargs):
        return self.fs.exists(self._strip_protocol(path))

    def isdir(self, path):
        return self.fs.is_dir(self._strip_protocol(path))

    def isfile(self, path):
        return self.fs.is_file(self._strip_protocol(path))

    def modified(self, path):
        return datetime.fromtimestamp(self.fs.stat(self._strip_protocol(path)).mtime_ns / 1e9, tz=UTC)

    def created(self, path):
        """Tarbox keeps no birth time; the change time is the closest it has."""
        return datetime.fromtimestamp(self.fs.stat(self._strip_protocol(path)).ctime_ns / 1e9, tz=UTC)

    # --------------------------------------------------------------- mutation

    def _parents(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if self.auto_mkdir and parent and not self.fs.is_dir(parent):
            self.fs.makedirs(parent, exist_ok=True)

    def mkdir(self, path, create_parents=True, **kwargs):
        self.fs.mkdir(self._strip_protocol(path), parents=create_parents)

    def makedirs(self, path, exist_ok=False):
        path = self._strip_protocol(path)
        if not exist_ok and self.fs.exists(path):
            raise FileExistsError(path)
        self.fs.makedirs(path, exist_ok=True)

    def rmdir(self, path):
        self.fs.rmdir(self._strip_protocol(path))

    def rm_file(self, path):
        """fsspec's ``rm`` calls this for directories too (deepest first)."""
        path = self._strip_protocol(path)
        if self.fs.lstat(path).is_dir:
            self.fs.rmdir(path)
        else:
            self.fs.remove(path)

    _rm = rm_file

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        """A rename when it is one path to another (atomic, O(1) even for directories);
        lists and globs take fsspec's copy-then-delete route."""
        if isinstance(path1, str) and isinstance(path2, str) and not any(c in path1 for c in "*?["):
            src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
            if self.fs.is_dir(dst) and not self.fs.is_dir(src):
                dst = f"{dst.rstrip('/')}/{src.rsplit('/', 1)[1]}"
            self.fs.rename(src, dst)
            return
        super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def cp_file(self, path1, path2, **kwargs):
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.fs.is_dir(src):
            self.fs.makedirs(dst, exist_ok=True)
            return
        self._parents(dst)
        with self.fs.open(src, "rb") as fin, self.fs.open(dst, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                fout.write(chunk)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        path = self._strip_protocol(path)
        if mode == "create" and self.fs.exists(path):
            raise FileExistsError(path)
        self._parents(path)
        self.fs.write_file(path, value)

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        if start is None and end is None:
            return self.fs.read_file(path)
        with self.fs.open(path, "rb") as f:
            size = f.stat().size
            start = 0 if start is None else (start if start >= 0 else max(0, size + start))
            end = size if end is None else (end if end >= 0 else max(0, size + end))
            f.seek(start)
            return f.read(max(0, end - start))

    def touch(self, path, truncate=True, **kwargs):
        path = self._strip_protocol(path)
        if truncate or not self.fs.exists(path):
            self._parents(path)
            self.fs.write_file(path, b"")
        else:
            self.fs.utime(path, None)

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        path = self._strip_protocol(path)
        if "r" not in mode:
            self._parents(path)
        raw = self.fs.open(path, mode if "b" in mode else mode + "b")
        size = block_size if isinstance(block_size, int) and block_size > 0 else io.DEFAULT_BUFFER_SIZE
        if raw.readable() and raw.writable():
            return io.BufferedRandom(raw, size)
        return io.BufferedWriter(raw, size) if raw.writable() else io.BufferedReader(raw, size)

    def sign(self, path, expiration=100, **kwargs):
        raise NotImplementedError("Tarbox files have no URLs outside the database")
