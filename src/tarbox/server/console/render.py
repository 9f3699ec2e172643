"""What the console's pages show, computed from Tarbox's data and free of HTTP:
file previews (Pygments highlighting, images, binary metadata), unified and
side-by-side diff rows, and the branch graph of the layer history.
"""

from __future__ import annotations

import stat
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

PREVIEW_BYTES = 1 << 20  # text previews show at most this much
HEX_BYTES = 256  # a binary file's preview: its first bytes
HIGHLIGHT_CHARS = 128 << 10  # longer previews are shown plain
PATCH_FILES = 200  # a diff page shows the lines of this many files at most
DIFF_LINES = 20_000  # ... and this many lines in all
IMAGE_TYPES = {  # shown inline; anything else is downloaded as octet-stream
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}
_FORMATTER = HtmlFormatter(nowrap=True)


def stylesheet() -> str:
    return HtmlFormatter(style="default").get_style_defs(".hl")


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def permissions(mode: str | int) -> str:
    """``0o644`` as ``rw-r--r-- (0644)``."""
    bits = (int(mode, 8) if isinstance(mode, str) else mode) & 0o7777
    return f"{stat.filemode(stat.S_IFREG | bits)[1:]} ({bits:04o})"


def when(value: datetime | int | str | None) -> str:
    """A time as UTC text (``mtime_ns`` integers, ISO text or datetimes)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif isinstance(value, int):
        value = datetime.fromtimestamp(value / 1e9, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def image_type(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in IMAGE_TYPES.items() if head.startswith(magic)), None)


def as_text(data: bytes) -> str | None:
    """The bytes as text, or None when they look binary (a NUL, or not UTF-8)."""
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:  # a preview cut inside a character
            return data[: exc.start].decode("utf-8")
        return None


def _lexer(path: str):
    try:
        return get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


def highlighted_lines(path: str, text: str) -> list[Markup]:
    """``text`` highlighted for ``path``'s language, one safe HTML string a line (plain,
    but escaped, past ``HIGHLIGHT_CHARS``: Pygments takes about 1 s a MiB of Python here)."""
    lexer = _lexer(path) if len(text) <= HIGHLIGHT_CHARS else TextLexer(stripnl=False, ensurenl=False)
    html = highlight(text, lexer, _FORMATTER)
    lines = html.split("\n")
    if text.endswith("\n") or not text:
        lines = lines[:-1] if lines and lines[-1] == "" else lines
    return [Markup(line) for line in lines]  # noqa: S704 - Pygments escapes the text


def hexdump(data: bytes) -> list[tuple[str, str, str]]:
    """(offset, hex, printable) rows of 16 bytes."""
    printable = set(string.printable) - set("\t\n\r\x0b\x0c")
    rows = []
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        rows.append(
            (
                f"{i:08x}",
                " ".join(f"{b:02x}" for b in chunk),
                "".join(chr(b) if chr(b) in printable else "." for b in chunk),
            )
        )
    return rows


# ---------------------------------------------------------------------- diffs


@dataclass
class DiffLine:
    kind: str  # "hunk", "context", "added", "removed"
    old_no: int | None
    new_no: int | None
    html: Markup


@dataclass
class SplitRow:
    left: DiffLine | None
    right: DiffLine | None
    hunk: str | None = None


@dataclass
class FileDiff:
    path: str
    kind: str  # added, modified, deleted
    type: str
    size_before: int | None
    size_after: int | None
    lines: list[DiffLine] = field(default_factory=list)
    note: str = ""  # why there are no lines: binary, large, a directory

    def split(self) -> list[SplitRow]:
        """Side by side: removed lines beside the added lines that replace them."""
        rows: list[SplitRow] = []
        removed: list[DiffLine] = []
        added: list[DiffLine] = []

        def pair() -> None:
            for i in range(max(len(removed), len(added))):
                rows.append(SplitRow(removed[i] if i < len(removed) else None, added[i] if i < len(added) else None))
            removed.clear()
            added.clear()

        for line in self.lines:
            if line.kind == "removed":
                if added:
                    pair()
                removed.append(line)
            elif line.kind == "added":
                added.append(line)
            else:
                pair()
                if line.kind == "hunk":
                    rows.append(SplitRow(None, None, str(line.html)))
                else:
                    rows.append(SplitRow(line, line))
        pair()
        return rows


def diff_lines(path: str, patch: str, max_lines: int | None = None) -> list[DiffLine]:
    """A unified patch as numbered lines (the first ``max_lines``), each highlighted for
    ``path``'s language."""
    lexer = _lexer(path)
    out: list[DiffLine] = []
    old_no = new_no = 0
    for raw in patch.splitlines():
        if max_lines is not None and len(out) >= max_lines:
            break
        if raw.startswith(("--- ", "+++ ")) and not out:
            continue
        if raw.startswith("@@"):
            parts = raw.split()
            old_no = abs(int(parts[1].split(",")[0])) if len(parts) > 2 else 0
            new_no = int(parts[2].split(",")[0]) if len(parts) > 2 else 0
            out.append(DiffLine("hunk", None, None, escape(raw)))
            continue
        if raw.startswith("\\"):  # "\ No newline at end of file"
            continue
        sign, body = raw[:1], raw[1:]
        html = Markup(highlight(body, lexer, _FORMATTER).rstrip("\n"))  # noqa: S704 - escaped by Pygments
        if sign == "+":
            out.append(DiffLine("added", None, new_no, html))
            new_no += 1
        elif sign == "-":
            out.append(DiffLine("removed", old_no, None, html))
            old_no += 1
        else:
            out.append(DiffLine("context", old_no, new_no, html))
            old_no += 1
            new_no += 1
    return out


def file_diffs(changes: list[dict]) -> list[FileDiff]:
    """The diff page's files; their lines stop at ``DIFF_LINES`` in all (a page stays
    quick to make and to show), the rest listed with a note."""
    out, left = [], DIFF_LINES
    for change in changes:
        fd = FileDiff(change["path"], change["kind"], change["type"], change["size_before"], change["size_after"])
        if change["type"] != "file":
            fd.note = change["type"]
        elif change.get("patch_omitted"):
            fd.note = f"line diff not shown: only the first {PATCH_FILES} files' are (tarbox diff --patch shows all)"
        elif change.get("patch"):
            if left <= 0:
                fd.note = f"line diff not shown: the page shows {DIFF_LINES:,} lines (tarbox diff --patch shows all)"
            else:
                fd.lines = diff_lines(change["path"], change["patch"], left)
                left -= len(fd.lines)
                if left <= 0:
                    fd.note = "the rest of this file's diff is not shown"
        elif "patch" not in change:
            fd.note = "binary or over 1 MiB: no line diff"
        out.append(fd)
    return out


# ---------------------------------------------------------------- the graph


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
