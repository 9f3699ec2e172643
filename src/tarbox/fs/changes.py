"""The changes a tenant's store accumulates before a flush: new inodes and inode
numbers, directory entries, file content written or truncated (cut into BLAKE3
blocks), removals. Only the dirty maps change here; nothing is sent."""

from __future__ import annotations

import errno

import blake3

from tarbox.errors import fs_error
from tarbox.fs.records import (
    _DELETE,
    _INO_RANGE,
    FLUSH_BYTES,
    Dentry,
    ExtDirty,
    Inode,
    now_ns,
)
from tarbox.fs.shared import SharedState
from tarbox.fs.types import FileType


class Changes(SharedState):
    """changes of the tenant store (mixed into ``Store``; see its docstring)."""

    def alloc_ino(self) -> int:
        if self._ino_next >= self._ino_end:
            base = self.query("SELECT nextval('ino_seq')")[0][0]
            self._ino_next, self._ino_end = base, base + _INO_RANGE
        ino = self._ino_next
        self._ino_next += 1
        return ino

    def create_inode(
        self,
        kind: FileType,
        mode: int,
        *,
        target: str | None = None,
        nlink: int = 1,
        uid: int = 0,
        gid: int = 0,
        rdev: int = 0,
    ) -> Inode:
        self.note_write()
        now = now_ns()
        size = len(target.encode()) if target is not None else 0
        node = Inode(
            self.alloc_ino(),
            kind,
            mode & 0o7777,
            nlink,
            size,
            now,
            now,
            now,
            target,
            self.head,
            self.head if kind is FileType.FILE else None,
            uid,
            gid,
            rdev,
        )
        self.inode_cache[node.ino] = node
        self.dirty.inodes[node.ino] = node
        if kind is FileType.FILE:
            self.extent_cache[node.ino] = {}
        return node

    def touch(self, node: Inode) -> Inode:
        """Make ``node`` the head version (copy-on-write of the inode row) and mark it dirty."""
        self.note_write()
        node.layer_id = self.head
        self.dirty.inodes[node.ino] = node
        self.inode_cache[node.ino] = node
        return node

    def set_dentry(self, parent: int, name: str, ino: int | None) -> None:
        """Point ``name`` at ``ino``, or remove it (``None``), in the head layer."""
        self.note_write()
        self.path_cache.clear()
        d = self.dentry(parent, name)
        head = self.head
        older = d.under(head)
        if ino is None and not older:
            if d.at(head):
                self.dirty.dirents[(parent, name)] = _DELETE  # nothing below: remove the row itself
            new = Dentry(None, None, False)
        else:
            # a new version at the head, or a whiteout hiding the older version
            self.dirty.dirents[(parent, name)] = ino
            new = Dentry(ino, head, older)
        self.dentry_cache[(parent, name)] = new
        kids = self.children.get(parent)
        if kids is not None:
            if ino is None:
                kids.pop(name, None)
            else:
                kids[name] = ino

    def note_new_dir(self, ino: int) -> None:
        """A directory we just created is empty: its listing is complete."""
        self.children[ino] = {}

    def drop_inode(self, node: Inode) -> None:
        """The inode lost its last link: delete its head version and release its blocks."""
        self.note_write()
        if node.kind is FileType.FILE and (node.content_layer == self.head or node.ino in self.dirty.ext):
            xm = self.xmap(node)
            ext = self._ext(node)
            ext.release.update(xm.values())
            ext.drop = True
            ext.sets.clear()
        buf = self.dirty.wbuf.pop(node.ino, None)
        if buf:
            self.dirty.wbuf_bytes -= sum(len(b) for b in buf.values())
        self.dirty.inodes[node.ino] = None
        self.inode_cache.pop(node.ino, None)
        self.extent_cache.pop(node.ino, None)

    def _ext(self, node: Inode) -> ExtDirty:
        """The node's pending content changes, begun at its committed state if there are none."""
        ext = self.dirty.ext.get(node.ino)
        if ext is None:
            ext = self.dirty.ext[node.ino] = ExtDirty(node.content_layer, node.size)
        self.staged_only.discard(node.ino)
        return ext

    def _content(self, node: Inode) -> tuple[dict[int, bytes], ExtDirty]:
        """Prepare ``node`` for a content change (copy-on-write of its extent map)."""
        xm = self.xmap(node)
        self.touch(node)
        ext = self._ext(node)
        node.content_layer = self.head
        return xm, ext

    def write(self, node: Inode, offset: int, data: bytes | bytearray | memoryview) -> None:
        if node.ino in self.write_errors:
            raise self.write_errors.pop(node.ino)
        n = len(data)
        if n == 0:
            return
        if offset + n > node.size:
            self.check_file_size(offset + n, errno.EDQUOT if offset <= node.size else errno.EFBIG)
        xm, _ = self._content(node)
        bs = self.block_size
        mv = memoryview(data)
        wb = self.dirty.wbuf.setdefault(node.ino, {})
        end = offset + n
        i = offset // bs
        while i * bs < end:
            bstart = i * bs
            lo = max(offset, bstart) - bstart
            hi = min(end, bstart + bs) - bstart
            piece = mv[bstart + lo - offset : bstart + hi - offset]
            old = wb.get(i)
            if old is None and lo == 0 and (hi == bs or bstart + hi >= node.size):
                # the write covers every existing byte of this block: no need to read it
                wb[i] = bytes(piece) if hi == bs else bytearray(piece)
                self.dirty.wbuf_bytes += hi
            else:
                if old is None:
                    old = bytearray(self.read_block(node, i, xm))
                    wb[i] = old
                    self.dirty.wbuf_bytes += len(old)
                elif isinstance(old, bytes):
                    old = bytearray(old)
                    wb[i] = old
                if len(old) < lo:
                    self.dirty.wbuf_bytes += lo - len(old)
                    old.extend(bytes(lo - len(old)))
                grow = max(0, hi - len(old))
                old[lo:hi] = piece
                self.dirty.wbuf_bytes += grow
            i += 1
        now = now_ns()
        if end > node.size:
            node.size = end
        node.mtime_ns = node.ctime_ns = now
        if self.dirty.wbuf_bytes > FLUSH_BYTES:
            self.seal_blocks(node.ino)

    def check_file_size(self, size: int, code: int = errno.EFBIG) -> None:
        """Refuse to make a file larger than the tenant's byte quota, or than
        ``MAX_FILE_SIZE`` for a tenant without one: quotas count stored bytes, and a
        sparse or deduplicated file could otherwise claim any apparent size. ``code``:
        EFBIG for a size set (truncate, a write past a hole), EDQUOT for bytes written
        on from the end (as a write over the quota fails anyway)."""
        limit = self.file_size_limit()
        if size > limit:
            what = "quota exceeded" if code == errno.EDQUOT else "file too large"
            raise fs_error(code, None, f"{what}: a file of {size} bytes would be over this tenant's limit of {limit}")

    def truncate(self, node: Inode, size: int) -> None:
        if size > node.size:
            self.check_file_size(size)
        if size == node.size:
            node.mtime_ns = node.ctime_ns = now_ns()
            self.touch(node)
            return
        xm, ext = self._content(node)
        bs = self.block_size
        if size < node.size:
            keep = -(-size // bs)  # blocks that survive, the last maybe partially
            wb = self.dirty.wbuf.get(node.ino, {})
            for i in [i for i in wb if i >= keep]:
                self.dirty.wbuf_bytes -= len(wb.pop(i))
            for i in [i for i in xm if i >= keep]:
                ext.release.add(xm.pop(i))
                ext.sets.pop(i, None)
            for i in [i for i in ext.sets if i >= keep]:
                del ext.sets[i]
            ext.trunc_from = keep if ext.trunc_from is None else min(ext.trunc_from, keep)
            tail = size % bs
            if tail:
                i = size // bs
                cur = wb.get(i)
                if cur is None and i in xm:
                    cur = self.read_block(node, i, xm)
                if cur is not None and len(cur) > tail:
                    wb = self.dirty.wbuf.setdefault(node.ino, {})
                    prev = len(wb.get(i, b""))
                    wb[i] = bytearray(cur[:tail])
                    self.dirty.wbuf_bytes += tail - prev
        node.size = size
        node.mtime_ns = node.ctime_ns = now_ns()

    def seal_blocks(self, only: int | None = None) -> None:
        """Hash buffered blocks into content-addressed blocks and extent updates."""
        inos = [only] if only is not None else list(self.dirty.wbuf)
        for ino in inos:
            wb = self.dirty.wbuf.pop(ino, None)
            if not wb:
                continue
            node = self.dirty.inodes.get(ino) or self.inode_cache.get(ino)
            xm = self.extent_cache.setdefault(ino, {})
            ext = self.dirty.ext[ino]  # every buffered block was written through _content
            self.staged_only.discard(ino)
            for i, buf in wb.items():
                self.dirty.wbuf_bytes -= len(buf)
                if node is not None and i * self.block_size >= node.size:
                    continue
                data = bytes(buf)
                h = blake3.blake3(data).digest()
                old = xm.get(i)
                if old == h:
                    continue
                if old is not None:
                    ext.release.add(old)
                xm[i] = h
                ext.sets[i] = h
                self.dirty.ext_rows += 1
                if h not in self.dirty.blocks:
                    self.dirty.blocks[h] = data
                    self.dirty.block_bytes += len(data)
                if len(data) < self.block_size:
                    # small files are often read right back; streamed full blocks
                    # would only push them out of the cache
                    self.block_cache.put(h, data)
        if only is not None and self.dirty.block_bytes > FLUSH_BYTES:
            self.commit()
