"""Tenant isolation: every way a caller bound to tenant A can name tenant B's data.

Tenant B holds files whose bytes contain ``B-SECRET``, two checkpoints, a
branch and a distinctive root entry. Bound to tenant A, the suite tries each
public operation with B's identifiers: paths (B's names, B's name and id as
path prefixes, ``..`` runs, ``/.tarbox``), B's layer ids and branch name
(view, switch, diff, branch from, drop, ``/.tarbox/layers/switch``), B's
inode numbers, block hashes and tenant id in raw SQL as the application role
bound to A (row-level security with the Python layer bypassed), the CLI with
``-t A``, and a WASI guest in A. An attempt *succeeds* if it returns B's
bytes (``B-SECRET``), a name only B has, B's layer messages, or changes B; afterwards B must be byte for byte
as before and fsck-clean. Expected successes: 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable

import psycopg

import tarbox
from suites import SuiteResult
from tarbox.storage import citus
from tarbox.wasi import WasiHost
from wasi_support import guest, tarbox_tree

SECRET = b"B-SECRET"
B_ONLY = "only-in-tenant-b"  # requests name it; a leak shows SECRET or HIDDEN, which they never do
HIDDEN = "zz-hidden-name-of-b"
TABLES = ("tenants", "tenant_state", "layers", "inodes", "dirents", "extents", "blocks", "branches", "stages", "audit")
_BLOCKED = (tarbox.TarboxError, OSError, ValueError, KeyError, psycopg.Error)


def _make_b(tb, name: str):
    b = tb.create_tenant(name)
    fs = tb.filesystem(b)
    fs.makedirs(f"/{B_ONLY}/workspace")
    fs.makedirs(f"/{HIDDEN}/{HIDDEN}")
    fs.write_file(f"/{B_ONLY}/workspace/secret", SECRET + b" file one")
    first = fs.checkpoint("B-SECRET first checkpoint")
    fs.write_file("/workspace-secret", SECRET + b" file two " * 1000)  # several blocks
    fs.branch("b-branch")
    second = fs.checkpoint("B-SECRET second checkpoint")
    for i in range(6):  # layer ids are per tenant: B's last ones do not exist in A
        fs.write_file(f"/{B_ONLY}/n{i}", SECRET)
        fs.checkpoint(f"B-SECRET {i}")
    return b, [first.id, second.id, *[x.id for x in fs.layers()[-4:]]]


def _snapshot(tb, tenant) -> tuple:
    fs = tb.filesystem(tenant)
    return tarbox_tree(fs, "/"), [(x.id, x.parent_id, x.message) for x in fs.layers()], fs.branches()


def _leaks(value: object) -> bool:
    text = value if isinstance(value, bytes) else repr(value).encode()
    return SECRET in text or HIDDEN.encode() in text


def app_conn(db_url: str, tenant_id, *, user: str | None = None, autocommit: bool = False) -> psycopg.Connection:
    """A connection as the application role, bound to ``tenant_id`` with its token
    (minted by the owner), as Tarbox binds its own. With ``user``, logged in as that
    role (a member of the application role only, so RESET ROLE stays unprivileged)."""
    with psycopg.connect(db_url, options="-c search_path=tarbox") as owner:
        token = owner.execute("SELECT tarbox_tenant_token(%s)", (tenant_id,)).fetchone()[0]
        carrier = citus.installed(owner) and citus.distributed(owner)
    # on Citus the workers enforce the policies: every transaction must carry the binding
    # there, as Tarbox's own connections do (storage/citus.py)
    kind, options = psycopg.Connection, "-c search_path=tarbox"
    if carrier:
        kind, options = citus.BindingCarrier, options + " -c citus.propagate_set_commands=local"
    conn = kind.connect(db_url, user=user, options=options, autocommit=autocommit)
    conn.execute("SET ROLE tarbox_app")
    conn.carrying = True
    conn.execute(
        "SELECT set_config('tarbox.tenant_id', %s, false), set_config('tarbox.tenant_token', %s, false)",
        (str(tenant_id), token),
    )
    if not autocommit:
        conn.commit()  # the role and binding outlive the test's rollbacks; its next transaction carries them
    return conn


def run(tb, db_url: str, *, pairs: int = 1, cli: bool = True) -> SuiteResult:
    """``pairs`` fresh (A, B) tenant pairs; ``cli`` adds the subprocess CLI attempts (slow)."""
    result = SuiteResult("tenant isolation")
    result.figures["attempts by interface"] = by_iface = {}
    wasm = guest("ops")
    for _ in range(pairs):
        tag = uuid.uuid4().hex[:8]
        a = tb.create_tenant(f"iso-a-{tag}")
        b, b_layers = _make_b(tb, f"iso-b-{tag}")
        try:
            before = _snapshot(tb, b)
            _attempts(tb, db_url, a, b, b_layers, wasm, result, by_iface, cli)
            try:
                if _snapshot(tb, b) != before:
                    result.fail("tenant B changed")
                result.fsck(tb, a, b)
            except tarbox.TarboxError as exc:
                result.fail(f"tenant B damaged: {exc}")
        finally:
            for t in (a, b):
                try:
                    tb.delete_tenant(t)
                except tarbox.TenantNotFoundError:
                    pass
    return result


def _attempts(tb, db_url, a, b, b_layers, wasm, result, by_iface, cli) -> None:
    def attempt(iface: str, what: str, fn: Callable[[], object]) -> None:
        result.cases += 1
        by_iface[iface] = by_iface.get(iface, 0) + 1
        try:
            value = fn()
        except _BLOCKED:
            return
        if _leaks(value):
            result.fail(f"{iface}: {what} returned tenant B's data: {repr(value)[:200]}")

    fs = tb.filesystem(a)
    fs.makedirs("/workspace")
    fs.write_file("/workspace/mine", b"tenant A's own file")
    paths = [
        f"/{B_ONLY}/workspace/secret",
        "/workspace-secret",
        f"/{b.name}/{B_ONLY}/workspace/secret",
        f"/{b.id}/{B_ONLY}/workspace/secret",
        f"/../{b.name}/workspace-secret",
        f"/../../{B_ONLY}/workspace/secret",
        f"/.tarbox/../{B_ONLY}/workspace/secret",
        f"/workspace/../../{b.id}/workspace-secret",
    ]
    for p in paths:
        attempt("python", f"read {p}", lambda p=p: fs.read_file(p))
        attempt("python", f"stat {p}", lambda p=p: fs.stat(p))
        attempt("python", f"open {p}", lambda p=p: fs.open(p, "rb").read())
        attempt(
            "python", f"rename into {p}", lambda p=p: fs.rename("/workspace/mine", p) or fs.rename(p, "/workspace/mine")
        )
        attempt("python", f"symlink to {p} and read", lambda p=p: fs.symlink(p, "/l") or fs.read_file("/l"))
        if _lexists(fs, "/l"):
            fs.remove("/l")
    for d in ("/", "/..", f"/{b.name}", f"/{b.id}", "/.tarbox", "/.tarbox/layers"):
        attempt("python", f"list {d}", lambda d=d: fs.listdir(d))
        attempt("python", f"walk {d}", lambda d=d: list(fs.walk(d)))
    for name in ("/.tarbox/layers/list", "/.tarbox/layers/current", "/.tarbox/stats/usage"):
        attempt("/.tarbox", f"read {name}", lambda name=name: fs.read_file(name))
    for lid in b_layers:
        attempt("python", f"view layer {lid}", lambda lid=lid: tarbox_tree(tb.filesystem(a, layer=lid), "/"))
        attempt("python", f"switch to layer {lid}", lambda lid=lid: fs.switch(lid) or tarbox_tree(fs, "/"))
        attempt("python", f"diff {lid}", lambda lid=lid: fs.diff(lid, patch=True))
        attempt("python", f"diff head..{lid}", lambda lid=lid: fs.diff(fs.current_layer().id, lid, patch=True))
        attempt("python", f"branch from {lid}", lambda lid=lid: fs.branch(f"x{lid}", lid) and tarbox_tree(fs, "/"))
        attempt("python", f"layer counts {lid}", lambda lid=lid: fs.layer_counts(lid))
        attempt("python", f"drop layer {lid}", lambda lid=lid: fs.drop_layer(lid, descendants=True))
        attempt(
            "/.tarbox", f"switch file {lid}", lambda lid=lid: fs.write_file("/.tarbox/layers/switch", str(lid).encode())
        )
        if _leaks(tarbox_tree(fs, "/")):
            result.fail(f"after layer {lid}: tenant A's tree shows tenant B's data")
    for name in ("b-branch",):
        attempt("python", f"switch to branch {name}", lambda: fs.switch("b-branch") or tarbox_tree(fs, "/"))
        attempt("python", f"delete branch {name}", lambda: fs.delete_branch("b-branch"))
        attempt("/.tarbox", f"switch file {name}", lambda: fs.write_file("/.tarbox/layers/switch", b"b-branch"))
    attempt("python", "layers", lambda: fs.layers(counts=True))
    attempt("python", "checkpoint", lambda: fs.checkpoint("A's own"))
    attempt("python", "usage", lambda: fs.usage())
    _sql_attempts(db_url, a, b, attempt)
    attempt("wasi", "guest reads and lists", lambda: _wasi(tb, a, wasm, b))
    if cli and shutil.which("tarbox"):
        _cli_attempts(db_url, a, b, b_layers, attempt)


def _lexists(fs, p: str) -> bool:
    try:
        fs.lstat(p)
        return True
    except OSError:
        return False


def _sql_attempts(db_url, a, b, attempt) -> None:
    """Raw SQL as the application role bound to A, using B's identifiers (taken as the owner)."""
    role = f"tarbox_iso_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, options="-c search_path=tarbox", autocommit=True) as owner:
        inos = [r[0] for r in owner.execute("SELECT ino FROM inodes WHERE tenant_id = %s", (b.id,))]
        hashes = [bytes(r[0]) for r in owner.execute("SELECT hash FROM blocks WHERE tenant_id = %s", (b.id,))]
        layers = [r[0] for r in owner.execute("SELECT layer_id FROM layers WHERE tenant_id = %s", (b.id,))]
        owner.execute(f"CREATE ROLE {role} LOGIN IN ROLE tarbox_app")
        try:
            _sql_as(db_url, role, a, b, inos, hashes, layers, attempt)
        finally:
            owner.execute(f"DROP ROLE {role}")


def _sql_as(db_url, role, a, b, inos, hashes, layers, attempt) -> None:
    with app_conn(db_url, a.id, user=role, autocommit=True) as conn:

        def q(sql: str, args=()):
            cur = conn.execute(sql, args)
            return cur.fetchall() if cur.description else []

        for table in TABLES:
            attempt(
                "sql",
                f"select {table} by tenant id",
                lambda t=table: q(f"SELECT * FROM {t} WHERE tenant_id = %s", (b.id,)),
            )
            attempt(
                "sql",
                f"count {table}",
                lambda t=table: _nonzero(q(f"SELECT count(*) FROM {t} WHERE tenant_id <> %s", (a.id,))),
            )
            attempt(
                "sql",
                f"delete {table} of B",
                lambda t=table: _rowcount(conn, f"DELETE FROM {t} WHERE tenant_id = %s", (b.id,)),
            )
            attempt(
                "sql",
                f"update {table} of B",
                lambda t=table: _rowcount(conn, f"UPDATE {t} SET tenant_id = tenant_id WHERE tenant_id = %s", (b.id,)),
            )
        attempt(
            "sql",
            "inodes by B's ino",
            lambda: q("SELECT * FROM inodes WHERE ino = ANY(%s) AND tenant_id <> %s", (inos, a.id)),
        )
        attempt("sql", "blocks by B's hash", lambda: q("SELECT data FROM blocks WHERE hash = ANY(%s)", (hashes,)))
        attempt("sql", "layers by B's id", lambda: q("SELECT * FROM layers WHERE layer_id = ANY(%s)", (layers,)))
        attempt("sql", "dirents of B's layers", lambda: q("SELECT * FROM dirents WHERE layer_id = ANY(%s)", (layers,)))
        attempt("sql", "tenant row of B", lambda: q("SELECT * FROM tenants WHERE name = %s", (b.name,)))
        attempt(
            "sql",
            "insert as B",
            lambda: q(
                "INSERT INTO layers (tenant_id, layer_id, message) VALUES (%s, 999, 'x') RETURNING layer_id", (b.id,)
            ),
        )
        attempt(
            "sql",
            "bypass row security",
            lambda: q("SET row_security = off; SELECT * FROM blocks WHERE tenant_id = %s", (b.id,)),
        )
        attempt("sql", "disable row security", lambda: q("ALTER TABLE blocks DISABLE ROW LEVEL SECURITY"))
        attempt("sql", "reset role", lambda: q("RESET ROLE") or q("SELECT * FROM blocks WHERE tenant_id = %s", (b.id,)))
        attempt(
            "sql",
            "become the owner",
            lambda: q("SET ROLE NONE; SET SESSION AUTHORIZATION DEFAULT") or q("SELECT data FROM blocks"),
        )
    for what, sql, args in (
        ("rebind to B with A's token", "SELECT set_config('tarbox.tenant_id', %s, false)", (str(b.id),)),
        (
            "forge B's token",
            "SELECT set_config('tarbox.tenant_token', encode(sha256(%s::text::bytea), 'hex'), false)",
            (str(b.id),),
        ),
        ("read the signing key", "SELECT * FROM tarbox_binding_key", ()),
        ("mint B's token", "SELECT tarbox_tenant_token(%s)", (b.id,)),
    ):
        with app_conn(db_url, a.id, user=role, autocommit=True) as conn:
            attempt(
                "sql",
                what,
                lambda c=conn, s=sql, x=args: [
                    c.execute(s, x).fetchall(),
                    *[c.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES],
                ],
            )
    with psycopg.connect(db_url, user=role, options="-c search_path=tarbox", autocommit=True) as unbound:
        for table in TABLES:
            attempt(
                "sql",
                f"unbound {table}",
                lambda t=table: _nonzero(unbound.execute(f"SELECT count(*) FROM {t}").fetchall()),
            )


def _nonzero(rows) -> object:
    return SECRET if rows and rows[0][0] else rows  # any row of B counts as a leak


def _rowcount(conn, sql: str, args) -> object:
    return SECRET if conn.execute(sql, args).rowcount else 0


def _wasi(tb, a, wasm: bytes, b) -> bytes:
    script = "\n".join(
        [
            "ls .",
            "ls ..",
            "ls /",
            f"cat ../{B_ONLY}/workspace/secret",
            "cat ../workspace-secret",
            f"cat /{b.name}/workspace-secret",
            "cat /.tarbox/layers/list",
            "ls /.tarbox",
            f"symlink ../../{B_ONLY} esc",
            "ls esc",
            "open /.tarbox/layers/switch w",
            "write 0 1",
        ]
    )
    r = WasiHost(tb, a, "/workspace").run(wasm, ["ops"], stdin=script.encode())
    return r.stdout + r.stderr


def _cli_attempts(db_url, a, b, b_layers, attempt) -> None:
    env = {**os.environ, "TARBOX_DATABASE_URL": db_url}
    exe = shutil.which("tarbox")

    def cli(*args: str) -> bytes:
        p = subprocess.run([exe, "-t", a.name, *args], capture_output=True, env=env, timeout=120)
        return p.stdout + (b"" if p.returncode else b"") + p.stderr

    lid = str(b_layers[0])
    attempt("cli", "cat B's path", lambda: cli("cat", f"/{B_ONLY}/workspace/secret"))
    attempt("cli", "ls /", lambda: cli("--json", "ls", "/"))
    attempt("cli", "log", lambda: cli("--json", "log"))
    attempt("cli", "switch to B's layer", lambda: cli("switch", lid) + cli("--json", "ls", "/"))
    attempt("cli", "diff B's layer", lambda: cli("diff", lid))
    attempt("cli", "branch from B's layer", lambda: cli("branch", "stolen", "--from", lid))
    attempt("cli", "drop B's layer", lambda: cli("layer", "drop", lid))
    attempt("cli", "fsck", lambda: cli("--json", "fsck"))
