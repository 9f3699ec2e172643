"""/.tarbox: history through plain file I/O, hidden from views that ask."""

from __future__ import annotations

import errno
import json

import pytest


def test_layers_through_control_files(fs):
    fs.write_file("/a", b"one")
    current = json.loads(fs.read_file("/.tarbox/layers/current"))
    assert current["head"] and current["branch"] == "main" and not current["frozen"]
    fs.write_file("/.tarbox/layers/new", b"saved one\n")  # checkpoint
    layers = json.loads(fs.read_file("/.tarbox/layers/list"))
    cp = next(layer for layer in layers if layer["message"] == "saved one")
    assert cp["frozen"] and cp["id"] == current["id"]
    fs.write_file("/a", b"two")
    with fs.open("/.tarbox/layers/switch", "w") as f:  # switch by id, through a file object
        f.write(str(cp["id"]))
    assert fs.read_file("/a") == b"one"
    fs.write_file("/.tarbox/layers/switch", b"main")
    assert fs.read_file("/a") == b"two"
    usage = json.loads(fs.read_file("/.tarbox/stats/usage"))
    assert usage["used_bytes"] == fs.usage().used_bytes and usage["used_inodes"] >= 2


def test_control_dir_is_reachable_but_not_listed(fs):
    assert fs.listdir("/.tarbox") == ["layers", "stats"]
    assert fs.listdir("/.tarbox/layers") == ["current", "list", "new", "switch"]
    assert fs.stat("/.tarbox").is_dir and fs.stat("/.tarbox/layers/list").is_file
    assert ".tarbox" not in fs.listdir("/")  # like ZFS's hidden .zfs
    assert [top for top, _, _ in fs.walk("/")] == ["/"]


def test_control_dir_cannot_be_changed_or_shadowed(fs):
    fs.mkdir("/d")
    for call in (
        lambda: fs.mkdir("/.tarbox/x"),
        lambda: fs.remove("/.tarbox/layers/list"),
        lambda: fs.write_file("/.tarbox/layers/list", b"x"),
        lambda: fs.rename("/d", "/.tarbox"),
        lambda: fs.symlink("/d", "/.tarbox"),
        lambda: fs.mkdir("/.tarbox/layers/new/x", parents=True),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EPERM
    assert fs.listdir("/") == ["d"]


def test_hidden_view_sees_nothing(tb, tenant):
    hidden = tb.filesystem(tenant, hide_control=True)
    for call in (
        lambda: hidden.read_file("/.tarbox/layers/current"),
        lambda: hidden.listdir("/.tarbox"),
        lambda: hidden.stat("/.tarbox"),
        lambda: hidden.write_file("/.tarbox/layers/new", b"x"),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ENOENT
    with pytest.raises(OSError) as info:
        hidden.mkdir("/.tarbox")  # still reserved: it cannot be shadowed by a real entry
    assert info.value.errno in (errno.ENOENT, errno.EPERM)
    assert not hidden.exists("/.tarbox")
    assert len(hidden.layers()) == 1  # nothing was checkpointed
