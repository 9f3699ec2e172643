"""The ``mount`` and ``umount`` commands: a tenant through FUSE."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from tarbox.cli.context import ctx_of
from tarbox.cli.output import out
from tarbox.errors import TarboxError

app = typer.Typer()


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
    from tarbox.integrations import mount as fuse_mount

    c = ctx_of(ctx)
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
    args = [str(mountpoint.absolute()), "--tenant", c.tenant]  # absolute: umount finds the process by it
    args += ["--url", c.url] if c.url else []
    args += ["--layer", str(layer)] if layer is not None else []
    args += ["--read-only"] if read_only else []
    args += ["--allow-other"] if allow_other else []
    if backend is not None:
        if backend not in fuse_mount.BACKENDS:
            raise typer.BadParameter(f"--backend is one of {', '.join(fuse_mount.BACKENDS)}")
        args += ["--backend", backend]
    if foreground:
        fuse_mount.main(args)
        return
    log = Path(os.environ.get("TARBOX_HOME") or tempfile.gettempdir()) / f"mount-{os.getpid()}.log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tarbox.integrations.mount", *args],
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
    """Unmount a Tarbox mount (also one whose process died: a stale mount point).
    Returns once the mount's process has committed everything and ended."""
    import subprocess
    import time

    servers = _mount_processes(str(mountpoint.absolute()))
    p = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True)
    if p.returncode != 0:
        lazy = subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, text=True)
        if lazy.returncode != 0:
            raise TarboxError(f"umount failed: {(p.stderr or lazy.stderr).strip()}")
    deadline = time.monotonic() + UMOUNT_WAIT
    while (alive := [pid for pid in servers if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        raise TarboxError(
            f"unmounted {mountpoint}, but its process (pid {alive[0]}) is still committing after {UMOUNT_WAIT:.0f} s;"
            " its log is in $TARBOX_HOME (mount-*.log)"
        )
    out.print(f"unmounted {mountpoint}")


UMOUNT_WAIT = 300.0  # seconds for a mount's final commit (a large last window to a slow database)


def _mount_processes(mountpoint: str) -> list[int]:
    """The ``tarbox mount`` processes serving ``mountpoint`` (Linux: read off /proc)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "tarbox.integrations.mount" in args and os.path.normpath(mountpoint) in map(os.path.normpath, args):
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False
