"""The ``exec`` command: a native command (bash, git, python, gcc, ...) sandboxed over
the tenant's workspace (docs/exec.md)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tarbox.cli.context import ctx_of
from tarbox.cli.output import emit_json, err, json_option, out

app = typer.Typer()


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    dir: Annotated[str, typer.Option("--dir", help="The tenant directory seen as /workspace.")] = "/workspace",
    cwd: Annotated[str, typer.Option("--cwd", help="Working directory inside the sandbox.")] = "/workspace",
    timeout: Annotated[float, typer.Option(help="Wall-clock limit in seconds.")] = 300.0,
    cpu: Annotated[float | None, typer.Option(help="CPU limit in seconds (the whole process tree).")] = None,
    memory: Annotated[int, typer.Option(help="Memory limit in bytes (the whole process tree).")] = 1 << 30,
    pids: Annotated[int, typer.Option(help="Process limit.")] = 256,
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V, repeatable.")] = None,
    allow_net: Annotated[
        list[str] | None,
        typer.Option("--allow-net", help="HOST:PORT the command may reach (via a proxy), repeatable; default: none."),
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="One-line summary on stderr.")] = False,
) -> None:
    """Run a native command sandboxed over the tenant's workspace: tarbox -t T exec -- CMD ARGS.

    The run sees the workspace at a checkpoint taken first; its changes are committed
    in one atomic write-back when it ends (undo: tarbox switch CHECKPOINT)."""
    from tarbox.sandbox import Limits, NativeHost, SandboxUnavailable

    c = ctx_of(ctx)
    if not c.tenant:
        raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
    if not ctx.args:
        raise typer.BadParameter("no command: tarbox -t T exec -- CMD ARGS")
    limits = Limits(wall_seconds=timeout, cpu_seconds=cpu, memory_bytes=memory, pids=pids)
    try:
        host = NativeHost(c.tb(), c.tenant, dir, limits=limits, network=allow_net)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        r = host.run(
            list(ctx.args),
            stdin=sys.stdin.buffer.read() if not sys.stdin.isatty() else b"",
            env=dict(e.partition("=")[::2] for e in env or []),
            cwd=cwd,
        )
    except (SandboxUnavailable, ValueError) as exc:
        err.print(f"[red]tarbox exec: {exc}[/]", highlight=False)
        raise typer.Exit(125) from exc
    sys.stdout.buffer.write(r.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(r.stderr)
    sys.stderr.buffer.flush()
    if verbose or r.status.value != "exited":
        times = " ".join(f"{k}={v:.3f}s" for k, v in r.timings.items())
        err.print(
            f"[dim]{r.status.value} exit={r.exit_code} {r.duration:.3f}s changed={len(r.changed)} "
            f"run={r.run_id} checkpoint={r.checkpoint} {times}{' error=' + r.error if r.error else ''}[/]",
            highlight=False,
        )
    raise typer.Exit(r.exit_code if r.status.value == "exited" else 125)


@app.command("exec-prune")
@json_option
def exec_prune(
    ctx: typer.Context,
    idle_days: Annotated[
        float, typer.Option("--idle-days", help="Also remove the caches of tenants with no run for this many days.")
    ] = 7.0,
) -> None:
    """Remove native runs' local caches ($TARBOX_HOME/exec) of deleted tenants and of idle
    ones; never one a run is using. Each is a cache: the next run rebuilds it."""
    from tarbox.sandbox import prune_local_caches

    if idle_days < 0:
        raise typer.BadParameter("--idle-days must not be negative")
    c = ctx_of(ctx)
    removed = prune_local_caches(c.tb(), idle_for=idle_days * 86400)
    if c.as_json:
        emit_json([{"tenant_id": str(p.tenant_id), "reason": p.reason, "bytes": p.nbytes} for p in removed])
        return
    for p in removed:
        out.print(f"removed {p.tenant_id} ({p.reason}): {p.nbytes:,} bytes", highlight=False)
    if not removed:
        out.print("nothing to remove", highlight=False)
