"""Staged publication and open files: which files have descriptors still writing
them (their content stays out of commits, stored under a stage), publication at
the last close or at fsync, and write errors reported to the descriptors."""

from __future__ import annotations

from tarbox.errors import FilesystemError
from tarbox.fs.shared import SharedState


class Stages(SharedState):
    """stages of the tenant store (mixed into ``Store``; see its docstring)."""

    def held_inos(self) -> set[int]:
        """Files whose content changes stay out of this commit: a descriptor is still writing them."""
        return {
            ino
            for ino, e in self.dirty.ext.items()
            if self.writers.get(ino) and not e.drop and ino not in self.publish_now
        }

    def begin_write(self, ino: int) -> None:
        """A descriptor is about to write ``ino``: until it closes (or fsyncs), commits
        keep the file's new content out and show its previous version (staged publication)."""
        with self.lock:
            self.writers[ino] = self.writers.get(ino, 0) + 1

    def end_write(self, ino: int) -> None:
        """A descriptor that wrote ``ino`` closed or fsync'ed: once no writer is left, the
        next commit publishes the file whole."""
        with self.lock:
            n = self.writers.get(ino, 0) - 1
            if n > 0:
                self.writers[ino] = n
                return
            self.writers.pop(ino, None)
            self.unhold(ino)

    def unhold(self, ino: int) -> None:
        """Make the next commit write the file's real size with its content."""
        if ino in self.dirty.ext:
            self.staged_only.discard(ino)
            node = self.dirty.inodes.get(ino) or self.inode_cache.get(ino)
            if node is not None and node.nlink > 0:
                self.touch(node)

    def recheck_pending(self) -> None:
        """Someone else committed while files here have unpublished content: take their
        link counts, and their deletions, so publishing our bytes cannot bring back an
        inode they removed (last writer wins on content, not on existence)."""
        inos = [ino for ino in self.dirty.ext if not (ino in self.dirty.inodes and self.dirty.inodes[ino] is None)]
        if not inos:
            return
        rows = self.query(
            "SELECT DISTINCT ON (ino) ino, nlink FROM inodes"
            " WHERE tenant_id = %s AND ino = ANY(%s) AND layer_id = ANY(%s) ORDER BY ino, layer_id DESC",
            (self.tenant_id, inos, self.chain_ids),
        )
        nlink = dict(rows)
        for ino in inos:
            node = self.dirty.inodes.get(ino) or self.inode_cache.get(ino)
            if ino in nlink:
                if node is not None:
                    node.nlink = nlink[ino]
                continue
            # removed elsewhere: our bytes go (the next commit releases them); our
            # descriptors get ESTALE, like any descriptor of a file removed by another process
            ext = self.dirty.ext[ino]
            ext.release.update(ext.sets.values())
            ext.sets.clear()
            ext.trunc_from = None
            ext.drop = True
            self.staged_only.discard(ino)
            buf = self.dirty.wbuf.pop(ino, None)
            if buf:
                self.dirty.wbuf_bytes -= sum(len(b) for b in buf.values())
            self.dirty.inodes.pop(ino, None)
            self.inode_cache.pop(ino, None)
            self.extent_cache.pop(ino, None)

    def opened(self, ino: int) -> None:
        with self.lock:
            self.open_counts[ino] = self.open_counts.get(ino, 0) + 1

    def closed(self, ino: int) -> None:
        """Last close of an unlinked file finally releases it."""
        with self.lock:
            n = self.open_counts.get(ino, 0) - 1
            if n > 0:
                self.open_counts[ino] = n
                return
            self.open_counts.pop(ino, None)
            node = self.inode(ino)
            if node is not None and node.nlink == 0:
                with self.writing():
                    self.drop_inode(node)

    def pending_error(self, ino: int) -> FilesystemError | None:
        err = self.write_errors.pop(ino, None)
        return err  # type: ignore[return-value]
