"""The ``tarbox`` command."""

from __future__ import annotations

import os
import stat as stat_mod
import sys
import tempfile
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

import tarbox
from tarbox.cli import server as server_cmds
from tarbox.cli.output import emit_json, err, json_option, out, print_table, show_record
from tarbox.errors import TarboxError
from tarbox.fs import paths as fspaths
from tarbox.fs.local import copy_in, local_files

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tarbox: a versioned, multi-tenant filesystem in PostgreSQL for AI agents.",
)
tenant_app = typer.Typer(no_args_is_help=True, help="Create, list, inspect and delete tenants.")
db_app = typer.Typer(no_args_is_help=True, help="The database: status of the embedded server, stop it.")
layer_app = typer.Typer(no_args_is_help=True, help="Manage layers (history).")
app.add_typer(layer_app, name="layer")
app.add_typer(tenant_app, name="tenant")
app.add_typer(db_app, name="db")
app.add_typer(server_cmds.token_app, name="token")
app.command()(server_cmds.serve)
app.command()(server_cmds.mcp)

_CHUNK = 1 << 20


@dataclass
class Ctx:
    tenant: str | None
    as_json: bool
    url: str | None
    _tb: tarbox.Tarbox | None = None
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)  # this command, in the audit log

    def tb(self) -> tarbox.Tarbox:
        if self._tb is None:
            self._tb = tarbox.connect(self.url)
        return self._tb

    def fs(self) -> tarbox.Filesystem:
        if not self.tenant:
            raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
        fs = self.tb().filesystem(self.tenant)
        fs.run_id = self.run_id
        return fs


def _ctx(ctx: typer.Context) -> Ctx:
    return ctx.obj


def _show(c: Ctx, record: dict) -> None:
    show_record(c.as_json, record)


def _version(value: bool) -> None:
    if value:
        out.print(f"tarbox {tarbox.__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", envvar="TARBOX_TENANT", help="Tenant name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="TARBOX_DATABASE_URL", help="PostgreSQL URL (default: embedded)."),
    ] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    ctx.obj = Ctx(tenant, as_json, url)


# --------------------------------------------------------------------- setup


@app.command()
@json_option
def init(ctx: typer.Context) -> None:
    """Start (or reach) the database and apply migrations."""
    c = _ctx(ctx)
    tb = c.tb()
    info = {"url": _safe_url(tb.db.url), "embedded": tb.db.embedded, "schema_version": tb.db.schema_version}
    if c.as_json:
        emit_json(info)
    else:
        where = "embedded PostgreSQL" if tb.db.embedded else "PostgreSQL"
        out.print(f"[green]ready[/]: {where} at {info['url']}, schema version {info['schema_version']}")


@app.command()
def mount(
    ctx: typer.Context,
    mountpoint: Annotated[Path, typer.Argument(help="An empty directory.")],
    layer: Annotated[int | None, typer.Option("--layer", "-l", help="Mount this layer (read-only).")] = None,
    branch: Annotated[
        str | None, typer.Option("--branch", "-b", help="Mount this branch's head (read-only unless current).")
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Refuse every write (EROFS).")] = False,
    allow_other: Annotated[bool, typer.Option("--allow-other", help="Let other users see the mount.")] = False,
    foreground: Annotated[
        bool, typer.Option("--foreground", "-f", help="Serve in this process until unmounted.")
    ] = False,
    backend: Annotated[str | None, typer.Option("--backend", help="pyfuse3 (default if installed) or mfusepy.")] = None,
) -> None:
    """Mount the tenant's files at MOUNTPOINT (FUSE): ls, grep, git, editors work on them."""
    import subprocess
    import time

    from tarbox.integrations import fuse

    c = _ctx(ctx)
    if not c.tenant:
        raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
    why = fuse.available()
    if why is not None:
        raise TarboxError(f"cannot mount: {why}")
    if layer is not None and branch is not None:
        raise typer.BadParameter("give --layer or --branch, not both")
    if branch is not None:
        fs = c.tb().filesystem(c.tenant)
        heads = fs.branches()
        if branch not in heads:
            raise TarboxError(f"branch {branch!r} does not exist (try: tarbox -t {c.tenant} branch)")
        if branch != fs.current_branch():
            layer = heads[branch]
    args = [str(mountpoint), "--tenant", c.tenant]
    args += ["--url", c.url] if c.url else []
    args += ["--layer", str(layer)] if layer is not None else []
    args += ["--read-only"] if read_only else []
    args += ["--allow-other"] if allow_other else []
    if backend is not None:
        if backend not in fuse.BACKENDS:
            raise typer.BadParameter(f"--backend is one of {', '.join(fuse.BACKENDS)}")
        args += ["--backend", backend]
    if foreground:
        fuse.main(args)
        return
    log = Path(os.environ.get("TARBOX_HOME") or tempfile.gettempdir()) / f"mount-{os.getpid()}.log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tarbox.integrations.fuse", *args],
            stdout=lf,
            stderr=lf,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives this command and its terminal
        )
    deadline = time.monotonic() + 60
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise TarboxError(f"mount failed: {' | '.join(tail) or 'no output'}")
        time.sleep(0.05)
    out.print(f"mounted {c.tenant} at {mountpoint} (pid {proc.pid}); unmount with: tarbox umount {mountpoint}")


@app.command()
def umount(ctx: typer.Context, mountpoint: Path) -> None:
    """Unmount a Tarbox mount (also one whose process died: a stale mount point)."""
    import subprocess

    p = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True)
    if p.returncode != 0:
        lazy = subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, text=True)
        if lazy.returncode != 0:
            raise TarboxError(f"umount failed: {(p.stderr or lazy.stderr).strip()}")
    out.print(f"unmounted {mountpoint}")


@app.command()
@json_option
def doctor(ctx: typer.Context) -> None:
    """Check the database, migrations, row-level security, wasmtime and the cache; exit 1 on a failure."""
    from tarbox.cli.doctor import run_checks

    c = _ctx(ctx)
    checks = run_checks(c.url)
    if c.as_json:
        emit_json([{"check": k.name, "ok": k.ok, "detail": k.detail, "hint": "" if k.ok else k.hint} for k in checks])
    else:
        for k in checks:
            mark = "[green]ok[/]  " if k.ok else "[red]FAIL[/]" if k.required else "[yellow]warn[/]"
            hint = f"  [dim]-> {k.hint}[/]" if not k.ok and k.hint else ""
            out.print(f"{mark} {k.name}: {k.detail}{hint}", highlight=False)
    if any(not k.ok and k.required for k in checks):
        raise typer.Exit(1)


def _safe_url(url: str) -> str:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)


# ------------------------------------------------------------------- tenants


@tenant_app.command("create")
@json_option
def tenant_create(
    ctx: typer.Context,
    name: str,
    quota_bytes: Annotated[int | None, typer.Option(help="Maximum stored bytes.")] = None,
    quota_inodes: Annotated[int | None, typer.Option(help="Maximum inodes.")] = None,
) -> None:
    """Create a tenant."""
    c = _ctx(ctx)
    t = c.tb().create_tenant(name, quota_bytes=quota_bytes, quota_inodes=quota_inodes)
    if c.as_json:
        emit_json({"id": str(t.id), "name": t.name, "created_at": t.created_at.isoformat()})
    else:
        out.print(f"created tenant [bold]{t.name}[/] ({t.id})")


@tenant_app.command("list")
@json_option
def tenant_list(ctx: typer.Context) -> None:
    """List tenants."""
    c = _ctx(ctx)
    tenants = c.tb().list_tenants()
    if c.as_json:
        emit_json([{"id": str(t.id), "name": t.name, "created_at": t.created_at.isoformat()} for t in tenants])
        return
    rows = [(t.name, t.id, t.created_at.strftime("%Y-%m-%d %H:%M:%S")) for t in tenants]
    print_table(("name", "id", "created"), rows)


@tenant_app.command("info")
@json_option
def tenant_info(ctx: typer.Context, name: str) -> None:
    """Show a tenant's usage and quotas."""
    c = _ctx(ctx)
    _show(c, c.tb().describe_tenant(name))


@tenant_app.command("delete")
@json_option
def tenant_delete(
    ctx: typer.Context,
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a tenant and all its data."""
    c = _ctx(ctx)
    if not yes and sys.stdin.isatty():
        typer.confirm(f"delete tenant {name!r} and all its files?", abort=True)
    c.tb().delete_tenant(name)
    if not c.as_json:
        out.print(f"deleted tenant {name}")


# --------------------------------------------------------------------- files


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
    c = _ctx(ctx)
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
    fs = _ctx(ctx).fs()
    with fs.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
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
    fs = _ctx(ctx).fs()
    with fs.open(path, "ab" if append else "wb") as f:
        if text is not None:
            f.write(text.encode())
        else:
            while chunk := sys.stdin.buffer.read(_CHUNK):
                f.write(chunk)


@app.command()
def mkdir(
    ctx: typer.Context,
    path: str,
    parents: Annotated[bool, typer.Option("-p", "--parents", help="Create parents; no error if it exists.")] = False,
) -> None:
    """Create a directory."""
    fs = _ctx(ctx).fs()
    fs.mkdir(path, parents=parents, exist_ok=parents)


@app.command()
def rm(
    ctx: typer.Context,
    path: str,
    recursive: Annotated[bool, typer.Option("-r", "--recursive", help="Remove directories and contents.")] = False,
) -> None:
    """Remove a file (or a tree with -r)."""
    fs = _ctx(ctx).fs()
    if recursive:
        fs.remove_tree(path)
    else:
        fs.remove(path)


@app.command()
def rmdir(ctx: typer.Context, path: str) -> None:
    """Remove an empty directory."""
    _ctx(ctx).fs().rmdir(path)


@app.command()
def mv(ctx: typer.Context, src: str, dst: str) -> None:
    """Rename or move a file or directory."""
    _ctx(ctx).fs().rename(src, dst)


@app.command()
@json_option
def stat(ctx: typer.Context, path: str) -> None:
    """Show a file's metadata."""
    c = _ctx(ctx)
    _show(c, _stat_dict(path, c.fs().lstat(path)))


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@app.command()
def put(ctx: typer.Context, local: Path, remote: str) -> None:
    """Copy a local file or directory tree into Tarbox."""
    fs = _ctx(ctx).fs()
    if not local.exists():
        raise FileNotFoundError(2, "no such local file", str(local))
    if not local.is_dir() and fs.is_dir(remote):
        remote = fspaths.join(remote, local.name)
    total = sum(p.lstat().st_size for p, _ in local_files(local, remote)[1] if not p.is_symlink())
    with _progress() as progress, fs.batch():
        task = progress.add_task("put", total=total)
        copy_in(fs, local, remote, on_bytes=lambda n: progress.advance(task, n))


@app.command()
def get(ctx: typer.Context, remote: str, local: Path) -> None:
    """Copy a file or directory tree out of Tarbox."""
    fs = _ctx(ctx).fs()
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
    with _progress() as progress:
        task = progress.add_task("get", total=total)
        for src, dst in files:
            if fs.lstat(src).is_symlink:
                if dst.is_symlink() or dst.exists():
                    dst.unlink()
                dst.symlink_to(fs.readlink(src))
                continue
            with fs.open(src, "rb") as fin, open(dst, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    fout.write(chunk)
                    progress.advance(task, len(chunk))


@app.command()
@json_option
def audit(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option("--run", help="Only this run (a run_wasm or a CLI command).")] = None,
    since: Annotated[
        datetime | None, typer.Option("--since", help="Only records at or after this time (ISO 8601, UTC if naive).")
    ] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only paths matching this glob (* crosses /).")] = None,
    op: Annotated[str | None, typer.Option("--op", help="Only this operation (write, rename, ...).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many records.")] = None,
    retention_days: Annotated[
        float | None, typer.Option("--set-retention-days", help="Keep the tenant's records this long instead.")
    ] = None,
) -> None:
    """Show what was done in a tenant: every change, by which run, when."""
    c = _ctx(ctx)
    if retention_days is not None:
        if not c.tenant:
            raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
        c.tb().set_audit_retention(c.tenant, retention_days)
        if not c.as_json:
            err.print(f"audit records of {c.tenant} are kept {retention_days:g} days")
        return
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if op is not None:
        try:
            op = str(tarbox.AuditOp(op))
        except ValueError:
            raise typer.BadParameter(f"unknown operation {op!r}: one of {', '.join(tarbox.AuditOp)}") from None
    records = c.fs().audit(run_id=run, since=since, path=path, op=op, limit=limit)
    if c.as_json:
        emit_json([r.to_dict() for r in records])
        return
    whole = not out.is_terminal  # piped: the full run id and plain byte counts
    rows = [
        (
            r.seq,
            r.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            (str(r.run_id) if whole else str(r.run_id)[:8]) if r.run_id else "-",
            r.op,
            r.path or "",
            r.path2 or "",
            "" if r.bytes is None else r.bytes if whole else f"{r.bytes:,}",
            "" if r.layer_id is None else r.layer_id,
        )
        for r in records
    ]
    print_table(("seq", "time (UTC)", "run", "op", "path", "detail", "bytes", "layer"), rows)


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
    c = _ctx(ctx)
    if not c.tenant:
        raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
    fs = c.tb().filesystem(c.tenant, layer=layer)
    comp = compression if compression is not None else compression_for(dest)
    comp = None if comp in (None, "none") else comp
    total = _tree_bytes(fs, path)
    sink = nullcontext(sys.stdout.buffer) if dest == "-" else open(dest, "wb")  # noqa: SIM115 - closed by with
    with _progress() as progress, sink as f:
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

    c = _ctx(ctx)
    fs = c.fs()
    total = os.path.getsize(archive) if archive != "-" else None
    source = nullcontext(sys.stdin.buffer) if archive == "-" else open(archive, "rb")  # noqa: SIM115 - closed by with
    with _progress() as progress, source as f:
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
        "bytes": stats.bytes,
    }
    if layer is not None:
        record["checkpoint"] = layer
    if c.as_json:
        emit_json(record)
        return
    tail = f", checkpoint {layer}" if layer is not None else ""
    skipped = f", {stats.skipped} skipped (devices/FIFOs)" if stats.skipped else ""
    err.print(
        f"{verb} {stats.files} files, {stats.dirs} directories, {stats.symlinks} symlinks, "
        f"{stats.hardlinks} hard links ({stats.bytes:,} bytes){skipped}{tail}",
        highlight=False,
    )


@app.command()
@json_option
def gc(
    ctx: typer.Context,
    stale_after: Annotated[
        float, typer.Option("--stale-after", help="End stages of writers silent this many seconds (died).")
    ] = 3600.0,
) -> None:
    """Reclaim blocks that no file version references (and those of writers that died)."""
    c = _ctx(ctx)
    blocks, nbytes = c.fs().gc(stale_after)
    if c.as_json:
        emit_json({"blocks": blocks, "bytes": nbytes})
    else:
        out.print(f"freed {blocks} blocks, {nbytes} bytes")


@app.command()
@json_option
def fsck(
    ctx: typer.Context,
    data: Annotated[bool, typer.Option("--data/--no-data", help="Re-hash every block (the slow part).")] = True,
) -> None:
    """Check every stored invariant of the tenant (-t) or of all tenants; exit 1 on any problem."""
    c = _ctx(ctx)
    reports = c.tb().fsck(c.tenant, data=data)
    if c.as_json:
        emit_json([r.to_dict() for r in reports])
    else:
        for r in reports:
            looked = ", ".join(f"{k} {v}" for k, v in r.checked.items())
            out.print(f"{r.tenant}: {'clean' if r.ok else f'{len(r.problems)} problem(s)'} ({looked})")
            for p in r.problems:
                out.print(f"  {p.check}: {p.detail}", markup=False)
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


# -------------------------------------------------------------------- layers


@app.command()
@json_option
def checkpoint(
    ctx: typer.Context, message: Annotated[str, typer.Option("--message", "-m", help="What this state is.")] = ""
) -> None:
    """Freeze the current state (O(1)); later writes go to a new layer."""
    c = _ctx(ctx)
    layer = c.fs().checkpoint(message)
    if c.as_json:
        emit_json(layer.to_dict())
    else:
        out.print(f"checkpoint [bold]{layer.id}[/] {message}", highlight=False)


@app.command()
@json_option
def log(ctx: typer.Context) -> None:
    """The layer history, newest first."""
    c = _ctx(ctx)
    layers = list(reversed(c.fs().layers(counts=True)))
    if c.as_json:
        emit_json([layer.to_dict() for layer in layers])
        return
    rows = []
    for layer in layers:
        mark = " (head)" if layer.is_head else "" if layer.frozen else " (open)"
        n = layer.counts
        assert n is not None
        rows.append(
            (
                f"{layer.id}{mark}",
                layer.parent_id or "-",
                layer.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                n.added,
                n.modified,
                n.deleted,
                n.bytes,
                layer.message,
            )
        )
    print_table(("layer", "parent", "created", "+", "~", "-", "bytes", "message"), rows, box=False)


@app.command()
def switch(ctx: typer.Context, target: str) -> None:
    """View a layer (by id; writing there branches off it) or follow a branch (by name)."""
    _ctx(ctx).fs().switch(int(target) if target.isdigit() else target)
    out.print(f"now at {'layer ' if target.isdigit() else 'branch '}{target}", highlight=False)


@app.command()
@json_option
def branch(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="New branch; omit to list branches.")] = None,
    from_layer: Annotated[int | None, typer.Option("--from", help="Checkpoint to branch from.")] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Delete the branch pointer NAME.")] = False,
) -> None:
    """Create a named branch (default: from a checkpoint of the current view), delete one, or list them."""
    c = _ctx(ctx)
    fs = c.fs()
    if delete:
        if name is None:
            raise typer.BadParameter("--delete needs a branch NAME")
        fs.delete_branch(name)
        out.print(f"deleted branch {name} (its layers stay until `tarbox layer drop`)", highlight=False)
        return
    if name is None:
        current = fs.current_branch()
        data = [{"name": n, "head": h, "current": n == current} for n, h in fs.branches().items()]
        if c.as_json:
            emit_json(data)
        else:
            for b in data:
                out.print(f"{'*' if b['current'] else ' '} {b['name']} (layer {b['head']})", highlight=False)
        return
    head = fs.branch(name, from_layer)
    if c.as_json:
        emit_json(head.to_dict())
    else:
        out.print(f"created branch {name} at layer {head.id} (parent {head.parent_id})", highlight=False)


@app.command()
@json_option
def diff(
    ctx: typer.Context,
    a: int,
    b: Annotated[int | None, typer.Argument()] = None,
    patch: Annotated[bool, typer.Option("--patch", "-p", help="Unified diff of text files.")] = False,
) -> None:
    """What changed from layer A to layer B (default: the current view)."""
    c = _ctx(ctx)
    changes = c.fs().diff(a, b, patch=patch)
    if patch and not c.as_json:
        for ch in changes:
            sys.stdout.write(ch.patch if ch.patch else f"Binary or large file {ch.path} {ch.kind.value}\n")
        return
    if c.as_json:
        emit_json(
            [
                {
                    "path": ch.path,
                    "kind": ch.kind.value,
                    "type": ch.type.name.lower(),
                    "size_before": ch.size_before,
                    "size_after": ch.size_after,
                }
                for ch in changes
            ]
        )
        return
    sign = {"added": "[green]+[/]", "deleted": "[red]-[/]", "modified": "[yellow]~[/]"}
    for ch in changes:
        out.print(f"{sign[ch.kind.value]} {ch.path}", highlight=False)


@layer_app.command("drop")
@json_option
def layer_drop(
    ctx: typer.Context,
    layer: int,
    descendants: Annotated[bool, typer.Option("--descendants", "-r", help="Also drop every layer below.")] = False,
) -> None:
    """Delete history: a layer (and its descendants); frees blocks nothing else uses."""
    c = _ctx(ctx)
    fs = c.fs()
    before = fs.usage().used_bytes
    dropped = fs.drop_layer(layer, descendants=descendants)
    freed = before - fs.usage().used_bytes
    if c.as_json:
        emit_json({"dropped": dropped, "freed_bytes": freed})
    else:
        out.print(f"dropped layers {', '.join(map(str, dropped))}; freed {freed} bytes", highlight=False)


# ------------------------------------------------------------------------ db


@db_app.command("status")
@json_option
def db_status(ctx: typer.Context) -> None:
    """Show where the database is and whether the embedded server runs."""
    from tarbox.storage.server import embedded_status

    c = _ctx(ctx)
    if c.url:
        tb = c.tb()
        data = {"embedded": False, "url": _safe_url(c.url), "schema_version": tb.db.schema_version}
    else:
        s = embedded_status()
        data = {
            "embedded": True,
            "pgdata": str(s.pgdata),
            "initialized": s.initialized,
            "running": s.running,
            "pid": s.pid,
        }
    _show(c, data)


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL server."""
    from tarbox.storage.server import stop_embedded

    was = stop_embedded()
    out.print("stopped the embedded server" if was else "the embedded server was not running")


# ---------------------------------------------------------------------- demo


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    module: Annotated[
        Path,
        typer.Argument(
            help="A wasm32-wasip1 module or WASI 0.2 command component (.wasm), a .c or .rs file to build, "
            "or a .py script."
        ),
    ],
    dir: Annotated[
        str, typer.Option("--dir", help="Tenant directory preopened at the same guest path.")
    ] = "/workspace",
    maps: Annotated[list[str] | None, typer.Option("--map", help="GUEST=TARBOXPATH, repeatable.")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Every mutation fails with EROFS.")] = False,
    timeout: Annotated[float, typer.Option(help="Wall-clock limit in seconds.")] = 30.0,
    memory: Annotated[int, typer.Option(help="Linear memory limit in bytes.")] = 256 << 20,
    fuel: Annotated[int | None, typer.Option(help="Instruction fuel (off by default).")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V, repeatable.")] = None,
    checkpoint: Annotated[bool, typer.Option("--checkpoint", help="Checkpoint before the run.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="One-line summary on stderr.")] = False,
    component: Annotated[
        bool, typer.Option("--component", help="Build a .c or .rs source as a WASI 0.2 component (preview1 adapter).")
    ] = False,
) -> None:
    """Run a WebAssembly agent on the tenant's files: tarbox -t T run agent.wasm -- ARGS."""
    from tarbox.wasi import Mount, WasiHost
    from tarbox.wasi.toolchain import build_c

    c = _ctx(ctx)
    if not c.tenant:
        raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
    tenant = c.tb().get_tenant(c.tenant)
    mounts = [Mount(dir, dir, read_only)]
    envs: dict[str, str] = {}
    argv0 = [module.name]
    if module.suffix == ".py":  # CPython for WASI runs the script, kept read-only in the tenant
        from tarbox.wasi.python import GUEST_LIB, PREFIX, PythonRuntime

        py = PythonRuntime()
        fs = c.fs()
        py.install(fs)
        fs.makedirs("/opt/agents")
        fs.write_file(f"/opt/agents/{module.name}", module.read_bytes())
        mounts += [Mount(GUEST_LIB, f"{PREFIX}/lib", True), Mount("/agent", "/opt/agents", True)]
        envs = {"PYTHONHOME": "/usr/local", "PYTHONDONTWRITEBYTECODE": "1"}
        wasm, argv0 = py.wasm(), ["python", f"/agent/{module.name}"]
    elif module.suffix == ".rs":
        from tarbox.wasi.toolchain import build_rust

        wasm = build_rust(module)
    else:
        wasm = build_c(module) if module.suffix == ".c" else module.read_bytes()
    if component and module.suffix in (".c", ".rs"):
        from tarbox.wasi.toolchain import componentize

        wasm = componentize(wasm, module.stem)
    for m in maps or []:
        guest, _, path = m.partition("=")
        if not guest or not path:
            raise typer.BadParameter(f"--map wants GUEST=TARBOXPATH, got {m!r}")
        mounts.append(Mount(guest, path, read_only))
    envs.update(dict(e.partition("=")[::2] for e in env or []))
    host = WasiHost(
        c.tb(),
        tenant,
        dir,
        mounts=mounts,
        read_only=read_only,
        timeout=timeout,
        memory_limit=memory,
        fuel=fuel,
        checkpoint_before=checkpoint,
    )

    def to(stream):
        def write(data: bytes) -> None:
            stream.write(data)
            stream.flush()

        return write

    # -v on a terminal: a live line (spinner, elapsed time) while the agent runs
    live = err.status(f"running {module.name} on {tenant.name}") if verbose and err.is_terminal else nullcontext()
    with live:
        r = host.run(
            wasm,
            [*argv0, *ctx.args],
            envs,
            sys.stdin.buffer.read() if not sys.stdin.isatty() else b"",
            on_stdout=to(sys.stdout.buffer),
            on_stderr=to(sys.stderr.buffer),
        )
    if verbose or r.status.value != "exited":
        s = r.stats
        err.print(
            f"[dim]{r.status.value} exit={r.exit_code} {r.duration:.3f}s files={s.files_opened} "
            f"read={s.bytes_read}B written={s.bytes_written}B host-calls={s.host_calls} run={r.run_id}"
            f"{' checkpoint=' + str(r.checkpoint) if r.checkpoint else ''}{' trap=' + r.trap if r.trap else ''}[/]",
            highlight=False,
        )
    raise typer.Exit(r.exit_code if r.status.value == "exited" else 125)


@app.command()
def demo(ctx: typer.Context) -> None:
    """Show Tarbox's main job on the embedded database: an agent workspace in PostgreSQL."""
    from tarbox.demo import run_demo

    run_demo(_ctx(ctx).tb(), out)


def main() -> None:
    try:
        app()
    except (TarboxError, OSError) as exc:
        hint = _hint(exc)
        err.print(f"[red]tarbox: error:[/] {_one_line(exc)}{f' (try: {hint})' if hint else ''}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


def _hint(exc: BaseException) -> str:
    """The next command to try, for the errors that have an obvious one."""
    import errno as _errno

    from tarbox.errors import DatabaseError, SchemaVersionError, TenantNotFoundError

    if isinstance(exc, TenantNotFoundError):
        return "tarbox tenant list; tarbox tenant create NAME"
    if isinstance(exc, SchemaVersionError):
        return "pip install --upgrade tarbox"
    if isinstance(exc, DatabaseError) and not isinstance(exc, OSError):
        return "tarbox doctor"
    code = getattr(exc, "errno", None)
    if code == _errno.ENOENT and getattr(exc, "filename", None):
        parent = str(exc.filename).rstrip("/").rsplit("/", 1)[0] or "/"  # type: ignore[attr-defined]
        return f"tarbox ls {parent}"
    if code == _errno.EDQUOT:
        return "tarbox tenant info NAME; tarbox gc; tarbox layer drop"
    return ""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


if __name__ == "__main__":
    main()
