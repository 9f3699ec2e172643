"""``tarbox doctor``: checks the pieces Tarbox needs, each with what to do if it fails."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version

import tarbox
from tarbox.storage.rows import one_value


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""  # the next thing to try when not ok
    required: bool = True  # False: a missing optional piece is a warning, not a failure


def run_checks(url: str | None) -> list[Check]:
    out = [
        Check(
            "python",
            sys.version_info >= (3, 11),
            sys.version.split()[0],
            "Tarbox needs Python 3.11 or newer",
        )
    ]
    out += _database(url)
    out += [_wasmtime(), _cache(), _toolchain(), _sandbox()]
    return out


def _database(url: str | None) -> list[Check]:
    from tarbox.fs.fsck import security_problems
    from tarbox.storage.migrate import latest_version
    from tarbox.storage.server import embedded_status

    checks = []
    if url is None and not os.environ.get("TARBOX_DATABASE_URL"):
        s = embedded_status()
        state = "running" if s.running else "initialized, stopped" if s.initialized else "not created yet"
        checks.append(Check("embedded server", True, f"{state} ({s.pgdata})"))
    try:
        tb = tarbox.connect(url)
    except Exception as exc:  # noqa: BLE001 - reported, that is the point
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "check TARBOX_DATABASE_URL / --url and that the server runs" if url else "run `tarbox init`"
        return [*checks, Check("database", False, first, hint)]
    try:
        where = "embedded PostgreSQL" if tb.db.embedded else "PostgreSQL"
        with tb.db.admin() as conn:
            server = one_value(conn.execute("SHOW server_version"))
        checks.append(Check("database", True, f"{where} {server}"))
        have, want = tb.db.schema_version, latest_version()
        checks.append(
            Check("schema", have == want, f"version {have} (this Tarbox: {want})", "upgrade tarbox or the database")
        )
        checks.append(_mode(tb))
        problems = security_problems(tb.db)
        checks.append(
            Check(
                "row-level security",
                not problems,
                "every tenant table protected" if not problems else problems[0].detail,
                "re-run the migrations as the schema owner (`tarbox init`)",
            )
        )
    finally:
        tb.close()
    return checks


def _mode(tb: tarbox.Tarbox) -> Check:
    """Single server or Citus; on Citus the nodes, and whether each worker can check
    tenant bindings (it needs the binding key: `tarbox db distribute` gives it)."""
    from tarbox.storage import citus

    if not tb.db.citus:
        return Check("mode", True, "single server")
    with tb.db.admin() as conn:
        if not tb.db.distributed:
            return Check(
                "mode",
                False,
                "Citus is installed but Tarbox's tables are local to the coordinator",
                "run `tarbox db distribute`",
                required=False,
            )
        nodes = citus.nodes(conn)
        unkeyed = citus.unkeyed_nodes(conn)
    shown = ", ".join(f"{n.role} {n.host}:{n.port} ({n.shards} placements)" for n in nodes)
    if unkeyed:
        missing = ", ".join(f"{h}:{p}" for h, p in unkeyed)
        return Check("mode", False, f"Citus: {shown}; no binding key on {missing}", "run `tarbox db distribute`")
    return Check("mode", True, f"Citus: {shown}")


def _wasmtime() -> Check:
    try:
        import wasmtime

        engine = wasmtime.Engine()
        wasmtime.Module(engine, bytes(wasmtime.wat2wasm('(module (func (export "_start")))')))
        return Check("wasmtime", True, f"wasmtime-py {version('wasmtime')}, compiles modules")
    except Exception as exc:  # noqa: BLE001
        return Check("wasmtime", False, str(exc).splitlines()[0], "pip install --upgrade wasmtime")


def _cache() -> Check:
    from tarbox.wasi.engine import cache_dir

    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d):
            pass
        return Check("module cache", True, f"{d} (writable)")
    except OSError as exc:
        return Check("module cache", False, f"{d}: {exc.strerror}", "set TARBOX_HOME to a writable directory")


def _toolchain() -> Check:
    found = importlib.util.find_spec("ziglang") is not None
    return Check(
        "C toolchain",
        found,
        f"ziglang {version('ziglang')} (builds .c agents)" if found else "ziglang is not installed",
        "pip install ziglang (only needed to build C agents)",
        required=False,
    )


def _sandbox() -> Check:
    from tarbox.sandbox import overlay_unavailable_reason, unavailable_reason

    why = unavailable_reason()
    # where overlays cannot be mounted, runs work on a copy of the workspace: slower, same contract
    workspace = "an overlay per run" if overlay_unavailable_reason() is None else "a copy per run (no overlayfs)"
    return Check(
        "native sandbox",
        why is None,
        f"bubblewrap, user namespaces, seccomp, {workspace} (tarbox exec, /v1/exec, MCP bash)" if why is None else why,
        "apt-get install bubblewrap (only needed for native commands, docs/exec.md)",
        required=False,
    )
