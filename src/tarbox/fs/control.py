"""The ``/.tarbox`` control directory: history through plain file I/O.

    /.tarbox/layers/current   read: JSON of the current layer
    /.tarbox/layers/list      read: JSON list of all layers
    /.tarbox/layers/new       write a message: checkpoint
    /.tarbox/layers/switch    write a layer id or branch name: switch
    /.tarbox/stats/usage      read: JSON of bytes/inodes used and quotas

Like ZFS's ``.zfs`` with ``snapdir=hidden``, the directory is reachable by
path but not listed in ``/``, so walks and archivers never descend into it.
A view created with ``hide_control=True`` (the WASI host's) sees nothing:
every such path is ENOENT. The name is reserved at the root either way.
"""

from __future__ import annotations

import errno
import json
import posixpath
from typing import TYPE_CHECKING, Any

from tarbox.errors import fs_error
from tarbox.fs.types import FileType, Stat

if TYPE_CHECKING:
    from tarbox.fs.filesystem import Filesystem

NAME = ".tarbox"
ROOT = "/" + NAME
_DIRS = {ROOT: ["layers", "stats"], ROOT + "/layers": ["current", "list", "new", "switch"], ROOT + "/stats": ["usage"]}
_READABLE = {ROOT + "/layers/current", ROOT + "/layers/list", ROOT + "/stats/usage"}
_WRITABLE = {ROOT + "/layers/new", ROOT + "/layers/switch"}
_CONTROL_INO = 0  # synthetic entries have no real inode


def control_path(path: str) -> str | None:
    """The normalized control path if ``path`` names something under /.tarbox, else None."""
    if not isinstance(path, str) or NAME not in path:
        return None
    norm = posixpath.normpath("/" + path.lstrip("/")) if path.startswith("/") else None
    if norm is None:
        return None
    norm = "/" + norm.lstrip("/")
    return norm if norm == ROOT or norm.startswith(ROOT + "/") else None


def read(fs: Filesystem, path: str) -> bytes:
    if path in _DIRS:
        raise fs_error(errno.EISDIR, path)
    if path in _WRITABLE:
        return b""
    if path == ROOT + "/layers/current":
        layer = fs.current_layer()
        data: dict[str, Any] | list[Any] = {
            **layer.to_dict(),
            "counts": fs.layer_counts(layer).to_dict(),
            "branch": fs.current_branch(),
        }
    elif path == ROOT + "/layers/list":
        data = [layer.to_dict() for layer in fs.layers()]
    elif path == ROOT + "/stats/usage":
        u = fs.usage()
        data = {
            "used_bytes": u.used_bytes,
            "used_inodes": u.used_inodes,
            "quota_bytes": u.quota_bytes,
            "quota_inodes": u.quota_inodes,
        }
    else:
        raise fs_error(errno.ENOENT, path)
    return (json.dumps(data, indent=2) + "\n").encode()


def write(fs: Filesystem, path: str, data: bytes) -> None:
    if path not in _WRITABLE:
        if path in _DIRS:
            raise fs_error(errno.EISDIR, path)
        raise fs_error(errno.EPERM if path in _READABLE else errno.ENOENT, path, "control file is read-only")
    text = bytes(data).decode("utf-8", "replace").strip()
    if path.endswith("/new"):
        fs.checkpoint(text)
    else:
        if not text:
            raise fs_error(errno.EINVAL, path, "write a layer id or a branch name")
        fs.switch(int(text) if text.isdigit() else text)


def listdir(path: str) -> list[str]:
    if path in _DIRS:
        return list(_DIRS[path])
    if path in _READABLE or path in _WRITABLE:
        raise fs_error(errno.ENOTDIR, path)
    raise fs_error(errno.ENOENT, path)


def stat(fs: Filesystem, path: str) -> Stat:
    now = fs.generation or 0
    if path in _DIRS:
        return Stat(_CONTROL_INO, FileType.DIRECTORY, 0o555, 2, 0, now, now, now)
    if path in _READABLE:
        return Stat(_CONTROL_INO, FileType.FILE, 0o444, 1, len(read(fs, path)), now, now, now)
    if path in _WRITABLE:
        return Stat(_CONTROL_INO, FileType.FILE, 0o222, 1, 0, now, now, now)
    raise fs_error(errno.ENOENT, path)


def refuse(path: str) -> None:
    """Structural changes under /.tarbox are not allowed."""
    raise fs_error(errno.EPERM, path, "the /.tarbox control directory cannot be changed")
