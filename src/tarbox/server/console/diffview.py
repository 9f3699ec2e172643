"""A diff page's rows, free of HTTP: unified patches as numbered, highlighted lines,
paired side by side, within the page's limits of files and lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from markupsafe import Markup, escape
from pygments import highlight

from tarbox.server.console.preview import FORMATTER, lexer_for

PATCH_FILES = 200  # a diff page shows the lines of this many files at most
DIFF_LINES = 20_000  # ... and this many lines in all


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
    lexer = lexer_for(path)
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
        html = Markup(highlight(body, lexer, FORMATTER).rstrip("\n"))  # noqa: S704 - escaped by Pygments
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
