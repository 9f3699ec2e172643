"""Copying a local file or directory tree into a tenant's filesystem: the one loop
that ``tarbox put``, the CPython runtime's standard library install and the tests use.

It owns the walk of the local tree and the streaming of each file; it does not own
progress display (callers pass ``on_bytes``) or write-back windows (callers batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tarbox.fs import paths
from tarbox.fs.filesystem import Filesystem

CHUNK = 1 << 20


def local_files(local: Path, remote: str) -> tuple[list[str], list[tuple[Path, str]]]:
    """The directories to create and the (local file or symlink, remote path) pairs of
    copying ``local`` to ``remote``, parents before children."""
    if not local.is_dir():
        return [], [(local, remote)]
    dirs, files = [remote], []
    for root, subdirs, names in os.walk(local):
        rel = Path(root).relative_to(local)
        base = remote if str(rel) == "." else paths.join(remote, rel.as_posix())
        for d in sorted(subdirs):
            if (Path(root) / d).is_symlink():  # os.walk lists a symlink to a directory here
                files.append((Path(root) / d, paths.join(base, d)))
            else:
                dirs.append(paths.join(base, d))
        files += [(Path(root) / n, paths.join(base, n)) for n in sorted(names)]
    return dirs, files


def copy_in(fs: Filesystem, local: Path, remote: str, *, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy ``local`` (a file or a tree; symlinks as symlinks) to ``remote``, streaming
    each file in ``CHUNK``-sized pieces. Existing directories are reused."""
    dirs, files = local_files(local, remote)
    for d in dirs:
        fs.mkdir(d, parents=True, exist_ok=True)
    for src, dst in files:
        if src.is_symlink():
            fs.symlink(os.readlink(src), dst)
            continue
        with open(src, "rb") as fin, fs.open(dst, "wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
