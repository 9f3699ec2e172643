"""`tarbox mount` (FUSE): POSIX operations through the kernel compared with the same
operations on a local directory, real tools (git, tar, compileall, sqlite3),
layers and checkpoints through the mount, clean and unclean unmounts."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tarbox.integrations.fuse import available

pytestmark = pytest.mark.skipif(
    available() is not None or shutil.which("fusermount3") is None,
    reason=f"FUSE is not usable here: {available() or 'no fusermount3 (apt-get install fuse3)'}",
)


def cli(db_url, *args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    p = subprocess.run(["tarbox", *args], env=env, capture_output=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr.decode()
    return p


def _backends() -> list[str]:
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return ["mfusepy"]
    return ["mfusepy", "pyfuse3"]


@pytest.fixture(params=_backends())
def backend(request) -> str:
    return request.param


class Mounted:
    def __init__(self, db_url, tenant, path: Path, *extra: str, backend: str = "mfusepy") -> None:
        self.db_url, self.tenant, self.path = db_url, tenant, path
        path.mkdir(parents=True, exist_ok=True)
        cli(db_url, "-t", tenant.name, "mount", str(path), "--backend", backend, *extra)
        assert os.path.ismount(path)

    def pid(self) -> int:
        out = subprocess.run(["pgrep", "-f", f"tarbox.integrations.mount {self.path} "], capture_output=True, text=True)
        return int(out.stdout.split()[0])

    def umount(self) -> None:
        if os.path.ismount(self.path) or _stale(self.path):
            cli(self.db_url, "umount", str(self.path))


def _stale(path: Path) -> bool:
    try:
        os.stat(path)
        return False
    except OSError as exc:
        return exc.errno == errno.ENOTCONN


@pytest.fixture
def mnt(db_url, tenant, tmp_path, backend):
    m = Mounted(db_url, tenant, tmp_path / "mnt", backend=backend)
    yield m
    m.umount()


def _renameat2(old: Path, new: Path, flags: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.renameat2(-100, bytes(old), -100, bytes(new), flags)  # AT_FDCWD
    return 0 if rc == 0 else ctypes.get_errno()


def script(root: Path) -> list:
    """Operations with their outcome (value or errno), the same on any POSIX filesystem."""
    out = []

    def do(label, fn):
        try:
            out.append((label, fn()))
        except OSError as exc:
            out.append((label, "errno", exc.errno))

    r = root
    do("mkdir", lambda: os.mkdir(r / "d"))
    do("mkdir again", lambda: os.mkdir(r / "d"))
    do("write", lambda: (r / "d" / "f").write_bytes(b"0123456789"))
    do("pwrite past end", lambda: _pwrite(r / "d" / "f", b"XY", 20))
    do("read", lambda: (r / "d" / "f").read_bytes())
    do("truncate", lambda: os.truncate(r / "d" / "f", 4))
    do("size", lambda: os.stat(r / "d" / "f").st_size)
    do("append", lambda: _append(r / "d" / "f", b"+a"))
    do("read 2", lambda: (r / "d" / "f").read_bytes())
    do("symlink", lambda: os.symlink("d/f", r / "s"))
    do("readlink", lambda: os.readlink(r / "s"))
    do("read via symlink", lambda: (r / "s").read_bytes())
    do("link", lambda: os.link(r / "d" / "f", r / "h"))
    do("nlink", lambda: os.stat(r / "h").st_nlink)
    do("chmod", lambda: os.chmod(r / "h", 0o600))
    do("mode", lambda: oct(os.stat(r / "d" / "f").st_mode))
    do("utime", lambda: os.utime(r / "h", ns=(1_000_000_000, 2_000_000_000)))
    do("mtime", lambda: os.stat(r / "h").st_mtime_ns)
    do("rename over", lambda: (r / "g").write_bytes(b"g") or os.rename(r / "g", r / "h"))
    do("nlink after", lambda: os.stat(r / "d" / "f").st_nlink)
    do("rename noreplace", lambda: _renameat2(r / "d" / "f", r / "h", 1))
    do("rename dir into itself", lambda: os.rename(r / "d", r / "d" / "sub"))
    do("rmdir non-empty", lambda: os.rmdir(r / "d"))
    do("unlink dir", lambda: os.unlink(r / "d"))
    do("rename dir", lambda: os.rename(r / "d", r / "e"))
    do("listdir", lambda: sorted(os.listdir(r)))
    do("listdir e", lambda: sorted(os.listdir(r / "e")))
    do("unlink", lambda: os.unlink(r / "e" / "f"))
    do("rmdir", lambda: os.rmdir(r / "e"))
    do("open missing", lambda: open(r / "nope"))  # noqa: SIM115
    do("excl create", lambda: os.close(os.open(r / "h", os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
    do("big dir", lambda: [(r / f"n{i:04}").write_bytes(b"") for i in range(1500)] and len(os.listdir(r)))
    # owners, special files and times (as root: the suite's runs are)
    do("chown", lambda: os.chown(r / "h", 123, 456))
    do("owner", lambda: (os.lstat(r / "h").st_uid, os.lstat(r / "h").st_gid))
    do("chown keeps with -1", lambda: os.chown(r / "h", -1, 789) or os.lstat(r / "h").st_uid)
    do("setgid dir", lambda: os.mkdir(r / "g2") or os.chown(r / "g2", -1, 777) or os.chmod(r / "g2", 0o2775))
    do("inherits group", lambda: (r / "g2" / "f").write_bytes(b"") or os.lstat(r / "g2" / "f").st_gid)
    do("inherits setgid", lambda: os.mkdir(r / "g2" / "sub") or oct(os.lstat(r / "g2" / "sub").st_mode))
    do("mkfifo", lambda: os.mkfifo(r / "fifo", 0o640) or oct(os.lstat(r / "fifo").st_mode))
    do("mknod regular", lambda: os.mknod(r / "reg", 0o600 | 0o100000) or oct(os.lstat(r / "reg").st_mode))
    do("mknod char", lambda: os.mknod(r / "chr", 0o600 | 0o20000, os.makedev(1, 3)) or os.lstat(r / "chr").st_rdev)
    do("socket", lambda: _bind_unix(r / "sock") or oct(os.lstat(r / "sock").st_mode))
    do("listdir types", lambda: sorted((e.name, e.is_file(follow_symlinks=False)) for e in _scan(r) if len(e.name) < 5))
    do("touch now", lambda: os.utime(r / "reg") or os.lstat(r / "reg").st_mtime_ns > 1_600_000_000 * 10**9)
    do("unlink fifo", lambda: os.unlink(r / "fifo"))
    return out


def _bind_unix(p: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(p))


def _scan(p: Path) -> list:
    with os.scandir(p) as it:
        return [e for e in it]


def _pwrite(p: Path, data: bytes, off: int) -> int:
    fd = os.open(p, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _append(p: Path, data: bytes) -> int:
    with open(p, "ab") as f:
        return f.write(data)


def test_posix_operations_match_a_local_directory(mnt, tmp_path, tb, tenant):
    local = tmp_path / "local"
    local.mkdir()
    expected, got = script(local), script(mnt.path)
    assert got == expected
    assert tb.fsck(tenant)[0].ok


def test_statfs_follows_the_quota(db_url, new_tenant, tmp_path, backend):
    t = new_tenant(quota_bytes=64 << 20)
    m = Mounted(db_url, t, tmp_path / "q", backend=backend)
    try:
        st = os.statvfs(m.path)
        assert st.f_blocks * st.f_frsize == 64 << 20
        (m.path / "big").write_bytes(os.urandom(1 << 20))
        assert os.statvfs(m.path).f_bfree < st.f_bfree
        with pytest.raises(OSError) as err:
            (m.path / "too-big").write_bytes(os.urandom(80 << 20))
        assert err.value.errno == errno.EDQUOT
    finally:
        m.umount()


def test_real_tools_work_in_the_mount(mnt, tmp_path, tb, tenant):
    repo = mnt.path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "main.py").write_text("print('hello')\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    (repo / "main.py").write_text("print('changed')\n")
    diff = subprocess.run([*git, "diff"], check=True, capture_output=True, text=True).stdout
    assert "+print('changed')" in diff
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(repo)], check=True)
    assert list((repo / "__pycache__").glob("main.*.pyc"))
    # tar -x of a real archive: the extracted trees are equal
    src = tmp_path / "src"
    for i in range(60):
        (src / f"d{i % 6}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 6}" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    subprocess.run(["tar", "-cf", str(tmp_path / "a.tar"), "-C", str(src), "."], check=True)
    (mnt.path / "x").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(mnt.path / "x")], check=True)
    subprocess.run(["diff", "-r", str(src), str(mnt.path / "x")], check=True)
    if shutil.which("sqlite3"):
        db = mnt.path / "t.db"
        subprocess.run(["sqlite3", str(db), "create table t(a); insert into t values (42);"], check=True)
        got = subprocess.run(["sqlite3", str(db), "select a from t"], check=True, capture_output=True, text=True)
        assert got.stdout.strip() == "42"
    mnt.umount()
    assert tb.filesystem(tenant).read_text("/repo/main.py") == "print('changed')\n"
    assert tb.fsck(tenant)[0].ok


def test_layers_through_the_mount(db_url, tb, tenant, tmp_path, backend):
    fs = tb.filesystem(tenant)
    fs.write_file("/a.txt", b"v1")
    m = Mounted(db_url, tenant, tmp_path / "head", backend=backend)
    try:
        (m.path / ".tarbox" / "layers" / "new").write_text("from the mount")
        (m.path / "a.txt").write_bytes(b"v2")
    finally:
        m.umount()
    frozen = [layer for layer in fs.layers() if layer.message == "from the mount"]
    assert len(frozen) == 1 and fs.read_file("/a.txt") == b"v2"
    old = Mounted(db_url, tenant, tmp_path / "old", "--layer", str(frozen[0].id), backend=backend)
    try:
        assert (old.path / "a.txt").read_bytes() == b"v1"
        with pytest.raises(OSError) as err:
            (old.path / "a.txt").write_bytes(b"no")
        assert err.value.errno == errno.EROFS
    finally:
        old.umount()


def test_sigterm_unmounts_cleanly_and_kill_9_leaves_a_recoverable_mount(db_url, tb, tenant, tmp_path, backend):
    m = Mounted(db_url, tenant, tmp_path / "t", backend=backend)
    (m.path / "kept.txt").write_bytes(b"closed before the signal")
    os.kill(m.pid(), signal.SIGTERM)
    for _ in range(200):
        if not os.path.ismount(m.path):
            break
        time.sleep(0.05)
    assert not os.path.ismount(m.path)
    assert tb.filesystem(tenant).read_file("/kept.txt") == b"closed before the signal"
    m = Mounted(db_url, tenant, tmp_path / "k", backend=backend)
    f = open(m.path / "partial.bin", "wb")  # noqa: SIM115 - left open on purpose
    f.write(os.urandom(4 << 20))
    f.flush()
    os.kill(m.pid(), signal.SIGKILL)
    time.sleep(0.5)
    assert _stale(m.path)
    cli(db_url, "umount", str(m.path))  # recovers the stale mount point
    assert not os.path.ismount(m.path) and not _stale(m.path)
    try:
        f.close()
    except OSError:
        pass
    fs = tb.filesystem(tenant)
    assert not fs.exists("/partial.bin") or fs.stat("/partial.bin").size in (0, 4 << 20)
    assert tb.fsck(tenant)[0].ok


def test_umount_returns_once_the_mount_process_has_committed_and_ended(db_url, tb, tenant, tmp_path, backend):
    import threading

    import psycopg

    m = Mounted(db_url, tenant, tmp_path / "u", backend=backend)
    pid = m.pid()
    blocker = psycopg.connect(db_url)
    writer = threading.Thread(target=(m.path / "last.txt").write_bytes, args=(b"written as it was unmounted",))
    try:
        # the tenant's write lock held elsewhere: the mount's commit of this write waits for it
        blocker.execute("SELECT 1 FROM tarbox.tenant_state WHERE tenant_id = %s FOR UPDATE", (tenant.id,))
        writer.start()
        time.sleep(0.5)
        env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
        umount = subprocess.Popen(["tarbox", "umount", str(m.path)], env=env, stderr=subprocess.PIPE)
        time.sleep(3)
        assert umount.poll() is None, "umount returned while the mount was still committing"
    finally:
        blocker.rollback()
        blocker.close()
    writer.join(60)
    assert umount.wait(60) == 0, umount.stderr.read() if umount.stderr else ""
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    assert tb.filesystem(tenant).read_file("/last.txt") == b"written as it was unmounted"


def test_mount_refuses_clearly(db_url, tenant, tmp_path):
    p = cli(db_url, "-t", tenant.name, "mount", str(tmp_path / "missing-dir"), check=False)
    assert p.returncode == 1 and b"mount failed" in p.stderr
    p = cli(db_url, "-t", tenant.name, "mount", str(tmp_path), "--branch", f"nope-{uuid.uuid4().hex[:4]}", check=False)
    assert p.returncode == 1 and b"does not exist" in p.stderr
