"""Owners, special files and times through the Python API and tar: what Linux keeps
(uid, gid, FIFOs, sockets, device nodes, UTIME_OMIT), kept across connections,
checkpoints and archives. Through the kernel, the same is compared with a local
directory in test_fuse.py and by pjdfstest in test_pjdfstest.py."""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile

import pytest

import tarbox
from tarbox.fs import FileType


def test_special_files_are_entries_with_their_type_and_device_number(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    fs.mknod("/fifo", stat.S_IFIFO | 0o640)
    fs.mknod("/sock", stat.S_IFSOCK | 0o600)
    fs.mknod("/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    fs.mknod("/disk", stat.S_IFBLK | 0o660, os.makedev(8, 1))
    fs.mknod("/plain", 0o600)  # no type bits: a regular file, as mknod(2) makes
    fs.sync()
    fresh = tarbox.connect(db_url).filesystem(tenant)
    got = {e.name: e.type for e in fresh.scandir("/")}
    assert got == {
        "fifo": FileType.FIFO,
        "sock": FileType.SOCKET,
        "null": FileType.CHAR_DEVICE,
        "disk": FileType.BLOCK_DEVICE,
        "plain": FileType.FILE,
    }
    assert stat.S_ISFIFO(fresh.lstat("/fifo").st_mode) and stat.S_IMODE(fresh.lstat("/fifo").st_mode) == 0o640
    assert fresh.lstat("/null").rdev == os.makedev(1, 3) and fresh.lstat("/disk").rdev == os.makedev(8, 1)
    assert fresh.lstat("/fifo").rdev == 0 and fresh.lstat("/plain").size == 0


def test_special_files_refuse_what_only_the_kernel_can_do_with_them(tb, tenant):
    fs = tb.filesystem(tenant)
    fs.mknod("/fifo", stat.S_IFIFO | 0o644)
    for call, code in (
        (lambda: fs.read_file("/fifo"), errno.ENXIO),
        (lambda: fs.open("/fifo", "rb"), errno.ENXIO),
        (lambda: fs.write_file("/fifo", b"x"), errno.ENXIO),
        (lambda: fs.truncate("/fifo", 0), errno.EINVAL),
        (lambda: fs.mknod("/fifo", stat.S_IFIFO | 0o644), errno.EEXIST),
        (lambda: fs.mknod("/d", stat.S_IFDIR | 0o755), errno.EPERM),  # mknod(2) on Linux
        (lambda: fs.mknod("/x", 0o170000 | 0o644), errno.EINVAL),  # no such type
    ):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == code
    fs.remove("/fifo")
    assert not fs.lexists("/fifo")


def test_owners_are_kept_and_minus_one_keeps_one_of_them(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    fs.write_file("/f", b"x")
    assert (fs.lstat("/f").uid, fs.lstat("/f").gid) == (0, 0)  # the API acts as root by default
    before = fs.lstat("/f").ctime_ns
    fs.chown("/f", 1000, 1001)
    assert fs.lstat("/f").ctime_ns > before
    fs.chown("/f", -1, 2000)
    fs.chown("/f", 3000, -1)
    fs.sync()
    s = tarbox.connect(db_url).filesystem(tenant).lstat("/f")
    assert (s.uid, s.gid) == (3000, 2000)
    with pytest.raises(OSError) as exc:
        fs.chown("/f", -2, 0)
    assert exc.value.errno == errno.EINVAL


def test_new_inodes_belong_to_whom_the_view_acts_as_and_setgid_directories_give_their_group(tb, tenant):
    fs = tb.filesystem(tenant)
    with fs.acting_as(65534, 65533):
        fs.mkdir("/mine")
        fs.write_file("/mine/f", b"")
        fs.symlink("f", "/mine/l")
    assert {(fs.lstat(p).uid, fs.lstat(p).gid) for p in ("/mine", "/mine/f", "/mine/l")} == {(65534, 65533)}
    fs.mkdir("/shared", 0o775)
    fs.chown("/shared", -1, 500)
    fs.chmod("/shared", 0o2775)
    with fs.acting_as(65534, 65533):
        fs.write_file("/shared/f", b"")
        fs.mkdir("/shared/sub", 0o755)
    assert fs.lstat("/shared/f").gid == 500 and fs.lstat("/shared/f").uid == 65534
    assert fs.lstat("/shared/sub").gid == 500 and fs.lstat("/shared/sub").mode & stat.S_ISGID  # inherited
    assert not fs.lstat("/shared/f").mode & stat.S_ISGID
    assert fs.lstat("/").uid == 0  # outside acting_as: root again


def test_owners_are_versioned_with_everything_else(tb, tenant):
    fs = tb.filesystem(tenant)
    fs.write_file("/f", b"x")
    fs.mkdir("/d")
    layer = fs.checkpoint("root's")
    fs.chown("/f", 42, 43)
    fs.chown("/d", 42, -1)
    assert sorted(c.path for c in fs.diff(layer)) == ["/d", "/f"]
    fs.switch(layer)
    assert (fs.lstat("/f").uid, fs.lstat("/f").gid) == (0, 0)


def test_utime_keeps_what_is_none_and_both_none_changes_nothing(tb, tenant):
    fs = tb.filesystem(tenant)
    fs.write_file("/f", b"x")
    fs.utime("/f", (1_000_000_000, 2_000_000_000))
    fs.utime("/f", (None, 5_000_000_000))
    s = fs.lstat("/f")
    assert (s.atime_ns, s.mtime_ns) == (1_000_000_000, 5_000_000_000)
    fs.utime("/f", (None, None))
    assert fs.lstat("/f") == s  # not even ctime (Linux: both UTIME_OMIT is a no-op)


def _archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _info(name: str, kind: bytes, **kw) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type = kind
    for k, v in kw.items():
        setattr(i, k, v)
    return i


def test_tar_keeps_owners_and_fifos_and_skips_uploaded_devices(tb, tenant):
    from tarbox.integrations.tar import export_tar, import_tar

    fs = tb.filesystem(tenant)
    src = _archive(
        (_info("d", tarfile.DIRTYPE, uid=7, gid=8, mode=0o755), None),
        (_info("d/f", tarfile.REGTYPE, uid=1000, gid=1001, mode=0o640, size=2), b"hi"),
        (_info("d/p", tarfile.FIFOTYPE, uid=5, gid=6, mode=0o600), None),
        (_info("d/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
    )
    stats = import_tar(fs, src, "/in")
    assert (stats.files, stats.dirs, stats.special, stats.skipped) == (1, 1, 1, 1)
    assert (fs.lstat("/in/d/f").uid, fs.lstat("/in/d/f").gid) == (1000, 1001)
    assert (fs.lstat("/in/d").uid, fs.lstat("/in/d").gid) == (7, 8)
    assert fs.lstat("/in/d/p").type is FileType.FIFO and fs.lstat("/in/d/p").uid == 5
    assert not fs.lexists("/in/d/null")
    fs.mknod("/in/d/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # made by root on a mount, say
    out = io.BytesIO()
    export_tar(fs, out, "/in")
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        got = {m.name: m for m in tf.getmembers()}
    f = next(m for n, m in got.items() if n.endswith("d/f"))
    p = next(m for n, m in got.items() if n.endswith("d/p"))
    null = next(m for n, m in got.items() if n.endswith("d/null"))
    assert (f.uid, f.gid) == (1000, 1001) and p.isfifo() and (p.uid, p.gid) == (5, 6)
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3)
