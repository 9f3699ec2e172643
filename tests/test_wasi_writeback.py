"""Write-back windows (docs/wasi.md, "Write-back"): a run's changes are committed
together, yet another process that opens a file after the run closed it sees it,
a process writing while the run reads is not shut out, and a window whose commit
fails (the database connection killed) ends the run with a clear error."""

from __future__ import annotations

import subprocess
import threading

import psycopg
import pytest

from other_process import spawn_writer
from tarbox.wasi import RunStatus, WasiHost
from wasi_support import guest


@pytest.fixture(scope="module")
def wb_guest() -> bytes:
    return guest("writeback")


def _when_printed(marker: bytes, action):
    """An on_stdout callback that runs ``action`` once ``marker`` has been printed."""
    seen = bytearray()
    done = threading.Event()

    def cb(chunk: bytes) -> None:
        seen.extend(chunk)
        if marker in seen and not done.is_set():
            done.set()
            action()

    return cb, done


def test_another_process_sees_a_closed_file_while_the_window_is_open(tb, tenant, db_url, wb_guest):
    """The window is far longer than the run, so nothing commits it before the run
    ends; a reader that only looked at what is committed would find no file."""
    readers: list[subprocess.Popen] = []
    cb, done = _when_printed(
        b"closed",
        lambda: readers.append(
            spawn_writer(db_url, tenant, "print(fs.read_text('/workspace/a.txt'), end='')", stdout=subprocess.PIPE)
        ),
    )
    host = WasiHost(tb, tenant, write_back=30.0)
    r = host.run(wb_guest, ["g", "close-then-wait", "/workspace/a.txt", "1.0"], on_stdout=cb)
    assert r.ok, (r.status, r.trap)
    assert done.is_set()
    out, _ = readers[0].communicate(timeout=60)
    assert readers[0].returncode == 0 and out == b"hello from the run\n"


def test_a_run_holding_read_delegations_sees_another_process_write(tb, tenant, db_url, wb_guest):
    """The guest keeps opening a missing file (each open is served under a read
    delegation); a writer in another process must get in between and the guest
    must see its file."""
    writers: list[subprocess.Popen] = []
    cb, _ = _when_printed(
        b"waiting",
        lambda: writers.append(spawn_writer(db_url, tenant, "fs.write_file('/workspace/x.txt', b'from outside\\n')")),
    )
    r = WasiHost(tb, tenant).run(wb_guest, ["g", "poll", "/workspace/x.txt", "60"], on_stdout=cb)
    assert writers[0].wait(timeout=60) == 0
    assert r.ok and r.stdout == b"waiting\ngot from outside\n", (r.status, r.stdout)


def test_windows_and_another_process_writing_lose_nothing(tb, tenant, db_url, wb_guest):
    fs = tb.filesystem(tenant)
    fs.mkdir("/workspace")
    other = spawn_writer(
        db_url,
        tenant,
        """
        for i in range(150):
            fs.write_file(f'/workspace/g{i}', f'g{i}'.encode())
        """,
    )
    r = WasiHost(tb, tenant).run(wb_guest, ["g", "churn", "150", "2"])
    assert other.wait(timeout=120) == 0
    assert r.ok, (r.status, r.trap, r.stdout[-200:])
    other_view = tb.filesystem(tenant)
    names = other_view.listdir("/workspace")
    assert sorted(names) == sorted([f"f{i}" for i in range(150)] + [f"g{i}" for i in range(150)])
    for name in names:
        assert other_view.read_file(f"/workspace/{name}") == name.encode()
    assert tb.fsck(tenant)[0].ok


def test_database_connections_killed_mid_run_end_it_with_a_clear_error(tb, tenant, server_url, db_url, wb_guest):
    """Every backend of the test database is terminated while the guest writes.
    The run must end with a non-zero exit code and a message saying writes were
    lost (not an exception, not a hang); files that survive are whole; the next
    run on the same host works."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]

    def kill() -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )

    cb, done = _when_printed(b"\n40\n", kill)
    host = WasiHost(tb, tenant, write_back=10.0)  # one window for the whole run: the kill hits it
    r = host.run(wb_guest, ["g", "churn", "200", "5"], on_stdout=cb)
    assert done.is_set()
    assert r.status is RunStatus.EXITED and r.exit_code != 0
    assert b"failed at" in r.stdout or "lost" in (r.trap or "") or "failed" in (r.trap or ""), (r.stdout, r.trap)
    again = host.run(wb_guest, ["g", "close-then-wait", "/workspace/after.txt", "0"])
    assert again.ok, (again.status, again.trap)
    fs = tb.filesystem(tenant)
    assert fs.read_file("/workspace/after.txt") == b"hello from the run\n"
    for name in fs.listdir("/workspace"):
        if name.startswith("f"):
            assert fs.read_file(f"/workspace/{name}") == name.encode()
    (report,) = tb.fsck(tenant)
    assert report.ok, report.problems
