"""How the ``tarbox`` command prints: JSON, single records and tables.

On a terminal, tables are rich tables. When stdout is a pipe or a file, every table
row is one line of tab-separated values, each value whole (no truncation, no
wrapping), so ``tarbox audit | grep data.csv`` finds what it should; a tab, newline
or backslash inside a value is written as ``\\t``, ``\\n`` or ``\\\\``. JSON is plain
``json.dumps`` output off a terminal, for the same reason.

Commands with JSON output take ``--json`` after the subcommand as well as before it
(:func:`json_option`).
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

out = Console(soft_wrap=True)  # soft wrap: a long line is never broken in two
err = Console(stderr=True, soft_wrap=True)


def emit_json(data) -> None:
    if out.is_terminal:
        out.print_json(json.dumps(data, default=str))
    else:
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")


def show_record(as_json: bool, record: dict) -> None:
    """One record: JSON with --json, else aligned ``key: value`` lines."""
    if as_json:
        emit_json(record)
        return
    width = max(map(len, record))
    for k, v in record.items():
        out.print(f"{k:>{width}}: {v if v is not None else '-'}", highlight=False, markup=False)


def _field(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def print_table(columns: Sequence[str], rows: Iterable[Sequence], *, box: bool = True) -> None:
    """A rich table on a terminal; off one, a line of tab-separated whole values per row."""
    if not out.is_terminal:
        sys.stdout.write("".join("\t".join(_field(v) for v in row) + "\n" for row in rows))
        return
    table = Table(*columns) if box else Table(*columns, box=None)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    out.print(table)


def json_option(command: Callable) -> Callable:
    """Let ``command`` take ``--json`` after the subcommand (``tarbox audit --json``) as
    well as before it (``tarbox --json audit``): either sets the context's ``as_json``."""
    sig = inspect.signature(command, eval_str=True)
    annotation = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
    flag = inspect.Parameter("json_after", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=annotation)

    @functools.wraps(command)
    def with_flag(*args, json_after: bool = False, **kwargs):
        if json_after:
            ctx = kwargs.get("ctx", args[0] if args else None)
            if ctx is not None:
                ctx.obj.as_json = True
        return command(*args, **kwargs)

    with_flag.__signature__ = sig.replace(parameters=[*sig.parameters.values(), flag])  # type: ignore[attr-defined]
    with_flag.__annotations__ = {**command.__annotations__, "json_after": annotation}
    return with_flag


def progress_bar() -> Progress:
    """A transfer progress bar on stderr, shown only on a terminal."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
