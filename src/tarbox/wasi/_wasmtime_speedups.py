"""Faster host calls for components under wasmtime-py 50, same values.

wasmtime-py converts every argument and result of a component host call by asking
the C API for the function's type anew on each call (a ``FuncType``, then each
record's fields, each variant's cases, whether a variant needs tags, recursively),
and converts a ``list<u8>`` one byte at a time (each byte is a 32-byte tagged value
in the C API). A 4 KiB stream write cost over a millisecond; the WASI workload spent
most of its time there. Here:

* ``add_func`` registers a host function whose parameter and result types are read
  once, at its first call, and kept;
* the type accessors the conversions use (fields, cases, element, ok/err, payload,
  tagging) are computed once per type object;
* byte lists are converted in bulk, with strided slices over the same C array.

The conversions themselves are wasmtime-py's, so values are the library's.

This leans on private parts of wasmtime-py (``_ffi``, ``component._linker``,
``component._types``, ``component._enter``), tested with the 50.x releases that
pyproject.toml allows. At import, :func:`shape_problems` checks that every part used
here is there; when one is not (another wasmtime-py), nothing is patched, ``add_func``
is the library's own, and one warning says components run on the slower path.
"""

from __future__ import annotations

import ctypes
import functools
import warnings

import wasmtime.component as wc

# what this module uses of wasmtime-py's internals: module -> attribute paths
_EXPECTED = {
    "wasmtime._ffi": (
        "wasmtime_component_val_t.kind",
        "wasmtime_component_val_t.of",
        "wasmtime_component_vallist_t",
        "wasmtime_component_vallist_new_uninit",
        "wasmtime_component_vallist_delete",
        "wasmtime_component_func_callback_t",
        "wasmtime_component_linker_instance_add_func",
        "WASMTIME_COMPONENT_U8",
        "WASMTIME_COMPONENT_LIST",
        "WASMTIME_COMPONENT_RESULT",
    ),
    "wasmtime.component._linker": ("FUNCTIONS.allocate", "FUNCTIONS.deallocate"),
    "wasmtime.component._types": ("FuncType._from_ptr", "FuncType.params", "FuncType.result"),
    "wasmtime.component._enter": ("catch_exceptions",),
    "wasmtime.component": (
        "ListType.convert_to_c",
        "ListType.convert_from_c",
        "ListType.element",
        "RecordType.fields",
        "TupleType.elements",
        "VariantType.cases",
        "VariantType._cases",
        "VariantType._tagged",
        "OptionType.payload",
        "OptionType._cases",
        "OptionType._tagged",
        "ResultType.ok",
        "ResultType.err",
        "ResultType._cases",
        "ResultType._tagged",
        "ResultType.convert_to_c",
        "EnumType.names",
        "FlagsType.names",
        "LinkerInstance._assert_not_locked",
        "LinkerInstance.ptr",
    ),
}


def shape_problems(expected: dict[str, tuple[str, ...]] = _EXPECTED) -> list[str]:
    """The internals this module patches or calls that are missing from the installed
    wasmtime-py (empty: all there)."""
    import importlib

    missing = []
    for module_name, paths in expected.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        for path in paths:
            obj = module
            for part in path.split("."):
                if not hasattr(obj, part):
                    missing.append(f"{module_name}.{path}")
                    break
                obj = getattr(obj, part)
    return missing


PROBLEMS = shape_problems()
ACTIVE = not PROBLEMS  # the fast path is in use
if ACTIVE:
    from wasmtime import _ffi as ffi
    from wasmtime.component import _linker, _types
    from wasmtime.component._enter import catch_exceptions
else:
    warnings.warn(
        "tarbox: this wasmtime-py lacks internals Tarbox's component speedups use ("
        + ", ".join(PROBLEMS[:3])
        + (", ..." if len(PROBLEMS) > 3 else "")
        + "); components run on wasmtime-py's own, slower conversions. Tested: wasmtime>=50,<51.",
        RuntimeWarning,
        stacklevel=2,
    )


def _memoize(cls, name: str) -> None:
    attr = getattr(cls, name)
    getter = attr.fget if isinstance(attr, property) else attr
    assert getter is not None
    key = f"_tarbox_{name}"

    @functools.wraps(getter)
    def cached(self):
        try:
            return self.__dict__[key]
        except KeyError:
            value = self.__dict__[key] = getter(self)
            return value

    setattr(cls, name, property(cached) if isinstance(attr, property) else cached)


def _fast_byte_lists() -> None:
    lt = wc.ListType
    to_c, from_c = lt.convert_to_c, lt.convert_from_c
    val_t = ffi.wasmtime_component_val_t
    stride, kind_at, value_at = ctypes.sizeof(val_t), val_t.kind.offset, val_t.of.offset
    u8 = bytes([ffi.WASMTIME_COMPONENT_U8.value])

    def convert_to_c(self, store, val, ptr):
        if not isinstance(val, (bytes, bytearray)) or not isinstance(self.element, wc.U8):
            return to_c(self, store, val, ptr)
        n = len(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, n)
        if n:
            buf = bytearray(n * stride)
            buf[kind_at::stride] = u8 * n
            buf[value_at::stride] = val
            ctypes.memmove(raw.data, (ctypes.c_char * len(buf)).from_buffer(buf), len(buf))
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
        ptr.contents.of.list = raw

    def convert_from_c(self, c):
        if not isinstance(self.element, wc.U8):
            return from_c(self, c)
        try:
            n = c.of.list.size
            return ctypes.string_at(c.of.list.data, n * stride)[value_at::stride] if n else b""
        finally:
            ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))

    lt.convert_to_c, lt.convert_from_c = convert_to_c, convert_from_c  # type: ignore[method-assign]  # the patch itself


def _install() -> None:
    if getattr(wc.ListType, "_tarbox_fast", False):
        return
    for cls, names in (
        (wc.ListType, ("element",)),
        (wc.RecordType, ("fields",)),
        (wc.TupleType, ("elements",)),
        (wc.VariantType, ("cases", "_cases", "_tagged")),
        (wc.OptionType, ("payload", "_cases", "_tagged")),
        (wc.ResultType, ("ok", "err", "_cases", "_tagged")),
        (wc.EnumType, ("names",)),
        (wc.FlagsType, ("names",)),
    ):
        for name in names:
            _memoize(cls, name)
    _fast_byte_lists()
    setattr(wc.ListType, "_tarbox_fast", True)  # noqa: B010 - an attribute the class has not got


if ACTIVE:
    _install()

_SIGNATURES: dict[int, tuple] = {}  # registered function -> (callable, param types, result type)


def _call(idx, context, ty_raw, args, nargs, results, nresults):  # noqa: ANN001 - C callback
    def run(store) -> None:
        func, params, result = _SIGNATURES[idx or 0]
        if params is None:  # first call: read the type once
            with _types.FuncType._from_ptr(ty_raw, owner=store) as fty:
                params = [ty.convert_from_c for _, ty in fty.params]
                result = None if fty.result is None else _lowerer(fty.result)
            _SIGNATURES[idx or 0] = (func, params, result)
        value = func(store, *[lift(args[i]) for i, lift in enumerate(params)])
        if result is not None:
            result(store, value, results)

    return catch_exceptions(context, run)


def _lowerer(ty):
    """How to lower a result of type ``ty``: ``result<_, E>`` answered with success (the
    commonest answer of all: a write, a mkdir) is set directly; the rest is wasmtime-py's."""
    if not isinstance(ty, wc.ResultType) or ty.ok is not None:
        return ty.convert_to_c
    tagged = ty._tagged()
    result_kind = ffi.WASMTIME_COMPONENT_RESULT

    def lower(store, value, ptr) -> None:
        if value.tag == "ok" if tagged and isinstance(value, wc.Variant) else value is None and not tagged:
            c = ptr.contents
            c.kind = result_kind
            c.of.result.is_ok = True
            c.of.result.val = None
        else:
            ty.convert_to_c(store, value, ptr)

    return lower


def add_func(instance: wc.LinkerInstance, name: str, func) -> None:
    """``LinkerInstance.add_func`` with the function's types read once (see the module doc);
    the library's own ``add_func`` when its internals are not the expected ones."""
    if not ACTIVE:
        instance.add_func(name, func)
        return
    instance._assert_not_locked()
    idx = _linker.FUNCTIONS.allocate(func)  # the slot keeps wasmtime-py's finalizer bookkeeping
    _SIGNATURES[idx] = (func, None, None)
    raw = name.encode()
    err = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), ctypes.create_string_buffer(raw), len(raw), _call, idx, _finalize
    )
    if err:
        raise wasmtime_error(err)


def _finalize(idx) -> None:  # noqa: ANN001 - C callback
    _SIGNATURES.pop(idx or 0, None)
    if _linker.FUNCTIONS:
        _linker.FUNCTIONS.deallocate(idx or 0)


def wasmtime_error(ptr):
    from wasmtime import WasmtimeError

    return WasmtimeError._from_ptr(ptr)


if ACTIVE:  # the C callbacks, made only where their types exist
    _call = ffi.wasmtime_component_func_callback_t(_call)
    _finalize = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_finalize)
