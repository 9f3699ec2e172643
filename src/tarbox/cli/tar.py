"""The ``export`` and ``import`` commands: a tenant's tree as a tar stream, both ways."""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from typing import Annotated

import typer

import tarbox
from tarbox.cli.context import Ctx, ctx_of
from tarbox.cli.output import emit_json, err, json_option, progress_bar
from tarbox.fs import paths as fspaths

app = typer.Typer()


@app.command("export")
@json_option
def export_cmd(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(help="[PATH] OUT: the tree to export (default /) and the archive.")],
    layer: Annotated[int | None, typer.Option("--layer", "-l", help="Export this layer, not the head.")] = None,
    compression: Annotated[
        str | None, typer.Option("--compression", help="gz, zst or none (default: from OUT's name).")
    ] = None,
) -> None:
    """Write a tenant's tree to a tar archive (.tar, .tar.gz, .tar.zst; OUT '-' is stdout)."""
    from tarbox.integrations.tar import compression_for, export_tar

    if len(args) not in (1, 2):
        raise typer.BadParameter("give [PATH] OUT")
    path, dest = (args[0], args[1]) if len(args) == 2 else ("/", args[0])
    c = ctx_of(ctx)
    if not c.tenant:
        raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
    fs = c.tb().filesystem(c.tenant, layer=layer)
    comp = compression if compression is not None else compression_for(dest)
    comp = None if comp in (None, "none") else comp
    total = _tree_bytes(fs, path)
    sink = nullcontext(sys.stdout.buffer) if dest == "-" else open(dest, "wb")  # noqa: SIM115 - closed by with
    with progress_bar() as progress, sink as f:
        task = progress.add_task("export", total=total)
        stats = export_tar(fs, f, path, compression=comp, progress=lambda n: progress.advance(task, n))
        f.flush()
    _report_tar(c, "exported", stats, dest)


@app.command("import")
@json_option
def import_cmd(
    ctx: typer.Context,
    archive: Annotated[str, typer.Argument(help="The tar archive (any compression; '-' is stdin).")],
    path: Annotated[str, typer.Argument(help="Where to extract it.")] = "/",
    checkpoint: Annotated[bool, typer.Option("--checkpoint", help="Checkpoint after importing.")] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Checkpoint message.")] = None,
) -> None:
    """Extract a tar archive into a tenant (unsafe member names are refused)."""
    from tarbox.integrations.tar import import_tar

    c = ctx_of(ctx)
    fs = c.fs()
    total = os.path.getsize(archive) if archive != "-" else None
    source = nullcontext(sys.stdin.buffer) if archive == "-" else open(archive, "rb")  # noqa: SIM115 - closed by with
    with progress_bar() as progress, source as f:
        task = progress.add_task("import", total=total)
        stats = import_tar(fs, f, path, progress=lambda n: progress.advance(task, n))
    layer = fs.checkpoint(message or f"import {os.path.basename(archive)}") if checkpoint or message else None
    _report_tar(c, "imported", stats, archive, layer.id if layer else None)


def _tree_bytes(fs: tarbox.Filesystem, path: str) -> int:
    st = fs.lstat(path)
    if not st.is_dir:
        return st.size
    return sum(fs.lstat(fspaths.join(root, n)).size for root, _d, names in fs.walk(path) for n in names)


def _report_tar(c: Ctx, verb: str, stats, where: str, layer: int | None = None) -> None:
    record = {
        "files": stats.files,
        "dirs": stats.dirs,
        "symlinks": stats.symlinks,
        "hardlinks": stats.hardlinks,
        "skipped": stats.skipped,
        "special": stats.special,
        "bytes": stats.bytes,
    }
    if layer is not None:
        record["checkpoint"] = layer
    if c.as_json:
        emit_json(record)
        return
    tail = f", checkpoint {layer}" if layer is not None else ""
    skipped = f", {stats.special} FIFOs or devices" if stats.special else ""
    skipped += f", {stats.skipped} skipped (devices on import, sockets on export)" if stats.skipped else ""
    err.print(
        f"{verb} {stats.files} files, {stats.dirs} directories, {stats.symlinks} symlinks, "
        f"{stats.hardlinks} hard links ({stats.bytes:,} bytes){skipped}{tail}",
        highlight=False,
    )
