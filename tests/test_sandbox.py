"""Native runs (tarbox.sandbox): real tools (bash, git, python, pip, pytest, gcc, make,
node) over a tenant's workspace, the escapes a sandbox must refuse, its limits, and the
write-back's contract (one atomic commit, conflicts refused, each run undoable).

The oracle for what a run does to files is Linux: the same script run in a local
directory gives the tree the tenant must hold afterwards."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from sandbox_support import python_project, web_server_off_loopback
from tarbox.fs import FileType
from tarbox.sandbox import ExecStatus, Limits, NativeHost, seccomp, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.fixture
def host(request, tb, tenant, tmp_path):
    """The default host; parametrized (indirect) with "overlay" or "copy", that workspace."""
    return NativeHost(tb, tenant, home=tmp_path / "home", workspace=getattr(request, "param", "auto"))


both_workspaces = pytest.mark.parametrize("host", ["overlay", "copy"], indirect=True)


def tenant_tree(fs, root="/workspace") -> dict[str, object]:
    """path -> content (files), target (symlinks) or 'dir', relative to ``root``."""
    out = {}
    for top, dirs, files in fs.walk(root):
        for d in dirs:
            out[os.path.relpath(f"{top}/{d}", root)] = "dir"
        for f in files:
            p = f"{top}/{f}"
            st = fs.lstat(p)
            out[os.path.relpath(p, root)] = fs.readlink(p) if st.type is FileType.SYMLINK else fs.read_file(p)
    return out


def local_tree(root: Path) -> dict[str, object]:
    out = {}
    for top, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(top, d), root)] = "dir"
        for f in files:
            p = os.path.join(top, f)
            out[os.path.relpath(p, root)] = os.readlink(p) if os.path.islink(p) else Path(p).read_bytes()
    return out


def seed(fs, files: dict[str, bytes]) -> None:
    with fs.batch():
        for rel, data in files.items():
            fs.makedirs(os.path.dirname(f"/workspace/{rel}"), exist_ok=True)
            fs.write_file(f"/workspace/{rel}", data)


CHANGES = """
set -e
echo new > added.txt
rm gone.txt
rm -r olddir
mkdir olddir && echo fresh > olddir/only.txt
rm -r replaced && mkdir replaced && echo b > replaced/b
chmod 600 keep/mode.txt
echo appended >> keep/data.txt
ln -s keep/data.txt link
ln keep/data.txt hard
mkdir -p deep/er/still && echo x > deep/er/still/f
mv keep/renamed.txt keep/moved.txt
printf Y | dd of=keep/same.txt conv=notrunc status=none && touch -d @978307200 keep/same.txt
"""
OLD_MTIME_NS = 978307200 * 10**9  # keep/same.txt's before and after: only its content moves


@both_workspaces
def test_changes_written_back_as_linux_makes_them(tb, tenant, host, tmp_path):
    files = {
        "gone.txt": b"g",
        "olddir/a": b"a",
        "olddir/sub/b": b"b",
        "replaced/a": b"a",
        "keep/mode.txt": b"m",
        "keep/data.txt": b"data\n",
        "keep/renamed.txt": b"r",
        "keep/same.txt": b"X",
    }
    seed(tb.filesystem(tenant), files)
    tb.filesystem(tenant).utime("/workspace/keep/same.txt", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    local = tmp_path / "local"
    for rel, data in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    os.utime(local / "keep/same.txt", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    subprocess.run(["bash", "-c", CHANGES], cwd=local, check=True)

    r = host.run(CHANGES)
    assert r.ok, (r.status, r.stderr, r.error)
    fs = tb.filesystem(tenant)
    assert tenant_tree(fs) == local_tree(local)
    assert fs.lstat("/workspace/keep/mode.txt").mode == 0o600
    assert fs.lstat("/workspace/hard").ino == fs.lstat("/workspace/keep/data.txt").ino  # one inode, two names
    assert r.checkpoint is not None and "/workspace/gone.txt" in r.changed


@both_workspaces
def test_each_run_is_undone_by_its_checkpoint_and_recorded(tb, tenant, host):
    seed(tb.filesystem(tenant), {f"src/m{i}.py": b"x = %d\n" % i for i in range(20)})
    r = host.run("rm -rf /workspace/* && echo wiped")
    assert r.ok and r.stdout == b"wiped\n"
    fs = tb.filesystem(tenant)
    assert fs.listdir("/workspace") == []
    fs.switch(r.checkpoint)
    assert len(fs.listdir("/workspace/src")) == 20
    from tarbox import runs

    rec = runs.get(tb, tenant, r.run_id)
    assert rec is not None and rec.status == "exited" and rec.stdout == b"wiped\n" and "rm -rf" in rec.command
    assert {a.path for a in fs.audit(run_id=r.run_id)} >= {"/workspace/src/m0.py"}


def test_a_python_project_with_git_pytest_and_a_venv(tb, tenant, host):
    files = python_project()
    seed(tb.filesystem(tenant), files)

    r = host.run("PYTHONPATH=vendor python3 -m pytest -q -p no:cacheprovider tests")
    assert r.ok, r.stdout.decode()[-2000:] + r.stderr.decode()[-2000:]
    assert b"50 passed" in r.stdout
    git = (
        "git init -q . && git -c user.name=a -c user.email=a@b add -A proj tests"
        " && git -c user.name=a -c user.email=a@b commit -qm init && echo y >> proj/mod3.py"
        " && git status --porcelain && git diff --stat"
    )
    r = host.run(git)
    assert r.ok, r.stderr
    assert r.stdout.splitlines()[0] == b" M proj/mod3.py"
    r = host.run("git log --oneline | wc -l && git status --porcelain --untracked-files=no")
    assert r.ok and r.stdout.split() == [b"1", b"M", b"proj/mod3.py"]  # the repository was written back whole
    venv = (
        "python3 -m venv .venv && python3 -m pip wheel -q --no-build-isolation --no-deps ./mypkg -w wheels"
        " && .venv/bin/pip install -q --no-index --find-links wheels mypkg"
        " && .venv/bin/python -c 'import mypkg; print(mypkg.ANSWER)'"
    )
    r = host.run(venv)
    assert r.ok, r.stderr.decode()[-3000:]
    assert r.stdout.strip().endswith(b"42")
    r = host.run(".venv/bin/python -c 'import mypkg; print(mypkg.ANSWER)'")  # installed, and kept
    assert r.ok and r.stdout == b"42\n"


def test_gcc_make_and_node(tb, tenant, host):
    seed(
        tb.filesystem(tenant),
        {
            "c/hello.c": b'#include <stdio.h>\nint main(void) { printf("hello %d\\n", 6 * 7); return 0; }\n',
            "c/Makefile": b"hello: hello.c\n\tgcc -O2 -o hello hello.c\n",
        },
    )
    r = host.run("cd c && make -s && ./hello && make -s && echo up-to-date")
    assert r.ok, r.stderr
    assert r.stdout == b"hello 42\nup-to-date\n"
    fs = tb.filesystem(tenant)
    assert fs.lstat("/workspace/c/hello").mode & 0o111  # the executable kept its mode
    if shutil.which("node", path="/usr/bin:/usr/local/bin"):
        r = host.run(["node", "-e", "console.log([1,2,3].map(x => x * 2).join(','))"])
        assert r.ok and r.stdout == b"2,4,6\n", r.stderr


def test_a_2000_file_tar_extracted_then_git_status(tb, tenant, host):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(2000):
            data = f"line {i}\n".encode()
            info = tarfile.TarInfo(f"lib/d{i % 40}/f{i}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tb.filesystem(tenant).makedirs("/workspace")
    tb.filesystem(tenant).write_file("/workspace/lib.tar", buf.getvalue())
    r = host.run(
        "tar xf lib.tar && rm lib.tar && git init -q && git add -A && git -c user.name=a -c user.email=a@b"
        " commit -qm lib && git status --porcelain | wc -l"
    )
    assert r.ok, r.stderr
    assert r.stdout == b"0\n"
    fs = tb.filesystem(tenant)
    assert fs.read_file("/workspace/lib/d7/f1207.txt") == b"line 1207\n"
    assert sum(len(f) for _, _, f in fs.walk("/workspace/lib")) == 2000


def test_escapes_are_refused(tb, tenant, new_tenant, host):
    other = new_tenant()
    seed(tb.filesystem(other), {"secret": b"other tenant's"})
    home = os.environ.get("TARBOX_HOME", "/nonexistent-home")
    probe = f"""
for p in /etc/shadow /root {home} /run/postgresql /var/run /home /work /proc/1/root/work; do
  test -e "$p" && echo "visible: $p"
done
grep -rs "other tenant's" / --exclude-dir=proc --exclude-dir=usr --exclude-dir=sys && echo "found the other tenant"
for p in /x /usr/x /etc/x /bin/x; do touch "$p" 2>/dev/null && echo "wrote $p"; done
mkdir -p /tmp/m && mount -t tmpfs x /tmp/m 2>/dev/null && echo mounted
grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd)' /proc/self/status
id -u
echo done
"""
    r = host.run(probe)
    out = r.stdout.decode()
    assert r.ok, r.stderr
    assert "visible" not in out and "found the other" not in out and "wrote" not in out and "mounted" not in out, out
    assert "NoNewPrivs:\t1" in out and "CapEff:\t0000000000000000" in out and "CapBnd:\t0000000000000000" in out
    assert out.splitlines()[-2:] == ["1000", "done"]


def test_system_calls_denied_by_the_filter(host):
    code = (
        "import ctypes, errno\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for name, nr in [('keyctl', 250), ('bpf', 321), ('unshare', 272), ('ptrace', 101), ('mount', 165)]:\n"
        "    rc = libc.syscall(nr, 0, 0, 0, 0, 0)\n"
        "    print(name, rc, errno.errorcode.get(ctypes.get_errno()))\n"
    )
    r = host.run(["python3", "-c", code])
    assert r.ok, r.stderr
    assert [line.split()[1:] for line in r.stdout.decode().splitlines()] == [["-1", "EPERM"]] * 5


def test_no_network_and_no_database(tb, host, db_url):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"for addr in [('127.0.0.1', {port}), ('10.0.0.1', 80), ('127.0.0.1', 5432)]:\n"
            "    try:\n"
            "        socket.create_connection(addr, timeout=2); print('connected', addr)\n"
            "    except OSError as e:\n"
            "        print('refused', e.errno)\n"
            "import os; print(sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else 'no sys')\n"
        )
        r = host.run(["python3", "-c", code])
    finally:
        listener.close()
    assert r.ok, r.stderr
    assert b"connected" not in r.stdout and r.stdout.count(b"refused") == 3, r.stdout


def test_limits_kill_the_whole_run_and_say_which(tb, tenant, tmp_path):
    def host(**limits):
        return NativeHost(tb, tenant, home=tmp_path / "home", limits=Limits(**limits))

    t0 = time.monotonic()
    r = host(wall_seconds=1).run("sleep 30 & sleep 30; echo never")
    assert r.status is ExecStatus.TIMEOUT and time.monotonic() - t0 < 10 and b"never" not in r.stdout
    r = host(pids=32).run(":(){ :|:& };:; sleep 20")
    assert r.status is ExecStatus.PIDS_LIMIT, (r.status, r.error)
    bomb = "x = bytearray(400 << 20); x[::4096] = b'1' * len(x[::4096])"
    r = host(memory_bytes=128 << 20).run(["python3", "-c", bomb])
    assert r.status is ExecStatus.MEMORY_LIMIT, (r.status, r.exit_code, r.stderr[-300:])
    r = host(output_bytes=1 << 20).run("yes")
    assert r.status is ExecStatus.OUTPUT_LIMIT and len(r.stdout) == 1 << 20
    r = host(cpu_seconds=1).run(["python3", "-c", "while True: pass"])
    assert r.status is ExecStatus.CPU_LIMIT, (r.status, r.error)
    assert host().run("echo still fine").ok  # the tenant's sandbox is usable after each


@both_workspaces
def test_the_run_sees_its_checkpoint_and_a_concurrent_write_wins_or_conflicts(tb, tenant, host):
    fs = tb.filesystem(tenant)
    seed(fs, {"shared.txt": b"before\n", "mine.txt": b"m\n"})
    box = {}

    def run(script):
        box["r"] = host.run(script)

    th = threading.Thread(target=run, args=("sleep 1.5; cat shared.txt; echo run > shared.txt; echo r > own.txt",))
    th.start()
    time.sleep(0.7)
    fs.write_file("/workspace/shared.txt", b"api\n")
    fs.write_file("/workspace/api.txt", b"a\n")
    th.join(30)
    r = box["r"]
    assert r.stdout == b"before\n"  # pinned at its checkpoint
    assert r.status is ExecStatus.CONFLICT and r.conflicts == ["/workspace/shared.txt"], (r.status, r.error)
    fs = tb.filesystem(tenant)
    assert fs.read_file("/workspace/shared.txt") == b"api\n" and not fs.exists("/workspace/own.txt")

    th = threading.Thread(target=run, args=("sleep 1; echo r > own.txt",))
    th.start()
    time.sleep(0.5)
    fs.write_file("/workspace/api2.txt", b"b\n")  # elsewhere: both kept
    th.join(30)
    assert box["r"].ok, box["r"].error
    assert fs.read_file("/workspace/own.txt") == b"r\n" and fs.read_file("/workspace/api2.txt") == b"b\n"
    r = host.run("cat api.txt api2.txt own.txt")  # the next run's tree brought forward by the diff
    assert r.stdout == b"a\nb\nr\n"


def test_several_runs_of_one_tenant_at_once(tb, tenant, host):
    seed(tb.filesystem(tenant), {"base.txt": b"base\n"})
    results = [None] * 4

    def run(i):
        results[i] = host.run(f"sleep 0.3; cat base.txt > out{i}.txt")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert all(r.ok for r in results), [(r.status, r.error) for r in results]
    fs = tb.filesystem(tenant)
    assert [fs.read_file(f"/workspace/out{i}.txt") for i in range(4)] == [b"base\n"] * 4


def test_quota_exhausted_writes_nothing_back(tb, new_tenant, tmp_path):
    tenant = new_tenant(quota_bytes=1 << 20)
    host = NativeHost(tb, tenant, home=tmp_path / "home")
    r = host.run("echo small > a.txt && head -c 3000000 /dev/urandom > big.bin")
    assert r.status is ExecStatus.FAILED and "quota" in (r.error or "").lower(), (r.status, r.error)
    assert not tb.filesystem(tenant).exists("/workspace/a.txt")


def test_seccomp_numbers_match_the_kernel_headers():
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not header.exists():
        pytest.skip("no kernel headers to check against")
    numbers = {}
    for line in header.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "#define" and parts[1].startswith("__NR_"):
            numbers[parts[1][5:]] = int(parts[2])
    assert {k: numbers.get(k) for k in seccomp.DENIED_X86_64} == seccomp.DENIED_X86_64


LISTING = (
    "find . -mindepth 1 -printf '%y %m %P' \\( -type l -printf ' -> %l' -o -true \\) -printf '\\n'"
    " | sort; find . -type f -print0 | sort -z | xargs -0 -r sha1sum"
)


def expected_listing(fs) -> bytes:
    """What LISTING prints over the tenant's /workspace, computed from the API's view."""
    import hashlib

    lines, sums = [], []
    kinds = {FileType.FILE: "f", FileType.DIRECTORY: "d", FileType.SYMLINK: "l", FileType.FIFO: "p"}
    for top, dirs, files in fs.walk("/workspace"):
        for name in dirs + files:
            p = f"{top}/{name}"
            st = fs.lstat(p)
            rel = os.path.relpath(p, "/workspace")
            line = f"{kinds[st.type]} {st.mode:o} {rel}"
            if st.type is FileType.SYMLINK:
                line += f" -> {fs.readlink(p)}"
            lines.append(line)
            if st.type is FileType.FILE:
                sums.append((f"./{rel}", hashlib.sha1(fs.read_file(p)).hexdigest()))
    out = "".join(f"{x}\n" for x in sorted(lines, key=lambda s: s.encode()))
    out += "".join(f"{h}  {p}\n" for p, h in sorted(sums, key=lambda t: t[0].encode()))
    return out.encode()


@pytest.mark.parametrize(
    ("host", "seed_value"), [("auto", 20261203), ("auto", 7), ("auto", 99), ("copy", 20261203)], indirect=["host"]
)
def test_the_local_tree_follows_every_kind_of_change_between_runs(tb, tenant, host, seed_value):
    """The lower tree is brought forward from the rows changed between layers: after API
    changes of every kind (and runs' own, merged), a run sees exactly the tenant's files."""
    import random

    rnd = random.Random(seed_value)
    fs = tb.filesystem(tenant)
    seed(fs, {f"d{i}/s{j}/f{k}": b"%d-%d-%d" % (i, j, k) for i in range(3) for j in range(3) for k in range(3)})
    counter = 0
    for round_ in range(12):
        for _ in range(rnd.randint(1, 6)):
            counter += 1
            paths = [f"{t}/{n}" for t, ds, fl in fs.walk("/workspace") for n in ds + fl]
            files = [p for p in paths if fs.lstat(p).type is FileType.FILE]
            dirs = [p for p in paths if fs.lstat(p).type is FileType.DIRECTORY]
            op = rnd.choice(["write", "modify", "delete", "mvdir", "rmdir", "chmod", "symlink", "link", "replace"])
            if op == "write" and dirs:
                fs.write_file(f"{rnd.choice(dirs)}/new{counter}", b"n%d" % counter)
            elif op == "modify" and files:
                fs.write_file(rnd.choice(files), b"changed %d" % counter)
            elif op == "delete" and files:
                fs.remove(rnd.choice(files))
            elif op == "mvdir" and dirs:
                src = rnd.choice(dirs)
                fs.rename(src, f"/workspace/moved{counter}")
            elif op == "rmdir" and dirs:
                fs.remove_tree(rnd.choice(dirs))
            elif op == "chmod" and files:
                fs.chmod(rnd.choice(files), rnd.choice([0o600, 0o755, 0o444]))
            elif op == "symlink" and files:
                fs.symlink(os.path.relpath(rnd.choice(files), "/workspace"), f"/workspace/ln{counter}")
            elif op == "link" and files:
                fs.link(rnd.choice(files), f"/workspace/hl{counter}")
            elif op == "replace" and dirs:
                d = rnd.choice(dirs)
                fs.remove_tree(d)
                fs.makedirs(f"{d}/again")
                fs.write_file(f"{d}/again/x", b"x%d" % counter)
        if round_ % 3 == 2:  # a run's own changes, merged into the tree
            script = f"mkdir -p run{round_}/a && echo r > run{round_}/a/f && rm -rf d1"
            script += f" && mkdir -p d0 && touch d0/t{round_}"
            r = host.run(script)
            assert r.ok, (r.status, r.error, r.stderr)
        r = host.run(LISTING)
        assert r.ok, r.stderr
        assert r.stdout.decode() == expected_listing(tb.filesystem(tenant)).decode(), f"round {round_}"


def test_a_host_killed_mid_run_publishes_nothing_and_leaves_nothing_running(tb, tenant, tmp_path, db_url):
    """kill -9 of the process running a native run: the run's writes were never
    committed, its processes die with it (bubblewrap's --die-with-parent, the PID
    namespace), and the next run collects its directory and cgroup."""
    fs = tb.filesystem(tenant)
    seed(fs, {"before.txt": b"b"})
    home = tmp_path / "home"
    marker = f"tarbox-kill-{uuid.uuid4().hex[:8]}"
    script = (
        "import sys, tarbox\n"
        "from pathlib import Path\n"
        "from tarbox.sandbox import NativeHost\n"
        f"tb = tarbox.connect({db_url!r})\n"
        f"NativeHost(tb, {tenant.name!r}, home=Path({str(home)!r})).run("
        f"'echo half > a.txt; exec -a {marker} sleep 30')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    runs_dir = home / "exec" / str(tenant.id) / "runs"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _running(marker):
        time.sleep(0.05)
    assert _running(marker), "the run did not start"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(marker):
        time.sleep(0.05)
    assert not _running(marker), "the sandbox outlived its host"
    assert not tb.filesystem(tenant).exists("/workspace/a.txt")
    assert len(list(runs_dir.iterdir())) == 1  # left behind by the dead host
    r = NativeHost(tb, tenant, home=home).run("cat before.txt; ls")
    assert r.ok and r.stdout == b"bbefore.txt\n"
    assert list(runs_dir.iterdir()) == []


def _running(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(marker.encode()):
                    return True
            except OSError:
                pass
    return False


def test_many_tenants_at_once(tb, new_tenant, tmp_path):
    tenants = [new_tenant() for _ in range(4)]
    for i, t in enumerate(tenants):
        seed(tb.filesystem(t), {"who": f"tenant {i}\n".encode()})
    results = {}

    def run(i, t):
        host = NativeHost(tb, t, home=tmp_path / "home")
        results[i] = [host.run(f"cat who; echo {i}-{k} > out{k}") for k in range(2)]

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(tenants)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for i, t in enumerate(tenants):
        assert [r.stdout for r in results[i]] == [f"tenant {i}\n".encode()] * 2
        fs = tb.filesystem(t)
        assert sorted(fs.listdir("/workspace")) == ["out0", "out1", "who"]
        assert fs.read_file("/workspace/out1") == f"{i}-1\n".encode()


def test_network_only_to_the_allow_list(tb, tenant, tmp_path):
    """With an allow-list, the run reaches those destinations through the host's proxy
    (HTTP and CONNECT) and nothing else: another port of the same host is refused by
    the proxy, a direct connection finds no network, and without a list there is no
    proxy at all."""
    with web_server_off_loopback() as (addr, port):
        _network_only_to_the_allow_list(tb, tenant, tmp_path, addr, port)
    with pytest.raises(ValueError):
        NativeHost(tb, tenant, network=["no-port"])


def _network_only_to_the_allow_list(tb, tenant, tmp_path, addr, port):
    other = socket.create_server((addr, 0))
    other_port = other.getsockname()[1]
    code = f"""
import http.client, os, socket, urllib.request
print(urllib.request.urlopen("http://{addr}:{port}/plain", timeout=10).read().decode())
tunnel = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
tunnel.set_tunnel("{addr}", {port})
tunnel.request("GET", "/tunnelled")
print(tunnel.getresponse().read().decode())
try:
    urllib.request.urlopen("http://{addr}:{other_port}/", timeout=10)
except urllib.error.HTTPError as e:
    print("refused", e.code)
try:
    socket.create_connection(("{addr}", {port}), timeout=3)
    print("direct connection made")
except OSError:
    print("no direct route")
"""
    try:
        host = NativeHost(tb, tenant, home=tmp_path / "home", network=[f"{addr}:{port}"])
        r = host.run(["python3", "-c", code])
        assert r.ok, r.stderr.decode()
        assert r.stdout.decode().splitlines() == [
            "hello /plain",
            "hello /tunnelled",
            "refused 403",
            "no direct route",
        ]
        assert r.network_denied == [f"{addr}:{other_port}"]
        r = NativeHost(tb, tenant, home=tmp_path / "home").run(
            ["python3", "-c", f"import urllib.request; urllib.request.urlopen('http://{addr}:{port}/', timeout=3)"]
        )
        assert r.exit_code != 0 and b"URLError" in r.stderr
    finally:
        other.close()


def test_the_proxy_refuses_names_that_resolve_to_this_hosts_networks(tmp_path):
    from tarbox.sandbox.network import EgressProxy

    proxy = EgressProxy(tmp_path, ["localhost:*", "*.example.invalid:443"])
    try:
        assert "resolves to" in proxy._why_not("localhost", 5432)  # a name for the loopback: no way in
        assert "allow-list" in proxy._why_not("example.com", 443)
        assert proxy._why_not("a.example.invalid", 80) is not None  # the port is not on the list
    finally:
        proxy.close()


@both_workspaces
def test_a_change_that_keeps_size_and_mtime_is_seen_by_the_next_run(tb, tenant, host):
    """What the API writes reaches the next run even when size, mode and mtime stay
    (tar and ``cp -p`` restore times): no quick check may hide it."""
    fs = tb.filesystem(tenant)
    seed(fs, {"f.txt": b"AAAA"})
    fs.utime("/workspace/f.txt", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    assert host.run("cat f.txt").stdout == b"AAAA"
    fs.write_file("/workspace/f.txt", b"BBBB")
    fs.utime("/workspace/f.txt", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    assert host.run("cat f.txt").stdout == b"BBBB"
    r = host.run("printf CCCC > f.txt && touch -d @978307200 f.txt")  # the run's own, merged
    assert r.ok and fs.read_file("/workspace/f.txt") == b"CCCC"
    fs.write_file("/workspace/f.txt", b"DDDD")
    fs.utime("/workspace/f.txt", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    assert host.run("cat f.txt").stdout == b"DDDD"


def test_prune_removes_deleted_and_idle_tenants_caches_but_never_one_in_use(tb, tenant, new_tenant, tmp_path):
    """Local trees are a cache of a tenant's files: a deleted tenant's go (its files
    must not outlive it on this disk), an idle one's go after --idle-days, one a run is
    using stays; a host whose cache was pruned runs again on a new one."""
    from tarbox.sandbox import prune_local_caches

    home = tmp_path / "home"
    idle, gone = new_tenant(), new_tenant()
    hosts = {t.id: NativeHost(tb, t, home=home) for t in (tenant, idle, gone)}
    for t in (tenant, idle, gone):
        tb.filesystem(t).makedirs("/workspace")
        tb.filesystem(t).write_file("/workspace/secret.txt", t.name.encode())
        assert hosts[t.id].run(["cat", "secret.txt"]).stdout == t.name.encode()
    base = {t: home / "exec" / str(t.id) for t in (tenant, idle, gone)}
    long_ago = time.time() - 30 * 86400
    os.utime(base[idle] / "used", (long_ago, long_ago))
    tb.delete_tenant(gone)
    assert any(p.read_bytes() == gone.name.encode() for p in base[gone].rglob("secret.txt"))

    held = hosts[tenant.id].trees.lease(tb.filesystem(tenant).current_layer().id)  # as a run holds it
    try:
        os.utime(base[tenant] / "used", (long_ago, long_ago))  # idle too, but in use
        removed = {p.tenant_id: p.reason for p in prune_local_caches(tb, home=home, idle_for=7 * 86400)}
    finally:
        held.release()
    assert removed == {gone.id: "tenant deleted", idle.id: "idle"}
    assert not base[gone].exists() and not base[idle].exists() and base[tenant].is_dir()
    assert [p.name for p in (home / "exec").iterdir()] == [str(tenant.id)]  # nothing left half-removed

    tb.filesystem(idle).write_file("/workspace/later.txt", b"after the prune")
    r = hosts[idle.id].run(["cat", "secret.txt", "later.txt"])  # the same host object: starts over
    assert r.ok and r.stdout == idle.name.encode() + b"after the prune", (r.stderr, r.error)
    assert (base[idle].stat().st_mode & 0o777) == 0o700
