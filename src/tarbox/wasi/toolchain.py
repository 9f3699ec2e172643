"""Build C guests to wasm32-wasip1 with the ``ziglang`` package (clang + wasi-libc), cached.

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
    text = src.read_bytes()
    key = hashlib.sha256(text + repr((FLAGS, extra, version("ziglang"))).encode()).hexdigest()[:24]
    out = cache_dir().parent / "guests" / f"{src.stem}-{key}.wasm"
    if out.exists():
        return out.read_bytes()
    with _lock:  # zig's own cache is safe to share, but one build at a time keeps memory low
        if out.exists():
            return out.read_bytes()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        cmd = [sys.executable, "-m", "ziglang", "cc", *FLAGS, *extra, "-o", str(tmp), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building {src} failed:\n{proc.stderr}")
        os.replace(tmp, out)
    return out.read_bytes()
