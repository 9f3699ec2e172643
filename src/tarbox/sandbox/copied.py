"""The workspace of a native run where overlayfs cannot be mounted in a user namespace
(an older kernel, a container that forbids it): a private copy of the lower tree, and
what the run changed found afterwards by comparing the copy with a manifest taken
when it was made.

Each entry's inode and ctime are in the manifest. A ctime cannot be set by a process
(``utime`` sets the other two times and moves the ctime too), so an entry whose inode
and ctime are as they were is as it was, content included, and is not read. What the
comparison finds is said as the same operations an overlay's upper directory gives
(upper.py), so the write-back, its conflict check and the merge are one code.
"""

from __future__ import annotations

import os
import stat as stat_mod
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tarbox.sandbox.upper import Op, OpKind


@dataclass(frozen=True, slots=True)
class Seen:
    """One entry of the copy as it was made."""

    ino: int
    ctime_ns: int
    is_dir: bool


class CopyFailed(OSError):
    """The private copy could not be made (space, permissions): the run does not start."""


def make_copy(tree: Path, dst: Path) -> dict[str, Seen]:
    """``tree`` copied to the new directory ``dst`` (reflinks where the filesystem has
    them, hard links kept), with its manifest: relative path -> :class:`Seen`."""
    dst.mkdir(mode=0o700)
    # cp keeps modes, times, links and special files, and clones extents where it can
    p = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--no-target-directory", f"{tree}/.", str(dst)],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )
    if p.returncode != 0:
        raise CopyFailed(f"copying the workspace for the run failed: {p.stderr.decode(errors='replace').strip()}")
    manifest: dict[str, Seen] = {}
    for top, dirs, files in os.walk(dst):
        rel_top = os.path.relpath(top, dst)
        for name in dirs + files:
            rel = name if rel_top == "." else f"{rel_top}/{name}"
            st = os.lstat(os.path.join(top, name))
            manifest[rel] = Seen(st.st_ino, st.st_ctime_ns, stat_mod.S_ISDIR(st.st_mode))
    return manifest


def scan(copy: Path, manifest: dict[str, Seen], root: str) -> list[Op]:
    """What the run did to ``copy``, as operations on the tenant's paths (``root``: the
    workspace's path), parents before their children."""
    names: dict[str, set[str]] = {}
    for rel in manifest:
        parent, _, name = rel.rpartition("/")
        names.setdefault(parent, set()).add(name)
    ops: list[Op] = []
    first_name: dict[tuple[int, int], str] = {}

    def visit(local: Path, rel_dir: str, path: str, fresh: bool) -> None:
        """``fresh``: the directory is new (or replaced), so all of it is new."""
        with os.scandir(local) as it:
            entries = sorted(it, key=lambda e: e.name)
        if not fresh:
            for gone in sorted(names.get(rel_dir, set()) - {e.name for e in entries}):
                ops.append(Op(OpKind.DELETE, f"{path.rstrip('/')}/{gone}"))
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            p = f"{path.rstrip('/')}/{e.name}"
            st = e.stat(follow_symlinks=False)
            was = None if fresh else manifest.get(rel)
            same = was is not None and (was.ino, was.ctime_ns) == (st.st_ino, st.st_ctime_ns)
            mode = stat_mod.S_IMODE(st.st_mode)
            if stat_mod.S_ISDIR(st.st_mode):
                if was is not None and was.is_dir and was.ino != st.st_ino:  # removed, then made again
                    ops.append(Op(OpKind.REPLACE_DIR, p, mode=mode, mtime_ns=st.st_mtime_ns))
                    visit(Path(e.path), rel, p, fresh=True)
                    continue
                if not same:
                    ops.append(Op(OpKind.DIR, p, mode=mode, mtime_ns=st.st_mtime_ns))
                visit(Path(e.path), rel, p, fresh=was is None or not was.is_dir)
            elif same:  # a new name of a file moves its ctime: every name of it is "changed" then
                continue
            elif stat_mod.S_ISLNK(st.st_mode):
                ops.append(Op(OpKind.SYMLINK, p, target=os.readlink(e.path), mtime_ns=st.st_mtime_ns))
            elif stat_mod.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in first_name:
                    ops.append(Op(OpKind.LINK, p, target=first_name[key]))
                    continue
                first_name[key] = p
                ops.append(Op(OpKind.FILE, p, Path(e.path), mode, st.st_mtime_ns))
            elif stat_mod.S_ISFIFO(st.st_mode):
                ops.append(Op(OpKind.FIFO, p, mode=mode, mtime_ns=st.st_mtime_ns))
            elif was is not None:  # a socket or device node took the name: the old entry goes
                ops.append(Op(OpKind.DELETE, p))

    visit(copy, "", root, fresh=False)
    return ops
