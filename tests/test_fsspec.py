"""The ``tarbox://`` fsspec filesystem: fsspec's own abstract test suite (copy,
get, put, open, pipe between Tarbox and the local disk), URLs with the tenant in
them, a layer view, and a pandas round trip."""

from __future__ import annotations

import posixpath
import uuid

import fsspec
import pandas as pd
import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from tarbox.integrations.fsspec import TarboxFileSystem


class TarboxFixtures(AbstractFixtures):
    @pytest.fixture
    def fs(self, tb, db_url):
        name = f"fsspec-{uuid.uuid4().hex[:10]}"
        tb.create_tenant(name)
        yield fsspec.filesystem("tarbox", tenant=name, database_url=db_url)
        tb.delete_tenant(name)

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def fs_path(self):
        return "/abstract"


class TestTarboxCopy(TarboxFixtures, AbstractCopyTests):
    pass


class TestTarboxGet(TarboxFixtures, AbstractGetTests):
    pass


class TestTarboxPut(TarboxFixtures, AbstractPutTests):
    pass


class TestTarboxOpen(TarboxFixtures, AbstractOpenTests):
    pass


class TestTarboxPipe(TarboxFixtures, AbstractPipeTests):
    pass


def test_the_protocol_is_registered_by_entry_point():
    assert fsspec.get_filesystem_class("tarbox") is TarboxFileSystem


def test_urls_name_the_tenant(tb, tenant, db_url):
    tb.filesystem(tenant).mkdir("/workspace")
    tb.filesystem(tenant).write_file("/workspace/hello.txt", b"hi from tarbox\n")
    with fsspec.open(f"tarbox://{tenant.name}/workspace/hello.txt", "rt", database_url=db_url) as f:
        assert f.read() == "hi from tarbox\n"
    with fsspec.open(f"tarbox://{tenant.name}/workspace/out.bin", "wb", database_url=db_url) as f:
        f.write(b"\x00\x01")
    assert tb.filesystem(tenant).read_file("/workspace/out.bin") == b"\x00\x01"
    fs, path = fsspec.core.url_to_fs(f"tarbox://{tenant.name}/workspace", database_url=db_url)
    assert path == "/workspace"
    assert sorted(fs.ls(path, detail=False)) == ["/workspace/hello.txt", "/workspace/out.bin"]
    assert fs.unstrip_protocol(path) == f"tarbox://{tenant.name}/workspace"


def test_a_layer_view_reads_the_past_and_refuses_writes(tb, tenant, db_url):
    fs = tb.filesystem(tenant)
    fs.write_file("/data.txt", b"v1")
    layer = fs.checkpoint("v1")
    fs.write_file("/data.txt", b"v2")
    past = fsspec.filesystem("tarbox", tenant=tenant.name, layer=layer.id, database_url=db_url)
    assert past.cat_file("/data.txt") == b"v1"
    assert fsspec.filesystem("tarbox", tenant=tenant.name, database_url=db_url).cat_file("/data.txt") == b"v2"
    with pytest.raises(OSError):
        past.pipe_file("/data.txt", b"v3")


def test_info_ranges_and_rename(tb, tenant, db_url):
    fs = fsspec.filesystem("tarbox", tenant=tenant.name, database_url=db_url)
    fs.makedirs("/d", exist_ok=True)
    fs.pipe_file("/d/a.txt", b"0123456789")
    assert fs.cat_file("/d/a.txt", start=2, end=5) == b"234"
    assert fs.cat_file("/d/a.txt", start=-3) == b"789"
    info = fs.info("/d/a.txt")
    assert (info["type"], info["size"]) == ("file", 10)
    assert fs.info("/d")["type"] == "directory"
    fs.mv("/d", "/e")  # one rename, not copy + delete
    assert fs.cat_file("/e/a.txt") == b"0123456789" and not fs.exists("/d")
    with pytest.raises(FileNotFoundError):
        fs.info("/nope")


def test_pandas_round_trip(tb, tenant, db_url):
    df = pd.DataFrame({"step": range(100), "reward": [i * 0.5 for i in range(100)], "tag": ["a", "b"] * 50})
    url = f"tarbox://{tenant.name}/workspace/metrics.csv"
    df.to_csv(url, index=False, storage_options={"database_url": db_url})
    back = pd.read_csv(url, storage_options={"database_url": db_url})
    pd.testing.assert_frame_equal(back, df)
    text = tb.filesystem(tenant).read_text("/workspace/metrics.csv")
    assert text.splitlines()[0] == "step,reward,tag"
