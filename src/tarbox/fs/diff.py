"""Differences between two views of a tenant (any two layers, not only parent and child)."""

from __future__ import annotations

import difflib
from dataclasses import replace

from tarbox.fs import paths
from tarbox.fs.records import ROOT_INO, Inode
from tarbox.fs.store import Store
from tarbox.fs.types import Change, ChangeKind, FileType


def snapshot(store: Store) -> dict[str, Inode]:
    """Every path of the view with the inode version it resolves to."""
    out: dict[str, Inode] = {}
    with store.lock:
        store.refresh()
        stack = [("/", ROOT_INO)]
        while stack:
            path, ino = stack.pop()
            kids = store.listing(ino)
            nodes = store.inodes(kids.values())
            for name, child in kids.items():
                node = nodes.get(child)
                if node is None:
                    continue
                p = paths.join(path, name)
                out[p] = node
                if node.kind is FileType.DIRECTORY:
                    stack.append((p, child))
    return out


def _same(a: Inode, b: Inode) -> bool:
    """Every change writes a version in a newer layer, so equal (ino, version) means unchanged.

    Directories change only through their entries, which are compared path by path.
    """
    if a.kind is not b.kind:
        return False
    if a.kind is FileType.DIRECTORY:
        return (a.mode, a.uid, a.gid) == (b.mode, b.uid, b.gid)
    return (a.ino, a.layer_id) == (b.ino, b.layer_id)


PATCH_MAX_BYTES = 1 << 20  # larger files are listed without a patch


def _text(store: Store, node: Inode | None) -> list[str] | None:
    """The lines of a file version, or None if it is not (small) UTF-8 text."""
    if node is None:
        return []
    if node.kind is not FileType.FILE or node.size > PATCH_MAX_BYTES:
        return None
    with store.lock:
        data = store.read(node, 0, node.size)
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _patch(before: Store, after: Store, path: str, x: Inode | None, y: Inode | None) -> str | None:
    old, new = _text(before, x), _text(after, y)
    if old is None or new is None:
        return None
    lines = difflib.unified_diff(
        old, new, "/dev/null" if x is None else "a" + path, "/dev/null" if y is None else "b" + path
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def diff(before: Store, after: Store, *, patch: bool = False, patch_limit: int | None = None) -> list[Change]:
    """The changes from ``before`` to ``after``; with ``patch``, unified diffs of the first
    ``patch_limit`` changed files (all by default)."""
    changes = _diff(before, after)
    if not patch:
        return changes
    a, b = snapshot(before), snapshot(after)
    out, patched = [], 0
    for c in changes:
        if c.type is FileType.FILE:
            if patch_limit is None or patched < patch_limit:
                patched += 1
                c = replace(c, patch=_patch(before, after, c.path, a.get(c.path), b.get(c.path)))
            else:
                c = replace(c, patch_omitted=True)
        out.append(c)
    return out


def _diff(before: Store, after: Store) -> list[Change]:
    a, b = snapshot(before), snapshot(after)
    changes = []
    for path in sorted(a.keys() | b.keys()):
        x, y = a.get(path), b.get(path)
        if x is None:
            changes.append(Change(path, ChangeKind.ADDED, y.kind, None, y.size))  # type: ignore[union-attr]
        elif y is None:
            changes.append(Change(path, ChangeKind.DELETED, x.kind, x.size, None))
        elif x.kind is not y.kind:
            changes.append(Change(path, ChangeKind.DELETED, x.kind, x.size, None))
            changes.append(Change(path, ChangeKind.ADDED, y.kind, None, y.size))
        elif not _same(x, y):
            changes.append(Change(path, ChangeKind.MODIFIED, y.kind, x.size, y.size))
    return changes
