"""Agents written in Python (CPython compiled to WASI) and Rust, run in Tarbox and,
as the oracle, on wasmtime's own WASI over a real directory: same stdout, same
exit code, same resulting tree (docs/agents.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tarbox.wasi import WasiHost
from tarbox.wasi.python import GUEST_LIB, PythonRuntime
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


@pytest.fixture(scope="module")
def python() -> PythonRuntime:
    return PythonRuntime().ensure()


def test_python_agent_matches_wasmtime(tb, tenant, tmp_path, python):
    seed_local(tmp_path)
    (tmp_path / "agent.py").write_bytes((EXAMPLES / "agent.py").read_bytes())
    env = {"PYTHONHOME": "/usr/local", "PYTHONDONTWRITEBYTECODE": "1"}
    native = run_native(
        python.wasm(),
        tmp_path,
        ["/workspace/agent.py", "count"],
        env,
        preopens={GUEST_LIB: python.lib_path.parent},
        argv0="python",
    )
    assert native.exit_code == 0, native.stderr
    fs = tb.filesystem(tenant)
    seed_tarbox(fs)
    fs.write_file("/workspace/agent.py", (EXAMPLES / "agent.py").read_bytes())
    r = python.run(tb, tenant, script_path="/workspace/agent.py", args=["count"])
    assert (r.exit_code, r.stdout, r.stderr) == (native.exit_code, native.stdout, native.stderr)
    assert r.stdout == b"task count: 2 text files, 6 words\n"
    assert tarbox_tree(fs, "/workspace") == native.tree
    # the standard library is there, read-only, for every later run
    r = python.run(tb, tenant, "open('/usr/local/lib/python3.11/os.py', 'a')")
    assert r.exit_code == 1 and (b"Read-only file system" in r.stderr or b"Permission" in r.stderr), r.stderr[-300:]
    assert python.install(fs) is False


def test_python_code_sees_only_its_workspace(tb, tenant, python):
    code = (
        "import os\n"
        "for p in ['/', '/opt/python', '/workspace', '/workspace/../..', '/usr/local/lib/python3.11/os.py']:\n"
        "    print(p, os.path.exists(p))\n"
    )
    r = python.run(tb, tenant, code)
    assert r.ok, r.stderr[-500:]
    # no root directory, not the tenant's copy of the library (only its read-only mount),
    # '..' stays inside
    assert r.stdout.decode().splitlines() == [
        "/ False",
        "/opt/python False",
        "/workspace True",
        "/workspace/../.. False",
        "/usr/local/lib/python3.11/os.py True",
    ]


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


def test_python_agent_as_a_component_matches_wasmtime_wasip2(tb, tenant, tmp_path, python):
    """CPython for WASI wrapped as a component: the interpreter, its standard library
    (a read-only second preopen) and the agent script, over Preview 2 on both hosts."""
    wasm = componentize(python.wasm(), "python3.11")
    seed_local(tmp_path)
    (tmp_path / "agent.py").write_bytes((EXAMPLES / "agent.py").read_bytes())
    env = {"PYTHONHOME": "/usr/local", "PYTHONDONTWRITEBYTECODE": "1"}
    argv = ["/workspace/agent.py", "count"]
    lib = {GUEST_LIB: python.lib_path.parent}
    native = run_native_component(wasm, tmp_path, argv, env, preopens=lib, argv0="python")
    assert native.exit_code == 0, native.stderr[-500:]
    fs = tb.filesystem(tenant)
    seed_tarbox(fs)
    fs.write_file("/workspace/agent.py", (EXAMPLES / "agent.py").read_bytes())
    python.install(fs)
    r = python.host(tb, tenant).run(wasm, ["python", *argv], env)
    assert (r.exit_code, r.stdout, r.stderr) == (native.exit_code, native.stdout, native.stderr)
    assert r.stdout == b"task count: 2 text files, 6 words\n"
    assert tarbox_tree(fs, "/workspace") == native.tree
