"""A throwaway Citus cluster on localhost: a coordinator and N workers, each a
PostgreSQL 15 server with the Citus extension (built by ``../shared/citus/build.sh``),
on free ports under a temporary directory, removed by ``stop()``.

Used by the Citus tests and ``bench/citus_bench.py``; not shipped in the package.
As root, the servers run as the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("TARBOX_CITUS_PG_BIN", "/usr/lib/postgresql/15/bin"))
CITUS_SO = PG_BIN.parent / "lib" / "citus.so"


def unavailable_reason() -> str | None:
    """Why no cluster can start here, or None if one can."""
    if not (PG_BIN / "postgres").exists():
        return f"no PostgreSQL server binaries in {PG_BIN} (../shared/citus/build.sh installs PostgreSQL 15)"
    if not CITUS_SO.exists():
        return f"the Citus extension is not installed ({CITUS_SO} missing; run ../shared/citus/build.sh as root)"
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the servers as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = root / name
        self.port = _free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class CitusCluster:
    """``with CitusCluster(workers=2) as c: c.url``: the coordinator's URL."""

    def __init__(self, workers: int = 2, *, citus: bool = True) -> None:
        self.citus = citus  # False: plain servers until enable_citus() (an existing database converted)
        self._as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="tarbox-citus-"))
        if os.getuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self.coordinator = Node(self.root, "coordinator")
        self.workers = [Node(self.root, f"worker{i}") for i in range(workers)]
        self._started: list[Node] = []

    @property
    def url(self) -> str:
        return self.coordinator.url

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}")

    def _start_node(self, node: Node) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(node.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        with open(node.dir / "postgresql.conf", "a") as conf:
            conf.write(
                "shared_preload_libraries = 'citus'\n"
                f"port = {node.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{node.dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 300\nshared_buffers = 128MB\n"
                # logical replication for shard moves
                "wal_level = logical\nmax_replication_slots = 20\nmax_wal_senders = 20\n"
                # shard splits (isolate_tenant_to_new_shard) decode with Citus's own plugin,
                # which recent PostgreSQL minors allow only when listed here
                "output_plugin_libraries = 'pgoutput, test_decoding, citus'\n"
                # fewer shards than the default 32: each move and rebalance is quicker here
                "citus.shard_count = 8\n"
                # counts single- and multi-shard statements (citus_stat_counters)
                "citus.enable_stat_counters = on\n"
            )
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(node.dir), "-l", str(node.dir / "log"), "-w", "start")
        self._started.append(node)

    def start(self) -> CitusCluster:
        try:
            self._start_node(self.coordinator)
            for w in self.workers:
                self._start_node(w)
            if self.citus:
                self.enable_citus()
        except BaseException:
            self.stop()
            raise
        return self

    def enable_citus(self) -> None:
        """CREATE EXTENSION citus on every node and register the workers."""
        for node in (self.coordinator, *self.workers):
            with psycopg.connect(node.url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator.port,))
            for w in self.workers:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (w.port,))
        self.citus = True

    def add_worker(self) -> Node:
        node = Node(self.root, f"worker{len(self.workers)}")
        self._start_node(node)
        with psycopg.connect(node.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
        self.workers.append(node)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (node.port,))
        return node

    def stop(self) -> None:
        for node in reversed(self._started):
            subprocess.run(
                [*self._as_user, str(PG_BIN / "pg_ctl"), "-D", str(node.dir), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
        self._started.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> CitusCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # a cluster to experiment with: prints its URL, runs until ^C
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = CitusCluster().start()
    print(cluster.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.stop()
