"""Shared by the WASI tests: build guests from source, run them on wasmtime's own
WASI over a real directory (the oracle) and on Tarbox, and compare trees."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from tarbox.wasi import WasiHost
from tarbox.wasi.toolchain import build_c, wasm_tools

GUESTS = Path(__file__).parent / "guests"


def guest(name: str) -> bytes:
    """A test guest: ``NAME.c`` compiled with zig, or ``NAME.wat`` assembled."""
    c = GUESTS / f"{name}.c"
    if c.exists():
        return build_c(c)
    return bytes(wasmtime.wat2wasm((GUESTS / f"{name}.wat").read_text()))


@dataclass
class Outcome:
    exit_code: int
    stdout: bytes
    stderr: bytes
    tree: dict


native_engine = wasmtime.Engine()
_native_modules: dict[int, wasmtime.Module] = {}


def _native_store(root: Path, io_dir: str, argv, env, stdin: bytes, preopens=None) -> wasmtime.Store:
    """A store with wasmtime's WASI context: ``root`` at /workspace, stdio in ``io_dir``."""
    cfg = wasmtime.WasiConfig()
    cfg.argv = argv
    cfg.env = list((env or {}).items())
    cfg.preopen_dir(str(root), "/workspace")
    for guest_path, local in (preopens or {}).items():
        cfg.preopen_dir(str(local), guest_path)
    Path(io_dir, "in").write_bytes(stdin)
    cfg.stdin_file = os.path.join(io_dir, "in")
    cfg.stdout_file = os.path.join(io_dir, "out")
    cfg.stderr_file = os.path.join(io_dir, "err")
    store = wasmtime.Store(native_engine)
    store.set_wasi(cfg)
    return store


def _oracle(root: Path, argv, env, stdin: bytes, preopens, start) -> Outcome:
    """Run ``start(store)`` (returns the exit code) with wasmtime's WASI context over
    ``root``; stdout, stderr and the resulting tree are the outcome."""
    with tempfile.TemporaryDirectory() as io_dir:
        store = _native_store(root, io_dir, argv, env, stdin, preopens)
        try:
            code = start(store)
        except wasmtime.ExitTrap as e:
            code = e.code
        out, err = Path(io_dir, "out").read_bytes(), Path(io_dir, "err").read_bytes()
    return Outcome(code, out, err, local_tree(root))


def run_native(
    wasm: bytes, root: Path, args=(), env=None, stdin: bytes = b"", setup=None, preopens=None, argv0="guest"
) -> Outcome:
    """The oracle: wasmtime's built-in WASI with ``root`` preopened as /workspace
    (and ``preopens``, guest path -> local directory, beside it)."""
    if setup is not None:
        setup(root)
    mod = _native_modules.get(hash(wasm))
    if mod is None:
        mod = _native_modules[hash(wasm)] = wasmtime.Module(native_engine, wasm)

    def start(store) -> int:
        linker = wasmtime.Linker(native_engine)
        linker.define_wasi()
        linker.instantiate(store, mod).exports(store)["_start"](store)
        return 0

    return _oracle(root, [argv0, *args], env, stdin, preopens, start)


def run_tarbox(host: WasiHost, wasm: bytes, args=(), env=None, stdin: bytes = b"", setup=None) -> Outcome:
    fs = host.filesystem()
    if setup is not None:
        setup(fs)
    r = host.run(wasm, ["guest", *args], env, stdin)
    assert r.trap is None, r.trap
    return Outcome(r.exit_code, r.stdout, r.stderr, tarbox_tree(host.tb.filesystem(host.tenant), "/workspace"))


def local_tree(root: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", Path(p).read_bytes())
    return out


def tarbox_tree(fs, root: str) -> dict:
    out = {}
    for dirpath, dirs, files in fs.walk(root):
        for name in dirs + files:
            p = dirpath.rstrip("/") + "/" + name
            rel = os.path.relpath(p, root)
            st = fs.lstat(p)
            if st.is_symlink:
                out[rel] = ("link", fs.readlink(p))
            elif st.is_dir:
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", fs.read_file(p))
    return out


_native_components: dict[int, object] = {}


def run_native_component(
    wasm: bytes, root: Path, args=(), env=None, stdin: bytes = b"", argv0="guest", preopens=None
) -> Outcome:
    """The Preview 2 oracle: wasmtime's own WASIp2 (``Linker.add_wasip2``) with ``root``
    preopened as /workspace, running a command component's ``wasi:cli/run``."""
    import wasmtime.component as wc

    comp = _native_components.get(hash(wasm))
    if comp is None:
        comp = _native_components[hash(wasm)] = wc.Component(native_engine, wasm)

    return _oracle(root, [argv0, *args], env, stdin, preopens, lambda store: start_component(store, comp))


def start_component(store: wasmtime.Store, comp) -> int:
    """Run a command component's ``wasi:cli/run`` on wasmtime's own WASIp2 in ``store``
    (a store of ``native_engine``, with its WasiConfig set); its exit code."""
    import wasmtime.component as wc

    linker = wc.Linker(native_engine)
    linker.add_wasip2()
    inst = linker.instantiate(store, comp)
    run_iface = next(n for n in comp.type.exports(native_engine) if n.startswith("wasi:cli/run@0.2"))
    run = inst.get_func(store, inst.get_export_index(store, "run", comp.get_export_index(run_iface)))
    return 0 if run(store).tag == "ok" else 1


def component_from_wat(wit: str, wat: str, workdir: Path, world: str | None = None) -> bytes:
    """A component from a WIT world and a core module in WAT (``wasm-tools component
    embed`` + ``new``): for syscall-level Preview 2 cases no C toolchain emits."""
    (workdir / "w.wit").write_text(wit)
    (workdir / "m.wat").write_text(wat)
    embed = ["embed", "w.wit", "m.wat", "-o", "e.wasm", *(["--world", world] if world else [])]
    for args in (embed, ["new", "e.wasm", "-o", "c.wasm"]):
        subprocess.run([wasm_tools(), "component", *args], cwd=workdir, check=True)
    return (workdir / "c.wasm").read_bytes()
