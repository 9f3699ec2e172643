"""Agents written in Rust, run in Tarbox and, as the oracle, on wasmtime's own WASI over
a real directory: same stdout, same exit code, same resulting tree (docs/agents.md).
Python agents: tests/test_python.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tarbox.wasi import WasiHost
from tarbox.wasi.toolchain import INSTALL_RUST, build_rust, componentize, rustc
from wasi_support import run_native, run_native_component, tarbox_tree

EXAMPLES = Path(__file__).parent.parent / "examples"
FILES = {"notes.txt": b"remember the milk\n", "docs/a.txt": b"one two three\n", "docs/b.md": b"not text\n"}


def seed_local(root: Path) -> None:
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def seed_tarbox(fs) -> None:
    for rel, data in FILES.items():
        fs.makedirs(str(Path("/workspace", rel).parent))
        fs.write_file(f"/workspace/{rel}", data)


@pytest.mark.skipif(rustc() is None, reason=f"no rustc with a WASI standard library ({INSTALL_RUST})")
@pytest.mark.parametrize("component", [False, True], ids=["module", "component"])
def test_rust_agent_matches_wasmtime(tb, tenant, tmp_path, component):
    """Rust's std over Preview 1, and wrapped as a component over Preview 2 (fs::rename
    included, through the component shim), against wasmtime's own WASI of the same kind."""
    wasm = build_rust(EXAMPLES / "agent.rs")
    if component:
        wasm = componentize(wasm, "agent-rs")
    seed_local(tmp_path)
    native = (run_native_component if component else run_native)(wasm, tmp_path, ["count"])
    assert native.exit_code == 0, native.stderr
    fs = tb.filesystem(tenant)
    seed_tarbox(fs)
    r = WasiHost(tb, tenant).run(wasm, ["agent", "count"])
    assert (r.exit_code, r.stdout, r.stderr) == (native.exit_code, native.stdout, native.stderr)
    assert r.stdout == b"task count: 2 text files, 6 words\n"
    assert tarbox_tree(fs, "/workspace") == native.tree
