"""What one authenticated caller may do to its tenant: the operations the REST API and
the MCP tools share, each a plain blocking call (the front ends run them in threads).

It owns the caller's view of the tenant (``/.tarbox`` hidden, read-only for a
read-only token), the refusals that depend on the token (a read-only token cannot
write, an admin token touches no files), the server's limits on runs, and the
shapes of results that both front ends return. It does not know HTTP or MCP.
"""

from __future__ import annotations

import base64
import functools
import os
import posixpath
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tarbox import runs as run_log
from tarbox.client import Tarbox
from tarbox.errors import fs_error
from tarbox.fs import AuditOp, Filesystem, FileType, Stat
from tarbox.fs import paths as fspaths
from tarbox.server.errors import ApiError
from tarbox.tokens import TokenInfo

# changes a run made, as its audit records name them
_MUTATIONS = {
    AuditOp.CREATE,
    AuditOp.WRITE,
    AuditOp.APPEND,
    AuditOp.TRUNCATE,
    AuditOp.MKDIR,
    AuditOp.REMOVE,
    AuditOp.RMDIR,
    AuditOp.RENAME,
    AuditOp.SYMLINK,
    AuditOp.LINK,
    AuditOp.CHMOD,
    AuditOp.CHOWN,
    AuditOp.MKNOD,
    AuditOp.UTIME,
}


@dataclass
class Limits:
    """The server's bounds; a request may ask for less, never more (docs/server.md, "Limits")."""

    run_timeout: float = 60.0  # seconds
    run_memory: int = 512 << 20  # bytes of linear memory
    exec_memory: int = 1 << 30  # bytes a native run's process tree may use (tarbox.sandbox)
    exec_pids: int = 256  # processes of one native run
    exec_allow_net: tuple[str, ...] = ()  # HOST:PORT native runs may reach; set by the operator only
    runs_per_token: int = 4  # concurrent runs
    runs_per_tenant: int = 8
    max_runs: int = max(2, os.cpu_count() or 2)  # runs at once in the server; more wait in line
    streams_per_tenant: int = 8  # imports, uploads, exports, downloads at once
    max_streams: int = 16  # stream threads (applying imports and uploads, producing exports)
    calls_per_tenant: int = 8  # other requests of one tenant in progress at once, alone on the server
    fair_calls: int = 1  # ... and while other tenants are active (workers.FairShares)
    queue_wait: float = 10.0  # seconds a request waits for a slot before 429
    max_upload: int = 16 << 30  # bytes of one PUT or import
    max_json: int = 64 << 20  # bytes of one JSON body (a module travels base64 in it)
    body_timeout: float = 30.0  # seconds a request body may pause before 408
    header_timeout: float = 10.0  # seconds a connection may take to send a request's headers
    read_limit: int = 16 << 20  # bytes one MCP read_file returns at most
    output_to_model: int = 64 << 10  # bytes of a run's stdout (and stderr) an MCP answer carries
    sessions_per_token: int = 4  # Python sessions open at once (each holds an interpreter)
    max_sessions: int = 32  # ... in the whole server
    session_idle: float = 600.0  # seconds a session may sit unused before it ends
    session_lifetime: float = 3600.0  # seconds a session may live


def _committed(method):
    """A mutating call returns only once what it changed is committed: other views'
    batches and write-back windows on the shared store (a run, an export) may have
    taken it in, and an answer must never come before its commit."""

    @functools.wraps(method)
    def committed(self, *args, **kwargs):
        out = method(self, *args, **kwargs)
        if self._fs is not None:
            self._fs.commit()
        return out

    return committed


def stat_dict(path: str, s: Stat) -> dict:
    return {
        "path": path,
        "type": s.type.name.lower(),
        "size": s.size,
        "mode": oct(s.mode),
        "nlink": s.nlink,
        "uid": s.uid,
        "gid": s.gid,
        "ino": s.ino,
        "mtime_ns": s.mtime_ns,
        "ctime_ns": s.ctime_ns,
        "atime_ns": s.atime_ns,
    }


def changes_of(records) -> list[dict]:
    """What a run changed, from its audit records: each change's operation and path(s)."""
    return [
        {"op": str(r.op), "path": r.path, **({"path2": r.path2} if r.path2 else {})}
        for r in records
        if r.op in _MUTATIONS
    ]


def run_dict(r: run_log.RunRecord) -> dict:
    return {
        "run_id": str(r.run_id),
        "started_at": r.started_at.isoformat(),
        "duration": r.duration,
        "command": r.command,
        "status": r.status,
        "exit_code": r.exit_code,
        "trap": r.trap,
        "checkpoint": r.checkpoint,
        "stdout_bytes": r.stdout_bytes,
        "stderr_bytes": r.stderr_bytes,
    }


def text_or_base64(data: bytes) -> dict:
    """Bytes for a JSON answer: ``text`` when they are UTF-8, else ``base64``."""
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def clean_path(path: str) -> str:
    """A caller's path as an absolute tenant path (``a/b`` is ``/a/b``). Everything
    else (``..``, NUL, over-long names, ``/.tarbox``) is the filesystem's to refuse."""
    if "\0" in path:
        raise fs_error(22, path, "path contains NUL")
    return "/" + path.lstrip("/")


class Workspace:
    """One caller's access to its tenant (made per request from the verified token)."""

    def __init__(self, tb: Tarbox, token: TokenInfo, limits: Limits) -> None:
        self.tb, self.token, self.limits = tb, token, limits
        if token.admin:
            raise ApiError(403, "ADMIN_TOKEN", "an admin token manages tenants; use a tenant's token for its files")
        self.tenant_id = token.tenant_id
        self.run_id = uuid.uuid4()  # this request, in the audit log
        self._fs: Filesystem | None = None

    @property
    def read_only(self) -> bool:
        return self.token.read_only

    def fs(self) -> Filesystem:
        if self._fs is None:
            tenant = self.token.tenant or self.tenant_id  # verified tokens carry the tenant: no lookup
            self._fs = self.tb.filesystem(tenant, read_only=self.read_only, hide_control=True)
            self._fs.run_id = self.run_id
        return self._fs

    def need_write(self) -> None:
        if self.read_only:
            raise ApiError(403, "READ_ONLY_TOKEN", "this token is read-only", 30)

    # ------------------------------------------------------------------ files

    def read(self, path: str, offset: int = 0, limit: int | None = None) -> bytes:
        with self.fs().open(clean_path(path), "rb") as f:
            f.seek(offset)
            return f.read(-1 if limit is None else limit)

    @_committed
    def write(self, path: str, data: bytes, *, append: bool = False, parents: bool = False) -> int:
        self.need_write()
        path = clean_path(path)
        fs = self.fs()
        if parents:
            fs.makedirs(posixpath.dirname(path.rstrip("/")) or "/", exist_ok=True)
        return fs.append_file(path, data) if append else fs.write_file(path, data)

    def isolated(self) -> Filesystem:
        """A view of the tenant with a store of its own, for one atomic change (its
        audit records carry this request's run id)."""
        fs = self.tb.filesystem(self.token.tenant or self.tenant_id, hide_control=True, isolated=True)
        fs.run_id = self.run_id
        return fs

    def upload(self, path: str, src, *, parents: bool = False) -> dict:
        """Write the whole of ``src`` (a received body) to ``path`` in one commit:
        readers see the old file or the new one, whole, never a part."""
        self.need_write()
        path = clean_path(path)
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        fs = self.isolated()
        with fs.atomic():
            if parents:
                fs.makedirs(parent, exist_ok=True)
            if fs.is_dir(path):
                raise fs_error(21, path)
            with fs.open(path, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        return stat_dict(path, fs.stat(path))

    def import_archive(self, path: str, src) -> dict:
        """Extract the tar archive ``src`` (a received body; plain, gz or zst) under
        ``path`` in one commit: all of it, or nothing (an unsafe member, a cut-off
        archive, the quota)."""
        from tarbox.integrations.tar import import_tar

        self.need_write()
        fs = self.isolated()
        with fs.atomic():
            stats = import_tar(fs, src, clean_path(path))
        return {"files": stats.files, "dirs": stats.dirs, "symlinks": stats.symlinks, "bytes": stats.bytes}

    def edit(self, path: str, old: str, new: str) -> int:
        """Replace the one occurrence of ``old`` by ``new`` (an error unless it occurs
        exactly once); returns the new size."""
        self.need_write()
        path = clean_path(path)
        fs = self.isolated()
        with fs.atomic():
            text = fs.read_file(path).decode("utf-8")
            count = text.count(old) if old else 0
            if count != 1:
                raise ApiError(
                    409,
                    "NO_UNIQUE_MATCH",
                    f"old_string occurs {count} times in {path}; it must occur exactly once",
                )
            return fs.write_file(path, text.replace(old, new, 1).encode("utf-8"))

    def stat(self, path: str, follow: bool = True) -> dict:
        path = clean_path(path)
        return stat_dict(path, self.fs().stat(path, follow_symlinks=follow))

    def list_dir(self, path: str, offset: int = 0, limit: int = 1000) -> dict:
        path = clean_path(path)
        fs = self.fs()
        entries = fs.scandir(path)
        page = entries[offset : offset + limit]
        out = []
        for e in page:
            s = fs.lstat(fspaths.join(path, e.name))
            item = {"name": e.name, "type": s.type.name.lower(), "size": s.size, "mtime_ns": s.mtime_ns}
            if s.is_symlink:
                item["target"] = fs.readlink(fspaths.join(path, e.name))
            out.append(item)
        nxt = offset + len(page)
        return {"path": path, "entries": out, "total": len(entries), "next": nxt if nxt < len(entries) else None}

    def tree(self, path: str, per_dir: int = 100) -> list[dict]:
        """The directories from the root down to ``path``: each level's subdirectories
        (the first ``per_dir``), the one on the way to ``path`` opened in place. Rows of
        ``depth``, ``name``, ``path``, ``open`` (on the way), or ``more`` (left out)."""
        fs = self.fs()
        parts = [p for p in clean_path(path).split("/") if p]
        rows: list[dict] = []

        def level(at: str, depth: int) -> None:
            dirs = [e.name for e in fs.scandir(at) if e.type is FileType.DIRECTORY]
            nxt = parts[depth] if depth < len(parts) else None
            shown = dirs[:per_dir]
            if nxt in dirs and nxt not in shown:
                shown.append(nxt)
            for name in shown:
                full = fspaths.join(at, name)
                rows.append({"depth": depth, "name": name, "path": full, "open": name == nxt})
                if name == nxt:
                    level(full, depth + 1)
            if len(dirs) > len(shown):
                rows.append({"depth": depth, "more": len(dirs) - len(shown)})

        level("/", 0)
        return rows

    @_committed
    def mkdir(self, path: str, parents: bool = False) -> None:
        self.need_write()
        self.fs().mkdir(clean_path(path), parents=parents, exist_ok=parents)

    @_committed
    def remove(self, path: str, recursive: bool = False) -> None:
        """Remove a file, symlink or empty directory; ``recursive``: a whole tree, in one
        commit (all of it or, on any failure, nothing). The root cannot go: removing it
        recursively empties it."""
        self.need_write()
        path = clean_path(path)
        if recursive:
            tree = self.isolated()
            with tree.atomic():
                if tree.lstat(path).ino == tree.lstat("/").ino:
                    for name in tree.listdir("/"):
                        tree.remove_tree(fspaths.join("/", name))
                else:
                    tree.remove_tree(path)
            return
        fs = self.fs()
        if fs.lstat(path).is_dir:
            fs.rmdir(path)
        else:
            fs.remove(path)

    @_committed
    def rename(self, src: str, dst: str) -> None:
        self.need_write()
        self.fs().rename(clean_path(src), clean_path(dst))

    @_committed
    def symlink(self, target: str, path: str) -> None:
        self.need_write()
        self.fs().symlink(target, clean_path(path))

    def glob(self, pattern: str, path: str = "/", limit: int = 1000) -> list[str]:
        """Paths under ``path`` matching ``pattern`` (``*`` stays within a name, ``**``
        crosses directories; a pattern without ``/`` matches names at any depth)."""
        regex = _glob_regex(pattern if "/" in pattern else "**/" + pattern)
        root = clean_path(path)
        out = []
        for dirpath, dirs, files in self.fs().walk(root):
            for name in sorted(dirs + files):
                full = fspaths.join(dirpath, name)
                rel = full[len(root) :].lstrip("/") if root != "/" else full.lstrip("/")
                if regex.fullmatch(rel):
                    out.append(full)
                    if len(out) >= limit:
                        return out
        return out

    def grep(self, pattern: str, path: str = "/", max_results: int = 100, glob: str | None = None) -> list[dict]:
        """Lines matching the regular expression ``pattern`` in the text files under
        ``path`` (files over 8 MiB or not UTF-8 are skipped). The pattern is RE2's
        syntax (Python's without backreferences and lookaround), matched in time linear
        in the text whatever the pattern: no pattern can make a search take exponential
        time (``^(a+)+$`` included)."""
        regex = _linear_regex(pattern)
        fs = self.fs()
        root = clean_path(path)
        files = [root] if fs.is_file(root) else self.glob(glob or "*", root, limit=1 << 30)
        out: list[dict] = []
        for p in files:
            s = fs.lstat(p)
            if not s.is_file or s.size > (8 << 20):
                continue
            try:
                text = fs.read_file(p).decode("utf-8")
            except UnicodeDecodeError:
                continue
            for n, line in enumerate(text.splitlines(), 1):
                if regex.search(line):
                    out.append({"path": p, "line": n, "text": line})
                    if len(out) >= max_results:
                        return out
        return out

    # ---------------------------------------------------------------- history

    @_committed
    def checkpoint(self, message: str = "") -> dict:
        self.need_write()
        return self.fs().checkpoint(message).to_dict()

    def layers(self) -> list[dict]:
        return [layer.to_dict() for layer in self.fs().layers(counts=True)]

    @_committed
    def switch(self, layer: int | None = None, branch: str | None = None) -> dict:
        """Roll back or forward: view ``layer`` (later writes branch from it) or follow
        ``branch``. Nothing is destroyed."""
        self.need_write()
        if (layer is None) == (branch is None):
            raise ApiError(400, "INVALID", "give exactly one of layer or branch")
        fs = self.fs()
        target = layer if layer is not None else branch
        fs.switch(target)
        # writing on from a frozen layer opens a new layer on top of it: current_layer says which
        return {"switched_to": target, "current_layer": fs.current_layer().id, "branch": fs.current_branch()}

    def branches(self) -> dict:
        fs = self.fs()
        return {"current": fs.current_branch(), "branches": fs.branches()}

    @_committed
    def branch(self, name: str, from_layer: int | None = None) -> dict:
        self.need_write()
        try:
            return self.fs().branch(name, from_layer).to_dict()
        except OSError as exc:
            if exc.errno == 22:  # from a layer still open: its state is the conflict, not the request
                raise ApiError(409, "EINVAL", exc.strerror or str(exc), 22) from None
            raise

    @_committed
    def delete_branch(self, name: str) -> None:
        self.need_write()
        self.fs().delete_branch(name)

    def diff(self, a: int, b: int | None = None, patch: bool = False, patch_limit: int | None = None) -> list[dict]:
        """Paths changed from layer ``a`` to ``b`` (default: now)."""
        return [
            {
                "path": c.path,
                "kind": c.kind.value,
                "type": c.type.name.lower(),
                "size_before": c.size_before,
                "size_after": c.size_after,
                **({"patch": c.patch} if patch and c.patch is not None else {}),
                **({"patch_omitted": True} if c.patch_omitted else {}),
            }
            for c in self.fs().diff(a, b, patch=patch, patch_limit=patch_limit)
        ]

    def audit(self, **filters) -> list[dict]:
        return [r.to_dict() for r in self.fs().audit(**filters)]

    # ------------------------------------------------------------------- runs

    def runs(self, limit: int = 50, before: datetime | None = None) -> list[dict]:
        """The tenant's recorded runs, newest first, without their output."""
        return [run_dict(r) for r in run_log.recent(self.tb, self.tenant_id, limit=limit, before=before)]

    def run_record(self, run_id: str) -> dict:
        """One recorded run with the start of its output and the files it changed."""
        found = run_log.get(self.tb, self.tenant_id, run_id)
        if found is None:
            raise ApiError(404, "NO_RUN", f"no run {run_id}")
        return {
            **run_dict(found),
            "stdout": found.stdout.decode("utf-8", "replace"),
            "stderr": found.stderr.decode("utf-8", "replace"),
            "changed": changes_of(self.fs().audit(run_id=found.run_id)),
        }

    def images(self, changed: list[dict], *, most: int = 4, max_bytes: int = 4 << 20) -> list[dict]:
        """The images among files a run wrote (``changed``), as an MCP answer carries
        them: the first ``most`` still there, each at most ``max_bytes``, its type told
        by its first bytes (not its name). Rows of ``path``, ``mime``, ``data`` (base64)."""
        fs, out, seen = self.fs(), [], set()
        for change in changed:
            path = change.get("path2") or change["path"]
            if path in seen or not path.lower().endswith(_IMAGE_SUFFIXES):
                continue
            seen.add(path)
            try:
                st = fs.lstat(path)
                if not st.is_file or st.size > max_bytes:
                    continue
                data = fs.read_file(path)
            except OSError:
                continue  # removed or renamed again since
            mime = _image_type(data)
            if mime is not None:
                out.append({"path": path, "mime": mime, "data": base64.b64encode(data).decode()})
                if len(out) >= most:
                    break
        return out

    def python_cwd(self, cwd: str) -> str:
        """A working directory of a Python or native run: ``/workspace`` or beneath it, normalised."""
        cwd = posixpath.normpath(clean_path(cwd))
        if cwd != "/workspace" and not cwd.startswith("/workspace/"):
            raise ApiError(400, "INVALID_PATH", f"cwd must be /workspace or beneath it, not {cwd}")
        return cwd

    def check_args(self, args: list[str] | None, env: dict[str, str] | None) -> None:
        """Refuse what a guest could not receive whole: NUL in arguments or environment,
        names that are empty or hold '='."""
        bad = [name for name in env or {} if not name or "=" in name or "\0" in name]
        if bad:
            raise ApiError(422, "INVALID_ENV", f"environment names may not be empty or hold '=' or NUL: {bad[0]!r}")
        # a guest gets its arguments and environment as NUL-terminated strings: one holding
        # a NUL would reach it cut short, so it is refused before anything runs
        if any("\0" in a for a in args or []) or any("\0" in v for v in (env or {}).values()):
            raise ApiError(422, "INVALID_ARGS", "arguments and environment values may not hold NUL")

    def run(
        self,
        *,
        wasm: bytes | None = None,
        wasm_path: str | None = None,
        python: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes = b"",
        cwd: str | None = None,
        timeout: float | None = None,
        memory_limit: int | None = None,
        checkpoint_before: bool = False,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> dict:
        """Run a module or component (bytes, or a path in the tenant) or Python source in
        the WASI sandbox on ``/workspace``, within the server's limits. ``cwd``: Python's
        working directory, ``/workspace`` or beneath it."""
        if sum(x is not None for x in (wasm, wasm_path, python)) != 1:
            raise ApiError(400, "INVALID", "give exactly one of wasm, wasm_path or python")
        if cwd is not None:
            if python is None:
                raise ApiError(400, "INVALID", "cwd is for Python runs (a WASI module has no working directory)")
            cwd = self.python_cwd(cwd)
        self.check_args(args, env)
        if self.read_only and checkpoint_before:
            raise ApiError(403, "READ_ONLY_TOKEN", "a read-only token cannot checkpoint", 30)
        limits = {
            "timeout": min(timeout or self.limits.run_timeout, self.limits.run_timeout),
            "memory_limit": min(memory_limit or self.limits.run_memory, self.limits.run_memory),
            "checkpoint_before": checkpoint_before,
            "read_only": self.read_only,
        }
        if wasm_path is not None:
            wasm = self.fs().read_file(clean_path(wasm_path))
        if python is not None:
            from tarbox.wasi.python import PythonRuntime

            result = PythonRuntime().run(
                self.tb,
                self.tenant_id,
                python,
                args=args,
                env=env,
                stdin=stdin,
                cwd=cwd,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                **limits,
            )
        else:
            from tarbox.wasi import WasiHost

            host = WasiHost(self.tb, self.tenant_id, "/workspace", **limits)
            argv = ["main.wasm", *(args or [])]
            result = host.run(wasm, argv, env, stdin, on_stdout=on_stdout, on_stderr=on_stderr)
        return result_dict(result)

    def exec(
        self,
        command: list[str] | str,
        *,
        stdin: bytes = b"",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        memory_limit: int | None = None,
    ) -> dict:
        """Run a native command sandboxed over ``/workspace`` (docs/exec.md), within the
        server's limits; its changes are committed in one write-back when it ends."""
        from tarbox.sandbox import Limits as ExecLimits
        from tarbox.sandbox import NativeHost, unavailable_reason

        if self.read_only:
            raise ApiError(403, "READ_ONLY_TOKEN", "a read-only token cannot run commands (they write back)", 30)
        why = unavailable_reason()
        if why:
            raise ApiError(501, "NOT_AVAILABLE", f"native commands cannot run on this server: {why}")
        argv = [command] if isinstance(command, str) else list(command)
        if not argv:
            raise ApiError(422, "INVALID_ARGS", "an empty command")
        self.check_args(argv, env)
        cwd = "/workspace" if cwd is None else self.python_cwd(cwd)
        limits = ExecLimits(
            wall_seconds=min(timeout or self.limits.run_timeout, self.limits.run_timeout),
            memory_bytes=min(memory_limit or self.limits.exec_memory, self.limits.exec_memory),
            pids=self.limits.exec_pids,
        )
        # the operator's (the server's list, the token's): nothing in the request widens it
        allowed = list(self.limits.exec_allow_net) + list(self.token.allow_net)
        host = NativeHost(self.tb, self.tenant_id, "/workspace", limits=limits, network=allowed)
        r = host.run(command, stdin=stdin, env=env, cwd=cwd)
        return {
            "run_id": str(r.run_id),
            "status": r.status.value,
            "exit_code": r.exit_code,
            "stdout": r.stdout.decode("utf-8", "replace"),
            "stderr": r.stderr.decode("utf-8", "replace"),
            "duration": r.duration,
            "error": r.error,
            "checkpoint": r.checkpoint,
            "changed": r.changed,
            "conflicts": r.conflicts,
        }


def result_dict(result) -> dict:
    """A run's result (``tarbox.wasi.RunResult``) as both front ends return it."""
    return {
        "run_id": str(result.run_id) if result.run_id else None,
        "status": result.status.value,
        "exit_code": result.exit_code,
        "stdout": result.stdout.decode("utf-8", "replace"),
        "stderr": result.stderr.decode("utf-8", "replace"),
        "duration": result.duration,
        "trap": result.trap,
        "checkpoint": result.checkpoint,
        "changed": changes_of(result.audit),
    }


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


def _image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _linear_regex(pattern: str):
    """``pattern`` compiled by RE2 (google-re2), whose matching is linear in the text."""
    import re2

    options = re2.Options()
    options.log_errors = False  # a bad pattern is the caller's error, not a log line
    options.max_mem = 32 << 20  # the compiled program's memory
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ApiError(
            400, "BAD_PATTERN", f"invalid regular expression (RE2 syntax: no backreferences or lookaround): {reason}"
        ) from None


def _glob_regex(pattern: str) -> re.Pattern:
    """``**/`` any directories (none included), ``**`` anything, ``*`` within a name."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))
