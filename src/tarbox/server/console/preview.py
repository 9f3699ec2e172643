"""What the console shows of a file, free of HTTP: text highlighted by Pygments,
the image types shown inline, a hex dump for the rest, and the small formatters of
sizes, times and permissions that the templates use."""

from __future__ import annotations

import functools
import stat
import string
from datetime import UTC, datetime

from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

PREVIEW_BYTES = 1 << 20  # text previews show at most this much
HEX_BYTES = 256  # a binary file's preview: its first bytes
HIGHLIGHT_CHARS = 128 << 10  # longer previews are shown plain
IMAGE_TYPES = {  # shown inline; anything else is downloaded as octet-stream
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}
FORMATTER = HtmlFormatter(nowrap=True)


@functools.cache  # the same for every request
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


def lexer_for(path: str):
    try:
        return get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


def highlighted_lines(path: str, text: str) -> list[Markup]:
    """``text`` highlighted for ``path``'s language, one safe HTML string a line (plain,
    but escaped, past ``HIGHLIGHT_CHARS``: Pygments takes about 1 s a MiB of Python here)."""
    lexer = lexer_for(path) if len(text) <= HIGHLIGHT_CHARS else TextLexer(stripnl=False, ensurenl=False)
    html = highlight(text, lexer, FORMATTER)
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
