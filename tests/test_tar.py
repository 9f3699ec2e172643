"""tar import/export through the real ``tarbox`` binary on real archives (made by
GNU tar where the machine has it, else by Python's tarfile): round trips member
by member, compression, layers, unsafe archives refused, bounded memory."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import zstandard

from tarbox.integrations.tar import UnsafeArchiveError, import_tar

T0 = 1_700_000_000  # a fixed past mtime, so "preserved" cannot mean "now"


def cli(db_url, *args, stdin=None, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    p = subprocess.run(["tarbox", *args], env=env, input=stdin, capture_output=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"tarbox {args}: exit {p.returncode}: {p.stderr.decode()}")
    return p


def make_tree(root: Path) -> None:
    (root / "src" / "deep" / "er").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "README.md").write_text("# hello\n")
    (root / "src" / "big.bin").write_bytes(os.urandom(300_000))  # three blocks
    (root / "src" / "empty").write_bytes(b"")
    (root / "src" / "deep" / "er" / "leaf.txt").write_text("leaf\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.chmod(root / "src" / "empty", 0o600)
    os.link(root / "README.md", root / "hardlink.md")
    os.symlink("src/deep/er/leaf.txt", root / "link-to-leaf")
    os.symlink("../README.md", root / "src" / "up-link")
    for i, p in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):  # deepest first
        os.utime(p, (T0 + i, T0 + i), follow_symlinks=False)
    os.utime(root, (T0, T0))


def make_archive(tree: Path, out: Path, compress: str = "") -> None:
    if shutil.which("tar"):
        subprocess.run(["tar", f"-c{compress}f", str(out), "-C", str(tree), "."], check=True)
    else:
        mode = {"": "w", "z": "w:gz"}[compress]
        with tarfile.open(out, mode) as t:
            t.add(tree, arcname=".")


def members(data: bytes) -> tuple[dict, set]:
    """name -> what a member holds, and the groups of hard-linked names."""
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    out, links = {}, {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
        for m in t:
            name = os.path.normpath(m.name)
            if name == ".":
                continue
            if m.isdir():
                out[name] = ("dir", m.mode & 0o7777, int(m.mtime))
            elif m.issym():
                out[name] = ("symlink", m.linkname)
            elif m.islnk():
                target = os.path.normpath(m.linkname)
                out[name] = out[target]
                links.setdefault(target, {target}).add(name)
            else:
                out[name] = ("file", m.mode & 0o7777, int(m.mtime), t.extractfile(m).read())
    return out, {frozenset(g) for g in links.values()}


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root)
    return root


def test_round_trip_member_by_member(tb, tenant, db_url, tree, tmp_path):
    src = tmp_path / "in.tar"
    make_archive(tree, src)
    cli(db_url, "-t", tenant.name, "import", str(src), "/project", "--checkpoint", "-m", "imported")
    fs = tb.filesystem(tenant)
    assert fs.read_file("/project/src/big.bin") == (tree / "src" / "big.bin").read_bytes()
    assert fs.stat("/project/run.sh").mode == 0o755
    assert fs.stat("/project/README.md").mtime_ns // 10**9 == int((tree / "README.md").stat().st_mtime)
    assert fs.stat("/project/hardlink.md").ino == fs.stat("/project/README.md").ino
    assert fs.readlink("/project/link-to-leaf") == "src/deep/er/leaf.txt"
    assert fs.current_layer().parent_id is not None and fs.layers()[-2].message == "imported"
    for out_name in ("out.tar", "out.tar.gz", "out.tar.zst"):
        out = tmp_path / out_name
        cli(db_url, "-t", tenant.name, "export", "/project", str(out))
        assert members(out.read_bytes()) == members(src.read_bytes()), out_name
    # and back in again: export(import(x)) == x once more
    again = tb.create_tenant(f"again-{uuid.uuid4().hex[:8]}")
    try:
        cli(db_url, "-t", again.name, "import", str(tmp_path / "out.tar.zst"))
        cli(db_url, "-t", again.name, "export", str(tmp_path / "again.tar"))
        assert members((tmp_path / "again.tar").read_bytes()) == members(src.read_bytes())
    finally:
        tb.delete_tenant(again)


def test_gzip_from_stdin_and_export_to_stdout(tb, tenant, db_url, tree, tmp_path):
    src = tmp_path / "in.tgz"
    make_archive(tree, src, "z")
    cli(db_url, "-t", tenant.name, "import", "-", stdin=src.read_bytes())
    p = cli(db_url, "-t", tenant.name, "export", "-")
    assert members(p.stdout) == members(src.read_bytes())


def test_export_of_a_layer(tb, tenant, db_url, tmp_path):
    fs = tb.filesystem(tenant)
    fs.write_file("/a.txt", b"first")
    layer = fs.checkpoint("one")
    fs.write_file("/a.txt", b"second")
    fs.write_file("/b.txt", b"new")
    cli(db_url, "-t", tenant.name, "export", "--layer", str(layer.id), str(tmp_path / "old.tar"))
    got, _ = members((tmp_path / "old.tar").read_bytes())
    assert set(got) == {"a.txt"} and got["a.txt"][3] == b"first"


def unsafe_archive(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        t.addfile(ok, io.BytesIO(b"ok"))
        m = tarfile.TarInfo({"absolute": "/etc/evil", "dotdot": "a/../../evil"}.get(kind, "evil"))
        if kind == "symlink-out":
            m.type, m.linkname = tarfile.SYMTYPE, "sub/../../outside"
        elif kind == "symlink-abs":
            m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink-out":
            m.type, m.linkname = tarfile.LNKTYPE, "../outside"
        elif kind == "hardlink-later":
            m.type, m.linkname = tarfile.LNKTYPE, "not-yet.txt"
        else:
            m.size = 4
        t.addfile(m, io.BytesIO(b"evil") if m.isfile() else None)
    return buf.getvalue()


KINDS = ["absolute", "dotdot", "symlink-out", "symlink-abs", "hardlink-out", "hardlink-later"]


@pytest.mark.parametrize("kind", KINDS)
def test_unsafe_archives_are_refused_and_change_nothing(tb, tenant, db_url, tmp_path, kind):
    path = tmp_path / "evil.tar"
    path.write_bytes(unsafe_archive(kind))
    p = cli(db_url, "-t", tenant.name, "import", str(path), "/in", check=False)
    assert p.returncode == 1
    msg = p.stderr.decode().strip()
    assert len(msg.splitlines()) == 1 and "evil" in msg, msg
    assert not tb.filesystem(tenant).exists("/in")  # checked whole before writing


def test_a_streamed_unsafe_archive_stops_at_the_bad_member(tb, tenant):
    fs = tb.filesystem(tenant)
    with pytest.raises(UnsafeArchiveError, match="stopped after 1 members"):
        import_tar(fs, _Unseekable(unsafe_archive("dotdot")), "/in")
    assert fs.listdir("/in") == ["fine.txt"]
    assert not fs.exists("/evil")


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._b.readinto(b)


_GEN = """
import sys, tarfile, os
size = int(sys.argv[1])
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as t:
    info = tarfile.TarInfo("big.bin"); info.size = size
    class R:
        left = size
        def read(self, n):
            n = min(n, self.left); self.left -= n
            return os.urandom(n)
    t.addfile(info, R())
"""


def _import_peak_rss(db_url: str, tenant: str, size: int) -> int:
    """Peak RSS (KiB) of a ``tarbox import -`` fed a generated archive of one ``size``-byte file."""
    gen = subprocess.Popen([sys.executable, "-c", _GEN, str(size)], stdout=subprocess.PIPE)
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    code = (
        "import resource, sys\nfrom tarbox.cli.main import main\nsys.argv = ['tarbox', '-t', "
        f"{tenant!r}, 'import', '-', '/s{size}']\ntry:\n    main()\nfinally:\n"
        "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
    )
    p = subprocess.run([sys.executable, "-c", code], stdin=gen.stdout, env=env, capture_output=True, timeout=600)
    gen.wait()
    assert p.returncode == 0, p.stderr.decode()
    return int(p.stderr.decode().strip().splitlines()[-1])


def test_import_streams_in_bounded_memory(tb, tenant, db_url):
    small = _import_peak_rss(db_url, tenant.name, 8 << 20)
    big = _import_peak_rss(db_url, tenant.name, 160 << 20)
    assert tb.filesystem(tenant).stat(f"/s{160 << 20}/big.bin").size == 160 << 20
    # 152 MiB more archive may not cost more than the store's flush buffers
    assert (big - small) * 1024 < 48 << 20, (small, big)


def test_a_file_that_is_not_an_archive_is_a_clear_error(tb, tenant, db_url, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(10_000))
    p = cli(db_url, "-t", tenant.name, "import", str(junk), "/in", check=False)
    assert p.returncode == 1 and b"not a valid tar archive" in p.stderr, p.stderr
    assert not tb.filesystem(tenant).exists("/in")
