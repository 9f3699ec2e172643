"""The file commands on a tenant: ``ls``, ``cat``, ``write``, ``mkdir``, ``rm``, ``rmdir``,
``mv``, ``stat``, ``put`` and ``get``."""

from __future__ import annotations

import stat as stat_mod
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

import tarbox
from tarbox.cli.context import CHUNK, ctx_of, show
from tarbox.cli.output import emit_json, json_option, out, print_table, progress_bar
from tarbox.fs import paths as fspaths
from tarbox.fs.local import copy_in, local_files

app = typer.Typer()


def _stat_dict(path: str, s: tarbox.Stat) -> dict:
    return {
        "path": path,
        "type": s.type.name.lower(),
        "mode": oct(s.mode),
        "size": s.size,
        "nlink": s.nlink,
        "ino": s.ino,
        "mtime": datetime.fromtimestamp(s.mtime_ns / 1e9, UTC).isoformat(),
        "ctime": datetime.fromtimestamp(s.ctime_ns / 1e9, UTC).isoformat(),
        "atime": datetime.fromtimestamp(s.atime_ns / 1e9, UTC).isoformat(),
    }


@app.command()
@json_option
def ls(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument()] = "/",
    long: Annotated[bool, typer.Option("-l", help="Long listing.")] = False,
) -> None:
    """List a directory."""
    c = ctx_of(ctx)
    fs = c.fs()
    st = fs.stat(path)
    if not st.is_dir:
        entries = [(path.rstrip("/").rsplit("/", 1)[-1], fs.lstat(path))]
    else:
        entries = [(e.name, fs.lstat(fspaths.join(path, e.name))) for e in fs.scandir(path)]
    if c.as_json:
        emit_json([_stat_dict(n, s) for n, s in entries])
        return
    if not long:
        for name, s in entries:
            out.print(name + ("/" if s.is_dir else ""), highlight=False)
        return
    rows = [
        (
            stat_mod.filemode(s.st_mode),
            s.nlink,
            s.size,
            datetime.fromtimestamp(s.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M"),
            name + (f" -> {fs.readlink(fspaths.join(path, name))}" if s.is_symlink else ""),
        )
        for name, s in entries
    ]
    print_table(("mode", "links", "size", "modified", "name"), rows, box=False)


@app.command()
def cat(ctx: typer.Context, path: str) -> None:
    """Print a file's content."""
    fs = ctx_of(ctx).fs()
    with fs.open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


@app.command()
def write(
    ctx: typer.Context,
    path: str,
    text: Annotated[str | None, typer.Argument(help="Content; read from stdin if omitted.")] = None,
    append: Annotated[bool, typer.Option("--append", "-a", help="Append instead of replacing.")] = False,
) -> None:
    """Write text (or stdin) to a file."""
    fs = ctx_of(ctx).fs()
    with fs.open(path, "ab" if append else "wb") as f:
        if text is not None:
            f.write(text.encode())
        else:
            while chunk := sys.stdin.buffer.read(CHUNK):
                f.write(chunk)


@app.command()
def mkdir(
    ctx: typer.Context,
    path: str,
    parents: Annotated[bool, typer.Option("-p", "--parents", help="Create parents; no error if it exists.")] = False,
) -> None:
    """Create a directory."""
    fs = ctx_of(ctx).fs()
    fs.mkdir(path, parents=parents, exist_ok=parents)


@app.command()
def rm(
    ctx: typer.Context,
    path: str,
    recursive: Annotated[bool, typer.Option("-r", "--recursive", help="Remove directories and contents.")] = False,
) -> None:
    """Remove a file (or a tree with -r)."""
    fs = ctx_of(ctx).fs()
    if recursive:
        fs.remove_tree(path)
    else:
        fs.remove(path)


@app.command()
def rmdir(ctx: typer.Context, path: str) -> None:
    """Remove an empty directory."""
    ctx_of(ctx).fs().rmdir(path)


@app.command()
def mv(ctx: typer.Context, src: str, dst: str) -> None:
    """Rename or move a file or directory."""
    ctx_of(ctx).fs().rename(src, dst)


@app.command()
@json_option
def stat(ctx: typer.Context, path: str) -> None:
    """Show a file's metadata."""
    c = ctx_of(ctx)
    show(c, _stat_dict(path, c.fs().lstat(path)))


@app.command()
def put(ctx: typer.Context, local: Path, remote: str) -> None:
    """Copy a local file or directory tree into Tarbox."""
    fs = ctx_of(ctx).fs()
    if not local.exists():
        raise FileNotFoundError(2, "no such local file", str(local))
    if not local.is_dir() and fs.is_dir(remote):
        remote = fspaths.join(remote, local.name)
    total = sum(p.lstat().st_size for p, _ in local_files(local, remote)[1] if not p.is_symlink())
    with progress_bar() as progress, fs.batch():
        task = progress.add_task("put", total=total)
        copy_in(fs, local, remote, on_bytes=lambda n: progress.advance(task, n))


@app.command()
def get(ctx: typer.Context, remote: str, local: Path) -> None:
    """Copy a file or directory tree out of Tarbox."""
    fs = ctx_of(ctx).fs()
    st = fs.stat(remote)
    files: list[tuple[str, Path]] = []
    if st.is_dir:
        local.mkdir(parents=True, exist_ok=True)
        for root, _dirs, names in fs.walk(remote):
            rel = root[len(remote.rstrip("/")) :].lstrip("/")
            target = local / rel if rel else local
            target.mkdir(parents=True, exist_ok=True)
            files += [(fspaths.join(root, n), target / n) for n in names]
    else:
        if local.is_dir():
            local = local / remote.rstrip("/").rsplit("/", 1)[-1]
        files.append((remote, local))
    total = sum(fs.lstat(r).size for r, _ in files)
    with progress_bar() as progress:
        task = progress.add_task("get", total=total)
        for src, dst in files:
            if fs.lstat(src).is_symlink:
                if dst.is_symlink() or dst.exists():
                    dst.unlink()
                dst.symlink_to(fs.readlink(src))
                continue
            with fs.open(src, "rb") as fin, open(dst, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    fout.write(chunk)
                    progress.advance(task, len(chunk))
