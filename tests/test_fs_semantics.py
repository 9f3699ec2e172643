"""Filesystem behaviour the differential test does not reach: path validation,
symlink loops, times and modes, file objects, open-unlinked files."""

from __future__ import annotations

import errno
import io
import os
import time

import pytest

import tarbox


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("", errno.ENOENT),
        ("/a\x00b", errno.EINVAL),
        ("/" + "n" * 256, errno.ENAMETOOLONG),
        ("/" + "é" * 128, errno.ENAMETOOLONG),  # 256 bytes in UTF-8
        ("/" + "/".join(["d" * 200] * 21), errno.ENAMETOOLONG),  # > 4096 bytes
        ("/bad\udcff", errno.EILSEQ),
    ],
)
def test_bad_paths_rejected_with_errno(fs, path, code):
    for call in (lambda: fs.write_file(path, b"x"), lambda: fs.stat(path), lambda: fs.mkdir(path)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == code
    assert fs.listdir("/") == []  # nothing was created


def test_name_of_exactly_255_bytes_is_fine(fs):
    name = "/" + "n" * 255
    fs.write_file(name, b"ok")
    assert fs.read_file(name) == b"ok"


def test_dotdot_never_leaves_root(fs):
    fs.mkdir("/w")
    fs.write_file("/w/f", b"1")
    assert fs.read_file("/../../w/../../w/f") == b"1"
    assert fs.listdir("/..") == ["w"]


def test_symlink_loop_is_eloop(fs):
    fs.symlink("b", "/a")
    fs.symlink("a", "/b")
    with pytest.raises(OSError) as info:
        fs.read_file("/a")
    assert info.value.errno == errno.ELOOP
    fs.symlink("self/x", "/self")
    with pytest.raises(OSError) as info:
        fs.stat("/self")
    assert info.value.errno == errno.ELOOP
    assert fs.readlink("/a") == "b"  # the link itself is fine


def test_symlink_chain_of_40_resolves_41_loops(fs):
    fs.write_file("/target", b"end")
    prev = "target"
    for i in range(40):
        fs.symlink(prev, f"/l{i}")
        prev = f"l{i}"
    assert fs.read_file("/l39") == b"end"  # 40 links followed: allowed (Linux MAXSYMLINKS)
    fs.symlink("l39", "/l40")
    with pytest.raises(OSError) as info:
        fs.read_file("/l40")
    assert info.value.errno == errno.ELOOP


def test_absolute_symlink_and_dotdot_after_symlink_is_physical(fs):
    fs.mkdir("/x/y", parents=True)
    fs.write_file("/x/file", b"in x")
    fs.symlink("/x/y", "/ly")
    # /ly/.. is the parent of /x/y (physical), i.e. /x
    assert fs.read_file("/ly/../file") == b"in x"


def test_stat_fields_chmod_utime(fs):
    before = time.time_ns()
    fs.write_file("/f", b"12345")
    s = fs.stat("/f")
    assert s.size == 5 and s.nlink == 1 and s.is_file and s.mode == 0o644
    assert before <= s.mtime_ns <= time.time_ns() and s.ctime_ns >= s.mtime_ns - 1
    fs.chmod("/f", 0o600)
    assert fs.stat("/f").mode == 0o600
    fs.utime("/f", (1_000_000_000, 2_000_000_000))
    s = fs.stat("/f")
    assert (s.atime_ns, s.mtime_ns) == (1_000_000_000, 2_000_000_000)
    assert s.ctime_ns > 2_000_000_000
    fs.mkdir("/d")
    fs.mkdir("/d/e")
    assert fs.stat("/d").nlink == 3 and fs.stat("/").nlink == 3
    assert fs.stat("/f").ino != fs.stat("/d").ino


def test_hard_links_share_content_and_count(fs):
    fs.write_file("/a", b"one")
    fs.link("/a", "/b")
    fs.append_file("/b", b"+two")
    assert fs.read_file("/a") == b"one+two"
    assert fs.stat("/a").nlink == 2 and fs.stat("/a").ino == fs.stat("/b").ino
    fs.remove("/a")
    assert fs.stat("/b").nlink == 1 and fs.read_file("/b") == b"one+two"


def test_file_object_read_write_seek(fs):
    with fs.open("/f", "w+b") as f:
        assert f.write(b"hello world") == 11
        f.seek(6)
        assert f.read() == b"world"
        f.seek(0)
        f.write(b"J")
        f.seek(-5, os.SEEK_END)
        assert f.read(2) == b"wo"
        assert f.tell() == 8
        buf = bytearray(4)
        f.seek(0)
        assert f.readinto(buf) == 4 and bytes(buf) == b"Jell"
        f.truncate(4)
    assert fs.read_file("/f") == b"Jell"
    with fs.open("/f", "ab") as f:
        f.seek(0)
        f.write(b"!")  # O_APPEND: always at the end
    assert fs.read_file("/f") == b"Jell!"
    with fs.open("/f", "r+b") as f:
        f.seek(10)
        f.write(b"Z")  # writing past the end leaves a hole of zeros
    assert fs.read_file("/f") == b"Jell!" + b"\0" * 5 + b"Z"
    with pytest.raises(FileExistsError):
        fs.open("/f", "xb")
    with pytest.raises(io.UnsupportedOperation), fs.open("/f", "rb") as f:
        f.write(b"no")


def test_text_mode_and_lines(fs):
    with fs.open("/t.txt", "w") as f:
        f.write("line 1\nline 2\nünïcode\n")
    with fs.open("/t.txt", "r") as f:
        assert f.readlines() == ["line 1\n", "line 2\n", "ünïcode\n"]


def test_sparse_extend_and_shrink_across_blocks(fs):
    bs = 128 * 1024
    data = bytes(range(256)) * (3 * bs // 256) + b"tail"
    fs.write_file("/f", data)
    fs.truncate("/f", bs + 10)
    fs.truncate("/f", 3 * bs)  # grows with zeros, never the old bytes
    got = fs.read_file("/f")
    assert got[: bs + 10] == data[: bs + 10] and got[bs + 10 :] == bytes(3 * bs - bs - 10)
    with fs.open("/f", "r+b") as f:
        f.seek(bs - 3)
        f.write(b"XXXXXX")  # straddles a block boundary
    got = fs.read_file("/f")
    assert got[bs - 3 : bs + 3] == b"XXXXXX" and got[: bs - 3] == data[: bs - 3]


def test_unlinked_open_file_stays_readable_until_close(fs):
    fs.write_file("/tmp1", b"still here")
    f = fs.open("/tmp1", "rb")
    fs.remove("/tmp1")
    assert not fs.exists("/tmp1")
    assert f.read() == b"still here"
    f.close()
    assert fs.usage().used_bytes == 0


def test_read_only_view_refuses_writes(tb, tenant):
    tb.filesystem(tenant).write_file("/a", b"1")
    ro = tb.filesystem(tenant, read_only=True)
    assert ro.read_file("/a") == b"1"
    for call in (lambda: ro.write_file("/b", b""), lambda: ro.remove("/a"), lambda: ro.mkdir("/d")):
        with pytest.raises(PermissionError) as info:
            call()
        assert info.value.errno == errno.EROFS
    with pytest.raises(PermissionError):
        ro.open("/a", "ab")


def test_errors_are_tarbox_errors_and_builtins(fs):
    with pytest.raises(tarbox.FilesystemError) as info:
        fs.read_file("/missing")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, tarbox.TarboxError)
    fs.mkdir("/d")
    fs.write_file("/d/x", b"")
    with pytest.raises(IsADirectoryError):
        fs.read_file("/d")
    with pytest.raises(NotADirectoryError):
        fs.listdir("/d/x")
    with pytest.raises(OSError) as info:
        fs.rmdir("/d")
    assert info.value.errno == errno.ENOTEMPTY


def test_remove_tree_and_walk(fs):
    for i in range(5):
        fs.mkdir(f"/r/d{i}", parents=True)
        for j in range(3):
            fs.write_file(f"/r/d{i}/f{j}", b"x" * j)
    walked = list(fs.walk("/r"))
    assert walked[0] == ("/r", [f"d{i}" for i in range(5)], [])
    assert sum(len(files) for _, _, files in walked) == 15
    fs.remove_tree("/r")
    assert fs.listdir("/") == []
    assert fs.usage().used_inodes == 1  # only the root is left


def test_a_refused_operation_keeps_other_files_buffered_writes(fs):
    """Found by the WASI differential test: mkdir on an existing name used to roll
    back the transaction and drop what an open file had buffered."""
    f = fs.open("/a", "wb")
    f.write(b"buffered")
    with pytest.raises(FileExistsError):
        fs.mkdir("/a")
    with pytest.raises(FileNotFoundError):
        fs.remove("/missing")
    f.close()  # used to raise EIO "buffered writes were lost"
    assert fs.read_file("/a") == b"buffered"


def test_rename_and_mkdir_never_follow_a_final_symlink_even_before_a_slash(fs, tmp_path):
    """Linux is the oracle: rename of a symlink (even a self-loop) with a trailing
    slash on either side is ENOTDIR, not ELOOP. Found by the WASI fuzzer."""
    import os

    os.symlink("a", tmp_path / "a")
    os.symlink("x", tmp_path / "l")
    fs.symlink("a", "/a")
    fs.symlink("x", "/l")
    for src, dst in [("a", "a/"), ("a/", "b"), ("a", "b/"), ("l", "c/")]:
        with pytest.raises(OSError) as local:
            os.rename(f"{tmp_path}/{src}", f"{tmp_path}/{dst}")  # f-strings keep the slashes
        with pytest.raises(OSError) as ours:
            fs.rename("/" + src, "/" + dst)
        assert ours.value.errno == local.value.errno, (src, dst)
    os.symlink("missing", tmp_path / "d")  # mkdir does not follow a dangling final symlink either
    fs.symlink("missing", "/d")
    with pytest.raises(OSError) as local:
        os.mkdir(f"{tmp_path}/d/")
    with pytest.raises(OSError) as ours:
        fs.mkdir("/d/")
    assert ours.value.errno == local.value.errno and not fs.exists("/missing")


def test_rename_of_dot_names_is_ebusy_like_linux(fs, tmp_path):
    """Linux (do_renameat2) refuses a final '.' or '..' on either side with EBUSY,
    before it looks the source up. Found by the WASI fuzzer."""
    import os

    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"")
    fs.mkdir("/d")
    fs.write_file("/f", b"")
    for src, dst in [("a", "d/.."), ("d/.", "x"), ("d/..", "x"), ("f", "d/."), ("f", "."), (".", "x"), ("a", ".")]:
        with pytest.raises(OSError) as local:
            os.rename(f"{tmp_path}/{src}", f"{tmp_path}/{dst}")
        with pytest.raises(OSError) as ours:
            fs.rename("/" + src, "/" + dst)
        assert ours.value.errno == local.value.errno, (src, dst)


def test_mkdir_p_recreates_what_another_connection_removed(tb, tenant, db_url):
    """mkdir -p of a directory that exists takes no write lock, but must still see
    (close-to-open) that another connection removed it meanwhile."""
    fs = tb.filesystem(tenant)
    fs.mkdir("/a/b", parents=True)
    assert fs.is_dir("/a/b")  # cached here
    with tarbox.connect(db_url) as other:
        other.filesystem(tenant).rmdir("/a/b")
    fs.mkdir("/a/b", parents=True, exist_ok=True)
    with tarbox.connect(db_url) as other:
        assert other.filesystem(tenant).is_dir("/a/b")
