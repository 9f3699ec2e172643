"""The dirty set (src/tarbox/fs/dirty.py), on its own, without a database: what counts
as something to commit, the row bound the flush thresholds read, and what a clear
keeps for files still held open for writing."""

from __future__ import annotations

from tarbox.fs.dirty import DirtySet
from tarbox.fs.records import ExtDirty


def test_an_empty_set_holds_nothing_and_counts_no_rows():
    d = DirtySet()
    assert not d.holds_changes(0)
    assert d.rows() == 0


def test_each_kind_of_change_is_something_to_commit():
    for change in (
        lambda d: d.inodes.__setitem__(5, None),
        lambda d: d.dirents.__setitem__((1, "a"), 5),
        lambda d: d.wbuf.__setitem__(5, {0: b"x"}),
        lambda d: d.blocks.__setitem__(b"h", b"x"),
        lambda d: d.ext.__setitem__(5, ExtDirty(None, 0)),
    ):
        d = DirtySet()
        change(d)
        assert d.holds_changes(0)


def test_extent_changes_of_files_whose_changes_are_all_staged_are_nothing_to_commit():
    d = DirtySet()
    d.ext[5], d.ext[6] = ExtDirty(None, 0), ExtDirty(None, 0)
    assert not d.holds_changes(staged_only=2)
    assert d.holds_changes(staged_only=1)


def test_rows_count_inodes_entries_and_extent_rows():
    d = DirtySet()
    d.inodes.update({2: None, 3: None})
    d.dirents[(1, "a")] = 2
    d.ext_rows = 7
    assert d.rows() == 2 + 1 + 7


def test_a_clear_keeps_only_the_held_files_extent_changes():
    d = DirtySet()
    held, published = ExtDirty(None, 0), ExtDirty(None, 0)
    d.ext.update({5: held, 6: published})
    d.inodes[5] = None
    d.dirents[(1, "a")] = 5
    d.blocks[b"h"] = b"data"
    d.wbuf[6] = {0: bytearray(b"x")}
    d.ext_rows, d.wbuf_bytes, d.block_bytes = 3, 1, 4
    assert d.clear(held=[5]) == {5}
    assert d.ext == {5: held}
    assert (d.inodes, d.dirents, d.blocks, d.wbuf) == ({}, {}, {}, {})
    assert (d.ext_rows, d.wbuf_bytes, d.block_bytes) == (0, 0, 0)
    assert d.rows() == 0 and not d.holds_changes(staged_only=1)
