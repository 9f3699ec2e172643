"""The history commands: ``checkpoint``, ``log``, ``switch``, ``branch``, ``diff`` and
``layer drop``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tarbox.cli.context import ctx_of
from tarbox.cli.output import emit_json, json_option, out, print_table

app = typer.Typer()
layer_app = typer.Typer(no_args_is_help=True, help="Manage layers (history).")


@app.command()
@json_option
def checkpoint(
    ctx: typer.Context, message: Annotated[str, typer.Option("--message", "-m", help="What this state is.")] = ""
) -> None:
    """Freeze the current state (O(1)); later writes go to a new layer."""
    c = ctx_of(ctx)
    layer = c.fs().checkpoint(message)
    if c.as_json:
        emit_json(layer.to_dict())
    else:
        out.print(f"checkpoint [bold]{layer.id}[/] {message}", highlight=False)


@app.command()
@json_option
def log(ctx: typer.Context) -> None:
    """The layer history, newest first."""
    c = ctx_of(ctx)
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
    ctx_of(ctx).fs().switch(int(target) if target.isdigit() else target)
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
    c = ctx_of(ctx)
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
    c = ctx_of(ctx)
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
    c = ctx_of(ctx)
    fs = c.fs()
    before = fs.usage().used_bytes
    dropped = fs.drop_layer(layer, descendants=descendants)
    freed = before - fs.usage().used_bytes
    if c.as_json:
        emit_json({"dropped": dropped, "freed_bytes": freed})
    else:
        out.print(f"dropped layers {', '.join(map(str, dropped))}; freed {freed} bytes", highlight=False)
