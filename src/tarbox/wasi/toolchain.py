"""Build C guests to wasm32-wasip1 with the ``ziglang`` package (clang + wasi-libc),
and Rust guests with a system ``rustc`` that has the wasm32-wasi standard library; cached.

Used by the tests, the benchmark and the example agent, so every guest is
compiled from source in the repository. The first build on a machine also
builds zig's wasi-libc (~25 s); later builds of changed sources take ~1 s and
unchanged ones are read from the cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from importlib.metadata import version
from pathlib import Path

from tarbox.wasi.engine import cache_dir

FLAGS = ("-target", "wasm32-wasi", "-O2", "-s")
_lock = threading.Lock()


def build_c(source: str | Path, *extra: str) -> bytes:
    """Compile one C file to a WASI command module; returns the wasm bytes."""
    src = Path(source)
    cmd = [sys.executable, "-m", "ziglang", "cc", *FLAGS, *extra, "-o", "{out}", str(src)]
    return _build(src, cmd, version("ziglang"))


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


def _build(src: Path, cmd: list[str], tool: str) -> bytes:
    key = hashlib.sha256(src.read_bytes() + repr((cmd[1:], tool)).encode()).hexdigest()[:24]
    out = cache_dir().parent / "guests" / f"{src.stem}-{key}.wasm"
    if out.exists():
        return out.read_bytes()
    with _lock:  # the compilers' caches are safe to share, but one build at a time keeps memory low
        if out.exists():
            return out.read_bytes()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        proc = subprocess.run([str(tmp) if a == "{out}" else a for a in cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building {src} failed:\n{proc.stderr}")
        os.replace(tmp, out)
    return out.read_bytes()
