"""The history page's branch graph (``console.graph``) on histories whose drawing is
known in advance: which lane each layer takes, and that every parent link is drawn
from the child's row down to the parent's dot."""

from __future__ import annotations

from tarbox.server.console.graph import LANE_W, ROW_H, branch_graph


def _layers(parents: dict[int, int | None]) -> list[dict]:
    return [{"id": i, "parent": p} for i, p in parents.items()]


def _x(lane: int) -> int:
    return 8 + lane * LANE_W


def test_a_straight_history_is_one_lane():
    rows, width = branch_graph(_layers({1: None, 2: 1, 3: 2}), {"main": 3})
    assert [(r.layer["id"], r.lane) for r in rows] == [(3, 0), (2, 0), (1, 0)]
    assert rows[0].branches == ["main"]
    x, mid = _x(0), ROW_H // 2
    assert rows[0].segments == [(x, mid, x, ROW_H)]  # down from 3's dot
    assert rows[1].segments == [(x, 0, x, mid), (x, mid, x, ROW_H)]  # into 2, out of 2
    assert rows[2].segments == [(x, 0, x, mid)]  # into 1
    assert width == _x(0) + 8


def test_a_branch_is_a_second_lane_that_joins_where_it_forked():
    # main: 1 <- 2 <- 3; a branch from 1: 1 <- 4 <- 5 (newest)
    rows, width = branch_graph(_layers({1: None, 2: 1, 3: 2, 4: 1, 5: 4}), {"main": 3, "retry": 5})
    assert [(r.layer["id"], r.lane) for r in rows] == [(5, 0), (4, 0), (3, 1), (2, 1), (1, 0)]
    assert [r.branches for r in rows] == [["retry"], [], ["main"], [], []]
    x0, x1, mid = _x(0), _x(1), ROW_H // 2
    # 4's line to 1 passes rows 3 and 2 in lane 0; 2's line joins 1 from lane 1
    assert (x0, 0, x0, ROW_H) in rows[2].segments and (x0, 0, x0, ROW_H) in rows[3].segments
    assert set(rows[4].segments) == {(x0, 0, x0, mid), (x1, 0, x0, mid)}
    assert width == _x(1) + 8


def test_a_parent_outside_the_list_draws_no_line():
    rows, _ = branch_graph(_layers({7: 3, 8: 7}), {})  # 3 is not shown (another page)
    assert rows[-1].layer["id"] == 7 and rows[-1].segments == [(_x(0), 0, _x(0), ROW_H // 2)]
