"""Path validation and splitting, shared by the Python API, the CLI and the WASI host.

Paths are text (UTF-8 when encoded); a whole path may not exceed 4096 bytes
or contain NUL (checked first); a component may not exceed 255 bytes (checked
when the walk reaches it).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from tarbox.errors import fs_error

NAME_MAX = 255
PATH_MAX = 4096

PathArg = str | os.PathLike[str]  # what the Filesystem's methods take as a path


@dataclass(frozen=True, slots=True)
class SplitPath:
    absolute: bool
    parts: tuple[str, ...]  # may contain "." and ".." (resolved by the walker)
    trailing_slash: bool


def to_text(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    path = os.fspath(path)
    if isinstance(path, bytes):
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            raise fs_error(errno.EILSEQ, repr(path), "path is not valid UTF-8") from None
    if not isinstance(path, str):
        raise TypeError(f"path must be str, bytes or os.PathLike, not {type(path).__name__}")
    return path


def encoded_len(text: str, path: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise fs_error(errno.EILSEQ, path, "path is not valid UTF-8") from None


def split(path: str | bytes | os.PathLike[str] | os.PathLike[bytes], limit: int | None = PATH_MAX) -> SplitPath:
    """``path`` in parts; longer than ``limit`` bytes is ENAMETOOLONG (``None``: no
    limit, for a FUSE mount, whose paths are put together from the mount's root while
    the kernel has checked PATH_MAX on what each caller passed)."""
    text = to_text(path)
    if "\x00" in text:
        raise fs_error(errno.EINVAL, text.replace("\x00", "\\0"), "path contains a NUL byte")
    if text == "":
        raise fs_error(errno.ENOENT, text, "empty path")
    if limit is not None and encoded_len(text, text) > limit:
        raise fs_error(errno.ENAMETOOLONG, text[:64] + "...", "path longer than 4096 bytes")
    parts = tuple(p for p in text.split("/") if p)
    return SplitPath(text.startswith("/"), parts, text.endswith("/") and len(text) > 1)


def check_component(name: str, path: str) -> None:
    """A name is checked against NAME_MAX when the walk reaches it, as Linux and
    wasmtime do: a missing directory earlier in the path is ENOENT first."""
    if overlong(name):
        raise fs_error(errno.ENAMETOOLONG, path[:64] + "...", "name longer than 255 bytes")


def overlong(name: str) -> bool:
    """Over NAME_MAX bytes (such a name cannot exist, so where it is refused is a matter of order)."""
    return len(name) > NAME_MAX // 4 and encoded_len(name, name) > NAME_MAX


def final_name(path: str) -> str:
    """The last component of ``path`` (trailing slashes removed first)."""
    return without_trailing_slash(path)[0].rpartition("/")[2]


def check_name(name: str, path: str) -> None:
    """Validate a single new directory-entry name."""
    if name in ("", ".", ".."):
        raise fs_error(errno.EINVAL, path, "invalid name")
    if "/" in name or "\x00" in name:
        raise fs_error(errno.EINVAL, path, "invalid character in name")
    if encoded_len(name, path) > NAME_MAX:
        raise fs_error(errno.ENAMETOOLONG, path, "name longer than 255 bytes")


def without_trailing_slash(path: str) -> tuple[str, bool]:
    """``path`` without its trailing slashes, and whether it had any. rename(2) looks
    its final names up without following symlinks even when a slash follows them."""
    bare = path.rstrip("/")
    return (bare, len(bare) != len(path)) if bare else (path, False)


def join(parent: str, name: str) -> str:
    return (parent.rstrip("/") + "/" + name) if parent != "/" else "/" + name
