"""The history page's branch graph, free of HTTP: each layer in a lane, and the line
segments each table row's cell draws, so that branches read as parallel lines that
join where they forked."""

from __future__ import annotations

from dataclasses import dataclass, field

ROW_H = 28  # px: the history table's row height, which the graph's cells match
LANE_W = 14  # px between lanes


@dataclass
class GraphRow:
    layer: dict
    lane: int
    branches: list[str]
    segments: list[tuple[int, int, int, int]] = field(default_factory=list)  # lines in this row's cell (px)

    @property
    def x(self) -> int:
        return _lane_x(self.lane)


def _lane_x(lane: int) -> int:
    return 8 + lane * LANE_W


def branch_graph(layers: list[dict], branches: dict[str, int]) -> tuple[list[GraphRow], int]:
    """Layers newest first, each in a lane: a layer continues its newest child's lane,
    and a layer with more children ends their lanes there, so branches read as
    parallel lines joining where they forked. Returns the rows (each with the line
    segments its cell draws) and the graph's width in pixels."""
    names: dict[int, list[str]] = {}
    for name, head in sorted(branches.items()):
        names.setdefault(head, []).append(name)
    ordered = sorted(layers, key=lambda x: x["id"], reverse=True)  # children before parents
    row_of = {layer["id"]: i for i, layer in enumerate(ordered)}
    open_lanes: list[int | None] = []  # lane -> the layer id its line runs to
    rows: list[GraphRow] = []
    for layer in ordered:
        lid = layer["id"]
        waiting = [i for i, want in enumerate(open_lanes) if want == lid]
        if waiting:
            lane = waiting[0]
            for i in waiting[1:]:
                open_lanes[i] = None
        else:
            lane = next((i for i, want in enumerate(open_lanes) if want is None), len(open_lanes))
            if lane == len(open_lanes):
                open_lanes.append(None)
        parent = layer.get("parent")
        open_lanes[lane] = parent if parent in row_of else None
        while open_lanes and open_lanes[-1] is None:
            open_lanes.pop()
        rows.append(GraphRow(layer, lane, names.get(lid, [])))
    width = 1
    mid, bottom = ROW_H // 2, ROW_H
    for child_row, row in enumerate(rows):
        parent = row.layer.get("parent")
        if parent not in row_of:
            continue
        parent_row = row_of[parent]
        x, px = row.x, rows[parent_row].x
        row.segments.append((x, mid, x, bottom))
        for r in range(child_row + 1, parent_row):
            rows[r].segments.append((x, 0, x, bottom))
        rows[parent_row].segments.append((x, 0, px, mid))
    for row in rows:
        width = max(width, row.x + 8, *(max(s[0], s[2]) + 8 for s in row.segments))
    return rows, width
