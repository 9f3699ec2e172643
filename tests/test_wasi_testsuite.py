"""The official WASI test suite (WebAssembly/wasi-testsuite, preview1 tests in Rust and
C, prebuilt in ``../shared/wasi-testsuite``) through ``WasiHost``, as modules and as
components (wrapped with the preview1 adapter, as ``tarbox run --component`` wraps C
agents), each beside wasmtime's own WASI (Preview 1, and WASIp2 for components) on a
temporary copy of the test's directories, in the same run.

A test's expectation is the suite's own JSON (exit code, stdout). Tarbox must pass
all of them. wasmtime is the reference: it must pass all but the ones listed in
``WASMTIME_FAILS``, where the suite (and Linux) disagree with it.

``python tests/test_wasi_testsuite.py`` prints the per-test table of docs/wasi.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc

from tarbox.fs.local import copy_in
from tarbox.wasi import WasiHost
from tarbox.wasi.host import Mount
from tarbox.wasi.toolchain import componentize
from wasi_support import native_engine, start_component

SUITE = Path(os.environ.get("TARBOX_WASI_TESTSUITE", Path(__file__).parents[2] / "shared" / "wasi-testsuite"))
# wasmtime answers EINVAL to rmdir("dir/"); the suite, POSIX and Linux remove the directory
WASMTIME_FAILS = {"rust/remove_directory_trailing_slashes"}


@dataclass(frozen=True)
class Case:
    name: str  # "rust/NAME" or "c/NAME"
    wasm: Path
    dirs: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    exit_code: int
    stdout: str | None

    def passed(self, exit_code, stdout: bytes) -> bool:
        return exit_code == self.exit_code and (self.stdout is None or stdout.decode(errors="replace") == self.stdout)


def cases() -> list[Case]:
    out = []
    for lang in ("c", "rust"):
        for wasm in sorted((SUITE / "tests" / lang / "testsuite" / "wasm32-wasip1").glob("*.wasm")):
            spec = json.loads(wasm.with_suffix(".json").read_text()) if wasm.with_suffix(".json").exists() else {}
            out.append(
                Case(
                    f"{lang}/{wasm.stem}",
                    wasm,
                    tuple(spec.get("dirs", ())),
                    tuple(spec.get("args", ())),
                    tuple(spec.get("env", {}).items()),
                    spec.get("exit_code", 0),
                    spec.get("stdout"),
                )
            )
    return out


_components: dict[Path, bytes] = {}


def binary(case: Case, component: bool) -> bytes:
    if not component:
        return case.wasm.read_bytes()
    if case.wasm not in _components:
        _components[case.wasm] = componentize(case.wasm.read_bytes(), case.wasm.stem)
    return _components[case.wasm]


def run_tarbox(tb, case: Case, component: bool) -> tuple[int, bytes, str | None]:
    """The test in a fresh tenant holding a fresh copy of its directories."""
    tenant = tb.create_tenant(f"wts-{uuid.uuid4().hex[:10]}")
    try:
        fs = tb.filesystem(tenant)
        for d in case.dirs:
            copy_in(fs, case.wasm.parent / d, f"/{d}")
        host = WasiHost(tb, tenant, mounts=[Mount(d, f"/{d}") for d in case.dirs], timeout=60)
        r = host.run(binary(case, component), [case.wasm.name, *case.args], dict(case.env))
        return r.exit_code, r.stdout, r.trap
    finally:
        tb.delete_tenant(tenant)


def run_wasmtime(case: Case, component: bool) -> tuple[int | str, bytes]:
    """The test on wasmtime's own WASI (WASIp2 for a component) over a temporary copy."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = wasmtime.WasiConfig()
        cfg.argv = [case.wasm.name, *case.args]
        cfg.env = list(case.env)
        for d in case.dirs:
            shutil.copytree(case.wasm.parent / d, Path(tmp, d), symlinks=True)
            cfg.preopen_dir(str(Path(tmp, d)), d)
        cfg.stdout_file = os.path.join(tmp, "stdout")
        cfg.stderr_file = os.path.join(tmp, "stderr")
        store = wasmtime.Store(native_engine)
        store.set_wasi(cfg)
        try:
            if component:
                code = start_component(store, wc.Component(native_engine, binary(case, True)))
            else:
                code = _start_module(store, case)
        except wasmtime.ExitTrap as exc:
            code = exc.code
        except (wasmtime.Trap, wasmtime.WasmtimeError):
            code = "trap"
        return code, Path(tmp, "stdout").read_bytes()


def _start_module(store, case: Case) -> int:
    linker = wasmtime.Linker(native_engine)
    linker.define_wasi()
    linker.instantiate(store, wasmtime.Module(native_engine, case.wasm.read_bytes())).exports(store)["_start"](store)
    return 0


CASES = cases() if SUITE.is_dir() else []


@pytest.mark.skipif(not CASES, reason=f"the WASI test suite is not at {SUITE} (set TARBOX_WASI_TESTSUITE)")
@pytest.mark.parametrize("component", [False, True], ids=["module", "component"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_official_wasi_testsuite(tb, case: Case, component: bool):
    theirs, their_out = run_wasmtime(case, component)
    assert case.passed(theirs, their_out) == (case.name not in WASMTIME_FAILS), (
        f"wasmtime, the reference, gave exit {theirs}: the harness or the suite changed"
    )
    code, out, trap = run_tarbox(tb, case, component)
    assert case.passed(code, out), f"exit {code} (expected {case.exit_code}), stdout {out!r}, trap {trap}"


def test_the_suite_is_whole():
    """60 tests: none lost to a moved folder or a renamed file."""
    if not CASES:
        pytest.skip(f"the WASI test suite is not at {SUITE}")
    assert len(CASES) == 60


def table() -> str:
    """The per-test table of docs/wasi.md, measured now."""
    import tarbox

    tb = tarbox.connect()
    rows = [
        "| test | Tarbox (module) | Tarbox (component) | wasmtime (module) | wasmtime (component) |",
        "|---|---|---|---|---|",
    ]
    totals = [0, 0, 0, 0]
    for case in CASES:
        marks = []
        for i, ok in enumerate(
            (
                case.passed(*run_tarbox(tb, case, False)[:2]),
                case.passed(*run_tarbox(tb, case, True)[:2]),
                case.passed(*run_wasmtime(case, False)),
                case.passed(*run_wasmtime(case, True)),
            )
        ):
            totals[i] += ok
            marks.append("pass" if ok else "**fail**")
        rows.append(f"| {case.name} | " + " | ".join(marks) + " |")
    rows.append(f"| **total of {len(CASES)}** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
