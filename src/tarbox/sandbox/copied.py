"""The workspace of a native run where overlayfs cannot be mounted in a user namespace
(an older kernel, a container that forbids it): a private copy of the lower tree, and
what the run changed found afterwards by comparing the copy with a manifest taken
when it was made.

Copies are kept between runs (``<home>/exec/<tenant>/spares/<k>``): a run whose
changes were merged into the tree leaves its copy equal to the tree, marked clean at
that time, and the next run brings that copy to the tree it leases by copying only
what was placed in the tree since (the tree's files are replaced, never written
through, so a file placed later has a later ctime). A copy of a run that failed,
conflicted or was killed is removed, never reused.

Each entry's inode and ctime are in the manifest. A ctime cannot be set by a process
(``utime`` sets the other two times and moves the ctime too), so an entry whose inode
and ctime are as they were is as it was, content included, and is not read. What the
comparison finds is said as the same operations an overlay's upper directory gives
(upper.py), so the write-back, its conflict check and the merge are one code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat as stat_mod
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tarbox.sandbox.upper import Op, OpKind, leaf_op


@dataclass(frozen=True, slots=True)
class Seen:
    """One entry of the copy as it was made."""

    ino: int
    ctime_ns: int
    is_dir: bool


class CopyFailed(OSError):
    """The private copy could not be made (space, permissions): the run does not start."""


# a tree file placed this close to a copy's clean mark may carry a ctime before it
# (the kernel's coarse clock); it is copied again rather than trusted
CLOCK_SLACK_NS = 50_000_000


@dataclass(slots=True)
class Spare:
    """A copy taken for one run: ``path`` is the run's workspace; ``manifest`` how it
    was when the run started. Given back clean or thrown away: :meth:`Spares.give_back`."""

    path: Path
    manifest: dict[str, Seen]
    _fd: int


class Spares:
    """The kept copies of one tenant's tree (see the module docstring)."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "spares"

    def take(self, tree: Path) -> Spare:
        """A copy equal to ``tree``: a clean kept one brought up to it, else a new one."""
        self.dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the tenant's, 0700 (pruned since?)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        for entry in sorted(self.dir.glob("*.clean")):
            k = entry.stem
            fd = self._lock(k)
            if fd < 0:
                continue
            try:
                clean_at = int(entry.read_text())
                entry.unlink()  # in use: a crash from here on leaves it unclean, and it goes
            except (OSError, ValueError):
                os.close(fd)
                continue
            try:
                return Spare(self.dir / k, bring_up(tree, self.dir / k, clean_at), fd)
            except OSError:
                _remove(self.dir / k)  # made new below
                os.close(fd)
                break
        k = str(time.time_ns())
        fd = self._lock(k)
        try:
            return Spare(self.dir / k, make_copy(tree, self.dir / k), fd)
        except BaseException:
            _remove(self.dir / k)
            os.close(fd)
            raise

    def give_back(self, spare: Spare, *, clean: bool) -> None:
        """``clean``: the copy equals the tree now (the run's changes merged into it, or
        none made): kept for the next run; else removed."""
        try:
            if clean:
                tmp = self.dir / f"{spare.path.name}.tmp"
                tmp.write_text(str(time.time_ns()))
                os.replace(tmp, self.dir / f"{spare.path.name}.clean")
            else:
                _remove(spare.path)
        finally:
            os.close(spare._fd)

    def collect(self) -> None:
        """Remove the copies nobody holds that are not clean (their run died)."""
        if not self.dir.is_dir():
            return
        for entry in self.dir.iterdir():
            if not entry.is_dir() or (self.dir / f"{entry.name}.clean").exists():
                continue
            fd = self._lock(entry.name)
            if fd >= 0:
                try:
                    _remove(entry)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir / f"{entry.name}.lock")
                finally:
                    os.close(fd)

    def _lock(self, k: str) -> int:
        fd = os.open(self.dir / f"{k}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return -1
        return fd


def bring_up(tree: Path, copy: Path, clean_at: int) -> dict[str, Seen]:
    """``copy`` (equal to ``tree`` as it was at ``clean_at``, ns) made equal to ``tree``
    now, copying only what was placed in the tree since; returns its manifest."""
    manifest: dict[str, Seen] = {}
    trusted_before = clean_at - CLOCK_SLACK_NS
    links: dict[tuple[int, int], Path] = {}

    def visit(t: Path, c: Path, rel_dir: str) -> None:
        with os.scandir(t) as it:
            entries = {e.name: e for e in it}
        with os.scandir(c) as it:
            for stale in [e.name for e in it if e.name not in entries]:
                _remove(c / stale)
        for name, e in entries.items():
            rel = f"{rel_dir}/{name}" if rel_dir else name
            ts = e.stat(follow_symlinks=False)
            there = c / name
            try:
                cs = os.lstat(there)
            except FileNotFoundError:
                cs = None
            if stat_mod.S_ISDIR(ts.st_mode):
                if cs is not None and not stat_mod.S_ISDIR(cs.st_mode):
                    _remove(there)
                    cs = None
                if cs is None:
                    os.mkdir(there, 0o700)
                elif cs.st_mode & 0o700 != 0o700:
                    os.chmod(there, 0o700)  # its final mode is set after its entries
                visit(Path(e.path), there, rel)
                os.chmod(there, stat_mod.S_IMODE(ts.st_mode))
                os.utime(there, ns=(ts.st_atime_ns, ts.st_mtime_ns))
            elif not _kept(ts, cs, e.path, there, trusted_before):
                if cs is not None:
                    _remove(there)
                key = (ts.st_dev, ts.st_ino)
                if ts.st_nlink > 1 and key in links:
                    os.link(links[key], there)
                else:
                    _copy_entry(e.path, there, ts)
                    links[key] = there
            st = os.lstat(there)
            manifest[rel] = Seen(st.st_ino, st.st_ctime_ns, stat_mod.S_ISDIR(st.st_mode))

    os.chmod(copy, 0o700)
    visit(tree, copy, "")
    st = os.lstat(tree)
    os.chmod(copy, stat_mod.S_IMODE(st.st_mode))
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    return manifest


def _kept(ts, cs, tree_path: str, there: Path, trusted_before: int) -> bool:
    """Is the copy's entry (``cs``) the tree's (``ts``) already?"""
    if cs is None or stat_mod.S_IFMT(ts.st_mode) != stat_mod.S_IFMT(cs.st_mode):
        return False
    if stat_mod.S_ISLNK(ts.st_mode):
        return os.readlink(tree_path) == os.readlink(there)
    if ts.st_nlink > 1 or cs.st_nlink > 1:
        return False  # links are made again, to keep which names share a file
    return ts.st_ctime_ns < trusted_before and (ts.st_size, ts.st_mtime_ns, ts.st_mode) == (
        cs.st_size,
        cs.st_mtime_ns,
        cs.st_mode,
    )


def _copy_entry(src: str, dst: Path, st) -> None:
    if stat_mod.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        return
    if stat_mod.S_ISFIFO(st.st_mode):
        os.mkfifo(dst, stat_mod.S_IMODE(st.st_mode))
    elif stat_mod.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
        os.chmod(dst, stat_mod.S_IMODE(st.st_mode))
    else:
        return
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():

        def writable_then_retry(func, p, info):  # a directory the run made read-only
            os.chmod(os.path.dirname(p), 0o700)
            func(p)

        shutil.rmtree(path, onerror=writable_then_retry)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def make_copy(tree: Path, dst: Path) -> dict[str, Seen]:
    """``tree`` copied to the new directory ``dst`` (reflinks where the filesystem has
    them, hard links kept), with its manifest: relative path -> :class:`Seen`."""
    dst.mkdir(mode=0o700, exist_ok=True)
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
            else:
                op = leaf_op(p, e.path, st, first_name)
                if op is not None:
                    ops.append(op)
                elif was is not None:  # a socket or device node took the name: the old entry goes
                    ops.append(Op(OpKind.DELETE, p))

    visit(copy, "", root, fresh=False)
    return ops
