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

# The wasm stack of guests that need more than wasmtime's default 512 KiB: CPython's C
# recursion (json, re, pickle of nested data) stops with RecursionError within 8 MiB, as
# natively, where 512 KiB traps first. Such a guest runs on a thread of its own with
# room for the host's frames below its own (``on_big_stack``).
BIG_STACK = 8 << 20
_THREAD_STACK = BIG_STACK + (2 << 20)

_lock = threading.Lock()
_engines: dict[tuple[bool, bool], wasmtime.Engine] = {}
_ticker: threading.Thread | None = None
_stack_size_lock = threading.Lock()


def _tick_forever() -> None:
    while True:
        time.sleep(TICK)
        for engine in list(_engines.values()):
            engine.increment_epoch()


def engine(fuel: bool = False, big_stack: bool = False) -> wasmtime.Engine:
    """The process-wide engine for this configuration (and the ticker thread).
    ``big_stack``: guests get a ``BIG_STACK`` wasm stack (run them ``on_big_stack``)."""
    global _ticker
    with _lock:
        eng = _engines.get((fuel, big_stack))
        if eng is None:
            cfg = wasmtime.Config()
            cfg.epoch_interruption = True
            cfg.consume_fuel = fuel
            cfg.cranelift_opt_level = "speed"
            if big_stack:
                # wasmtime refuses (aborts, in wasmtime-py) a max_wasm_stack above its async
                # stack size, which wasmtime-py 50 exposes only in its C binding
                from wasmtime import _ffi

                _ffi.wasmtime_config_async_stack_size_set(cfg.ptr(), BIG_STACK + (1 << 20))
                cfg.max_wasm_stack = BIG_STACK
            eng = _engines[(fuel, big_stack)] = wasmtime.Engine(cfg)
        if _ticker is None:
            _ticker = threading.Thread(target=_tick_forever, name="tarbox-wasm-epoch", daemon=True)
            _ticker.start()
        return eng


def engine_key(fuel: bool, big_stack: bool = False) -> str:
    stack = "-stack8m" if big_stack else ""
    return f"wasmtime-{version('wasmtime')}-epoch-{'fuel' if fuel else 'nofuel'}-speed{stack}"


def on_big_stack(fn, *args):
    """``fn(*args)`` on a new thread whose stack holds a ``BIG_STACK`` guest and the host
    calls beneath it; returns or raises what ``fn`` does. ``threading.stack_size`` is
    process-wide, so it is set only while this thread starts."""
    box: dict = {}

    def body() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc

    with _stack_size_lock:
        old = threading.stack_size(_THREAD_STACK)
        try:
            thread = threading.Thread(target=body, name="tarbox-wasm-guest", daemon=True)
            thread.start()
        finally:
            threading.stack_size(old)
    thread.join()
    if "error" in box:
        raise box.pop("error")
    return box["value"]


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
        self._compiling: dict[tuple[str, str], threading.Lock] = {}
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

    def load_file(self, path: Path, digest: str, *, fuel: bool = False, big_stack: bool = False):
        """The core module in the file ``path``, whose SHA-256 the caller vouches for (a
        runtime checked once when it was unpacked): its bytes are read only to compile."""
        return self._load(digest, wasmtime.Module, path.read_bytes, fuel, big_stack)

    def _load(self, name: str, kind, produce, fuel: bool, big_stack: bool = False):
        key = (engine_key(fuel, big_stack), name)
        with self._lock:
            mod = self._mem.get(key)
            if mod is not None:
                self._mem.move_to_end(key)
                self.stats["memory_hits"] += 1
                return mod
            guard = self._compiling.setdefault(key, threading.Lock())
        with guard:  # one thread compiles a module; the others wait for it, not compile it too
            with self._lock:
                mod = self._mem.get(key)
            if mod is not None:
                return mod
            eng = engine(fuel, big_stack)
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
                self._compiling.pop(key, None)
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
