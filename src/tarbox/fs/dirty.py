"""The dirty set: what a tenant's Store changed and has not committed yet, and its
counters, kept in one place.

It holds the inode versions written (None: deleted), the directory entries set or
deleted, each file's extent changes (``ExtDirty``), the sealed blocks not stored
yet, the write buffer of blocks still being written, and the counters the flush
thresholds read (rows set, buffered bytes, sealed bytes). The operations of
``changes.py`` fill it; a flush (``flush.py``) reads it and, once committed,
clears it (``clear``), keeping the changes of files still held open for writing.
"""

from __future__ import annotations

from collections.abc import Iterable

from tarbox.fs.records import ExtDirty, Inode


class DirtySet:
    def __init__(self) -> None:
        self.inodes: dict[int, Inode | None] = {}  # ino -> its new version (None: deleted)
        self.dirents: dict[tuple[int, str], object] = {}  # (parent, name) -> ino, None (whiteout) or _DELETE
        self.ext: dict[int, ExtDirty] = {}  # ino -> its extent changes
        self.blocks: dict[bytes, bytes] = {}  # hash -> data of sealed blocks not stored yet
        self.ext_rows = 0  # extent rows set since the last flush (an upper bound)
        self.wbuf: dict[int, dict[int, bytearray | bytes]] = {}  # ino -> block index -> bytes being written
        self.wbuf_bytes = 0  # bytes in ``wbuf``
        self.block_bytes = 0  # bytes in ``blocks``

    def rows(self) -> int:
        """Metadata rows the next flush writes, at most (kept O(1): asked after every
        operation)."""
        return len(self.inodes) + len(self.dirents) + self.ext_rows

    def holds_changes(self, staged_only: int) -> bool:
        """Is there anything to commit? ``staged_only``: how many of the extent entries
        belong to held files whose changes are all staged already (nothing to write)."""
        return bool(self.inodes or self.dirents or self.wbuf or self.blocks or len(self.ext) > staged_only)

    def clear(self, held: Iterable[int] = ()) -> set[int]:
        """Forget what was committed (or lost). The ``held`` files keep their extent
        changes (staged, not published); returns their inodes."""
        self.inodes.clear()
        self.dirents.clear()
        self.ext = {ino: self.ext[ino] for ino in held}
        self.blocks.clear()
        self.ext_rows = 0
        self.wbuf.clear()
        self.wbuf_bytes = 0
        self.block_bytes = 0
        return set(self.ext)
