"""wasmtime engines, the epoch ticker, and the compiled-module cache.

One engine per configuration (with or without fuel metering) for the whole
process, so compiled modules are shared by every run. Wall-clock timeouts use
epoch interruption: a daemon thread bumps every engine's epoch each ``TICK``
seconds and each store sets its deadline in ticks (cheap in compiled code,
unlike fuel). Compiled modules are cached in memory and on disk, keyed by the
module's SHA-256 and the engine configuration (wasmtime version included):
compiling a 100 MB module takes ~40 s here, loading its serialized form is a
memory map.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from importlib.metadata import version
from pathlib import Path

import platformdirs
import wasmtime
import wasmtime.component

COMPONENT_HEADER = b"\x00asm\x0d\x00\x01\x00"  # magic, component-model version 0xd, layer 1


def is_component(wasm: bytes) -> bool:
    """A WebAssembly component (WASI Preview 2), not a core module: the header says."""
    return bytes(wasm[:8]) == COMPONENT_HEADER


TICK = 0.01  # seconds per epoch tick

_lock = threading.Lock()
_engines: dict[bool, wasmtime.Engine] = {}
_ticker: threading.Thread | None = None


def _tick_forever() -> None:
    while True:
        time.sleep(TICK)
        for engine in list(_engines.values()):
            engine.increment_epoch()


def engine(fuel: bool = False) -> wasmtime.Engine:
    """The process-wide engine for this configuration (and the ticker thread)."""
    global _ticker
    with _lock:
        eng = _engines.get(fuel)
        if eng is None:
            cfg = wasmtime.Config()
            cfg.epoch_interruption = True
            cfg.consume_fuel = fuel
            cfg.cranelift_opt_level = "speed"
            eng = _engines[fuel] = wasmtime.Engine(cfg)
        if _ticker is None:
            _ticker = threading.Thread(target=_tick_forever, name="tarbox-wasm-epoch", daemon=True)
            _ticker.start()
        return eng


def engine_key(fuel: bool) -> str:
    return f"wasmtime-{version('wasmtime')}-epoch-{'fuel' if fuel else 'nofuel'}-speed"


def cache_dir() -> Path:
    env = os.environ.get("TARBOX_HOME")
    base = Path(env) / "cache" if env else platformdirs.user_cache_path("tarbox", appauthor=False)
    return base / "modules"


class ModuleCache:
    """Compiled modules and components by (engine configuration, SHA-256 of the bytes)."""

    def __init__(self, directory: Path | None = None, capacity: int = 64) -> None:
        self.directory = directory
        self.capacity = capacity
        self._mem: OrderedDict[tuple[str, str], wasmtime.Module] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"memory_hits": 0, "disk_hits": 0, "compiled": 0}

    def load(self, wasm: bytes, *, fuel: bool = False, digest: str | None = None):
        """The compiled module (or ``wasmtime.component.Component``, for a component);
        raises ``wasmtime.WasmtimeError`` for invalid wasm. ``digest``: the bytes'
        SHA-256 (hex) when the caller has it already."""
        component = is_component(wasm)
        name = (digest or hashlib.sha256(wasm).hexdigest()) + (".component" if component else "")
        return self._load(name, wasmtime.component.Component if component else wasmtime.Module, lambda: wasm, fuel)

    def load_derived(self, name: str, produce, *, fuel: bool = False):
        """A component made from other bytes (a guest composed with a shim), cached under
        ``name``: ``produce`` (returning its bytes) runs only when no compiled copy exists."""
        return self._load(name + ".component", wasmtime.component.Component, produce, fuel)

    def _load(self, name: str, kind, produce, fuel: bool):
        key = (engine_key(fuel), name)
        with self._lock:
            mod = self._mem.get(key)
            if mod is not None:
                self._mem.move_to_end(key)
                self.stats["memory_hits"] += 1
                return mod
        eng = engine(fuel)
        mod = self._from_disk(eng, key, kind)
        if mod is None:
            mod = kind(eng, produce())
            self.stats["compiled"] += 1
            self._to_disk(mod, key)
        else:
            self.stats["disk_hits"] += 1
        with self._lock:
            self._mem[key] = mod
            while len(self._mem) > self.capacity:
                self._mem.popitem(last=False)
        return mod

    def _path(self, key: tuple[str, str]) -> Path:
        d = self.directory if self.directory is not None else cache_dir()
        return d / key[0] / f"{key[1]}.cwasm"

    def _from_disk(self, eng: wasmtime.Engine, key: tuple[str, str], kind):
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return kind.deserialize_file(eng, str(path))
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # from another build of wasmtime, or damaged
            return None

    def _to_disk(self, mod, key: tuple[str, str]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(mod.serialize())
            os.replace(tmp, path)  # atomic: readers never see half a file
        except OSError:
            pass  # a cache that cannot be written only costs compile time


default_cache = ModuleCache()
