"""tar import and export, streaming (memory bounded by one block per file, not by
the archive), preserving modes, mtimes, symlinks and hard links.

Compression: none, gzip (``.gz``/``.tgz``) or zstd (``.zst``/``.tzst``), chosen
by file name on export and by magic bytes on import.

Import refuses unsafe archives with :class:`UnsafeArchiveError` naming the
member: absolute names, ``..`` components, NUL, symlinks whose target is
absolute or climbs out of the import root, hard links to anything but an
earlier member. A seekable archive (a file) is checked completely before
anything is written, so a refused archive changes nothing; a stream (stdin) is
checked member by member, and what came before the bad member stays (the error
says how many). Owners (numeric uid and gid) are kept both ways, as ``tar`` run by
root keeps them; FIFOs are kept both ways; device nodes are exported, and skipped
and counted on import (an uploaded archive does not make devices; ``mknod`` on a
mount, by root, does); sockets, which tar cannot hold, are skipped on export.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat as stat_mod
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import zstandard

from tarbox.errors import TarboxError
from tarbox.fs import Filesystem, FileType

_CHUNK = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class UnsafeArchiveError(TarboxError, ValueError):
    """A tar member would land outside the import root, or is malformed."""


@dataclass(slots=True)
class TarStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    skipped: int = 0  # import: device nodes; export: sockets
    bytes: int = 0
    special: int = 0  # FIFOs (and, exported, device nodes)


def compression_for(name: str) -> str | None:
    """ "gz", "zst" or None, from an archive's file name."""
    n = name.lower()
    if n.endswith((".gz", ".tgz")):
        return "gz"
    if n.endswith((".zst", ".tzst", ".zstd")):
        return "zst"
    return None


# ---------------------------------------------------------------------- export


def export_tar(
    fs: Filesystem,
    out: BinaryIO,
    path: str = "/",
    *,
    compression: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> TarStats:
    """Write the tree under ``path`` to ``out`` as a tar stream (names relative to ``path``)."""
    stats = TarStats()
    root = posixpath.normpath("/" + path.lstrip("/"))
    zw = None
    if compression == "zst":
        zw = zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)
        sink: BinaryIO = zw
        mode: Literal["w|", "w|gz"] = "w|"
    elif compression == "gz":
        sink, mode = out, "w|gz"
    elif compression is None:
        sink, mode = out, "w|"
    else:
        raise ValueError(f"unknown compression {compression!r} (gz, zst or none)")
    seen: dict[int, str] = {}  # ino -> archive name of its first link
    # inside write-back, opens are served under a read delegation: no round trip per file
    # (a read-only view, e.g. of a layer, never changes and needs none)
    delegation = nullcontext() if fs.read_only else fs.write_back(1.0)
    with delegation, tarfile.open(fileobj=sink, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        # tarfile's default 16 KiB reads cost a call each (TarFile's copybufsize is not in typeshed)
        tar.copybufsize = _CHUNK  # type: ignore[attr-defined]
        if not fs.is_dir(root):
            _add(fs, tar, root, posixpath.basename(root), seen, stats, progress)
        else:
            for top, dirs, files in fs.walk(root):
                dirs.sort()
                rel_top = posixpath.relpath(top, root)
                if rel_top != ".":
                    _add(fs, tar, top, rel_top, seen, stats, progress)
                for name in sorted(files):
                    full = posixpath.join(top, name)
                    _add(fs, tar, full, posixpath.normpath(posixpath.join(rel_top, name)), seen, stats, progress)
    if zw is not None:
        zw.flush(zstandard.FLUSH_FRAME)
        zw.close()
    return stats


def _add(fs: Filesystem, tar: tarfile.TarFile, full: str, name: str, seen, stats: TarStats, progress) -> None:
    st = fs.lstat(full)
    info = tarfile.TarInfo(name)
    info.mode = st.mode
    info.mtime = st.mtime_ns / 1e9
    info.uid, info.gid = st.uid, st.gid
    if st.type is FileType.SOCKET:
        stats.skipped += 1
    elif st.type.is_special:
        info.type = _SPECIAL_TYPES[st.type]
        info.devmajor, info.devminor = os.major(st.rdev), os.minor(st.rdev)
        tar.addfile(info)
        stats.special += 1
    elif st.type is FileType.DIRECTORY:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        stats.dirs += 1
    elif st.type is FileType.SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = fs.readlink(full)
        tar.addfile(info)
        stats.symlinks += 1
    elif st.nlink > 1 and st.ino in seen:
        info.type = tarfile.LNKTYPE
        info.linkname = seen[st.ino]
        tar.addfile(info)
        stats.hardlinks += 1
    else:
        seen[st.ino] = name
        info.size = st.size
        with fs.open(full, "rb") as f:
            tar.addfile(info, _Counted(f, progress) if progress else f)
        stats.files += 1
        stats.bytes += st.size


_SPECIAL_TYPES = {
    FileType.FIFO: tarfile.FIFOTYPE,
    FileType.CHAR_DEVICE: tarfile.CHRTYPE,
    FileType.BLOCK_DEVICE: tarfile.BLKTYPE,
}


class _Counted(io.RawIOBase):
    """Reports bytes as tarfile reads them (for progress bars)."""

    def __init__(self, f, progress: Callable[[int], None]) -> None:
        self._f, self._progress = f, progress

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._progress(len(data))
        return data


# ---------------------------------------------------------------------- import


def _open_stream(src: BinaryIO) -> tuple[tarfile.TarFile, Any]:
    """A streaming tar reader over ``src``, decompressing zstd or gzip by magic bytes."""
    peek = src.peek(4)[:4] if hasattr(src, "peek") else b""
    if not peek and src.seekable():
        pos = src.tell()
        peek = src.read(4)
        src.seek(pos)
    if peek.startswith(_ZSTD_MAGIC):
        zr = zstandard.ZstdDecompressor().stream_reader(src, closefd=False)
        return tarfile.open(fileobj=zr, mode="r|"), zr
    return tarfile.open(fileobj=src, mode="r|*"), None


def _safe_name(name: str) -> str:
    """The member's path relative to the import root, or UnsafeArchiveError."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"member {name!r}: NUL in its name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"member {name!r}: absolute name (archives must hold relative paths)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r}: '..' would leave the import directory")
    return "/".join(parts)


def _check_member(m: tarfile.TarInfo, earlier: set[str]) -> str:
    rel = _safe_name(m.name)
    if m.issym():
        target = m.linkname
        if target.startswith("/") or "\x00" in target:
            raise UnsafeArchiveError(f"member {m.name!r}: symlink to absolute path {target!r}")
        depth = 0
        for p in posixpath.join(posixpath.dirname(rel), target).split("/"):
            if p == "..":
                depth -= 1
            elif p not in ("", "."):
                depth += 1
            if depth < 0:
                raise UnsafeArchiveError(f"member {m.name!r}: symlink {target!r} points outside the import directory")
    elif m.islnk():
        try:
            target = _safe_name(m.linkname)
        except UnsafeArchiveError as exc:
            raise UnsafeArchiveError(f"member {m.name!r}: hard link to {m.linkname!r} is unsafe ({exc})") from None
        if target not in earlier:
            raise UnsafeArchiveError(f"member {m.name!r}: hard link to {m.linkname!r}, which is not an earlier member")
    return rel


@contextmanager
def _reading(src: BinaryIO) -> Iterator[tarfile.TarFile]:
    """The archive as a stream of members; a malformed one is UnsafeArchiveError."""
    zr = None
    try:
        tar, zr = _open_stream(src)
        with tar:
            yield tar
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"not a valid tar archive: {exc}") from exc
    finally:
        if zr is not None:
            zr.close()


def check_tar(src: BinaryIO) -> int:
    """Read a whole archive's headers and refuse it if any member is unsafe; returns how many names it holds."""
    earlier: set[str] = set()
    with _reading(src) as tar:
        for m in tar:
            earlier.add(_check_member(m, earlier))
    return len(earlier)


def import_tar(
    fs: Filesystem,
    src: BinaryIO,
    path: str = "/",
    *,
    progress: Callable[[int], None] | None = None,
) -> TarStats:
    """Extract the tar stream ``src`` under ``path`` (created if missing). A seekable
    ``src`` is checked whole first (see the module docstring)."""
    if src.seekable():
        start = src.tell()
        check_tar(src)
        src.seek(start)
    root = posixpath.normpath("/" + path.lstrip("/"))
    fs.makedirs(root, exist_ok=True)
    stats = TarStats()
    earlier: set[str] = set()
    dir_times: list[tuple[str, int, float]] = []
    with _reading(src) as tar, fs.write_back(0.5):
        for m in tar:
            try:
                rel = _check_member(m, earlier)
            except UnsafeArchiveError as exc:
                done = stats.files + stats.dirs + stats.symlinks + stats.hardlinks
                raise UnsafeArchiveError(f"{exc}; stopped after {done} members (they were imported)") from None
            earlier.add(rel)
            dst = root if not rel else posixpath.join(root, rel)
            with fs.acting_as(m.uid, m.gid):  # what it creates is the member's owner's
                _extract(fs, tar, m, dst, root, stats, dir_times, progress)
    for dst, mode, mtime in reversed(dir_times):  # children changed their directories' times
        fs.chmod(dst, mode)
        ns = int(mtime * 1e9)
        fs.utime(dst, (ns, ns))
    return stats


def _extract(fs: Filesystem, tar, m: tarfile.TarInfo, dst: str, root: str, stats, dir_times, progress) -> None:
    parent = posixpath.dirname(dst)
    if dst != root and not fs.is_dir(parent):
        fs.makedirs(parent, exist_ok=True)
    ns = int(m.mtime * 1e9)
    if m.isdir():
        if not fs.is_dir(dst):
            fs.mkdir(dst)
        dir_times.append((dst, m.mode & 0o7777, m.mtime))
        stats.dirs += 1
        return
    if (m.issym() or m.islnk() or m.isfile() or m.isfifo()) and fs.lexists(dst):
        if fs.lstat(dst).is_dir:
            raise UnsafeArchiveError(f"member {m.name!r}: a directory of that name exists")
        fs.remove(dst)  # replaced, as tar does (a symlink is replaced, never followed)
    if m.issym():
        fs.symlink(m.linkname, dst)
        fs.utime(dst, (ns, ns), follow_symlinks=False)
        stats.symlinks += 1
    elif m.islnk():
        fs.link(posixpath.join(root, _safe_name(m.linkname)), dst)
        stats.hardlinks += 1
    elif m.isfile():
        data = tar.extractfile(m)
        with fs.open(dst, "wb") as out:
            while chunk := data.read(_CHUNK):
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        fs.chmod(dst, m.mode & 0o7777)
        fs.utime(dst, (ns, ns))
        stats.files += 1
        stats.bytes += m.size
    elif m.isfifo():
        fs.mknod(dst, stat_mod.S_IFIFO | (m.mode & 0o7777))
        fs.utime(dst, (ns, ns))
        stats.special += 1
    else:
        stats.skipped += 1
