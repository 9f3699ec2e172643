"""Path resolution of a tenant's filesystem: the walk from a directory through names
and symlinks to what a path names, physical as in POSIX (``a/..`` is the parent of
what ``a`` really is, ``..`` at the root stays there, more than 40 symlinks in one
resolution is ELOOP), and its sandboxed form for the WASI host (``resolve_beneath``).

``PathWalk`` is a part of ``Filesystem``, held by it (one per view). It reads the
store's cached lookups and changes nothing: what an operation does with the result
is ``filesystem.py``'s. The walker is also the one place that refuses a name over
NAME_MAX.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from dataclasses import dataclass

from tarbox.errors import SandboxEscapeError, fs_error
from tarbox.fs import paths
from tarbox.fs.records import ROOT_INO, Inode
from tarbox.fs.store import Store
from tarbox.fs.types import FileType, Stat

SYMLOOP_MAX = 40


@dataclass(slots=True)
class Resolution:
    parent: int | None  # directory holding the final name (None: path ends in '.', '..' or is '/')
    name: str | None
    node: Inode | None  # None: the final name does not exist
    ancestors: tuple[int, ...]  # directories from the root down to ``parent``
    name_too_long: bool = False  # the final name is over NAME_MAX (only with defer_long_name)


class PathWalk:
    """Resolution of paths for one Filesystem's store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.path_max: int | None = paths.PATH_MAX  # a whole path's limit in bytes (None: a mount's, see paths.split)

    def resolve(self, path: paths.PathArg, *, follow: bool = True, defer_long_name: bool = False) -> Resolution:
        """What ``path`` names from the root (its final name may not exist)."""
        return self._walk(
            paths.split(path, self.path_max), os.fspath(path), follow, [ROOT_INO], [], None, defer_long_name
        )

    def _walk(
        self,
        sp: paths.SplitPath,
        text: str,
        follow: bool,
        stack: list[int],
        names: list[str],
        floor: int | None,
        defer_long_name: bool = False,
    ) -> Resolution:
        """Walk ``sp`` from the directory ``stack`` (inodes from the root; ``names`` their
        entry names), following symlinks. With ``floor``, the walk stays beneath the
        first ``floor`` entries of ``stack``: absolute paths and targets, and ``..``
        above them, raise SandboxEscapeError. ``names`` ends as the physical path.

        Every name over NAME_MAX is refused when the walk reaches it (ENAMETOOLONG), as
        Linux does. This is the one place that decides it. With ``defer_long_name``, an
        over-long *final* name is not refused but returned as ``name_too_long``: an
        operation that looks at two paths (rename, link) refuses it in Linux's order,
        after walking the other path's directories."""
        st = self._store
        if floor is not None and sp.absolute:
            raise SandboxEscapeError(text)
        pending = deque(sp.parts)
        follow_last = follow or sp.trailing_slash
        links = 0
        while pending:
            comp = pending.popleft()
            last = not pending
            if comp == ".":
                continue
            if comp == "..":
                if floor is not None and len(stack) <= floor:
                    raise SandboxEscapeError(text)
                if len(stack) > 1:
                    stack.pop()
                    names.pop()
                continue
            cur = stack[-1]
            cnode = st.inode(cur)
            if cnode is None:
                raise fs_error(errno.ENOENT, text)
            if cnode.kind is not FileType.DIRECTORY:
                raise fs_error(errno.ENOTDIR, text)
            if last and defer_long_name and paths.overlong(comp):
                names.append(comp)
                return Resolution(cur, comp, None, tuple(stack), name_too_long=True)
            paths.check_component(comp, text)
            child = st.lookup(cur, comp)
            node = st.inode(child) if child is not None else None
            if node is None:
                if last:
                    names.append(comp)
                    return self._final(Resolution(cur, comp, None, tuple(stack)), sp, text)
                raise fs_error(errno.ENOENT, text)
            if node.kind is FileType.SYMLINK and (not last or follow_last):
                links += 1
                if links > SYMLOOP_MAX:
                    raise fs_error(errno.ELOOP, text)
                target = node.target or ""
                if not target:
                    raise fs_error(errno.ENOENT, text)
                tsp = paths.split(target)
                if tsp.absolute:
                    if floor is not None:
                        raise SandboxEscapeError(text)
                    del stack[1:]  # back to the root
                    names.clear()
                pending.extendleft(reversed(tsp.parts))
                if tsp.trailing_slash and last:
                    follow_last = True
                continue
            if last:
                names.append(comp)
                return self._final(Resolution(cur, comp, node, tuple(stack)), sp, text)
            if node.kind is not FileType.DIRECTORY:
                raise fs_error(errno.ENOTDIR, text)
            stack.append(node.ino)
            names.append(comp)
        top = stack[-1]
        node = st.inode(top)
        return self._final(Resolution(None, None, node, tuple(stack[:-1])), sp, text)

    def resolve_beneath(
        self, base: str, rel: str, *, follow: bool, defer_long_name: bool = False
    ) -> tuple[str, Stat | None]:
        """Resolve ``rel`` from the directory ``base`` (a physical path) for a sandbox
        (the WASI host): it may not climb above ``base``, nor use absolute paths or
        symlinks that leave it (SandboxEscapeError).
        Returns the physical path (no symlink before its last component; a trailing
        slash kept) and the stat of what it names (None: it does not exist).
        Hold the store lock for the answer to stay true while acting on it."""
        st = self._store
        with st.lock:
            st.refresh(force=False)
            names = [p for p in base.split("/") if p]
            start = self.resolve(base)
            assert start.node is not None
            stack = [*start.ancestors, start.node.ino]
            sp = paths.split(rel, self.path_max)
            res = self._walk(sp, rel, follow, stack, names, len(names) + 1, defer_long_name)
            out = "/" + "/".join(names)
            if sp.trailing_slash and out != "/":
                out += "/"
            return out, res.node.to_stat() if res.node is not None else None

    @staticmethod
    def _final(res: Resolution, sp: paths.SplitPath, text: str) -> Resolution:
        if sp.trailing_slash and res.node is not None and res.node.kind is not FileType.DIRECTORY:
            raise fs_error(errno.ENOTDIR, text)
        return res

    def existing(self, path: paths.PathArg, *, follow: bool = True) -> Resolution:
        """What ``path`` names, which must exist (ENOENT)."""
        res = self.resolve(path, follow=follow)
        if res.node is None:
            raise fs_error(errno.ENOENT, os.fspath(path))
        return res
