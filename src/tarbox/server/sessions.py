"""The server's live Python sessions (``tarbox.wasi.python_session``), each owned by the
token that opened it: another token, even one of the same tenant, neither sees nor
reaches it. Sessions are named (the caller's name, or one made up); bounded per token
and in all (each holds an interpreter's memory); each ends at its idle and lifetime
limits, and all end when the server stops. An ended session answers 410 with the
reason for ``KEEP_ENDED`` seconds, then 404 like one that never was.

The REST routes and the MCP ``run_python`` tool share one ``Sessions``.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

from tarbox.server.errors import ApiError
from tarbox.server.workspace import Workspace, result_dict
from tarbox.wasi.python_session import PythonSession, SessionBusy, SessionEnded, SessionFailed

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEEP_ENDED = 600.0  # seconds an ended session's reason stays to be told


class Sessions:
    """Every session of this server, by (token id, name)."""

    def __init__(self, limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._live: dict[tuple[uuid.UUID, str], PythonSession] = {}
        self._ended: dict[tuple[uuid.UUID, str], tuple[str, float]] = {}  # -> (reason, when)
        self._opening: dict[uuid.UUID, int] = {}  # sessions being opened, per token

    # ---------------------------------------------------------------- opening

    def open(
        self,
        ws: Workspace,
        name: str | None = None,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        idle_timeout: float | None = None,
        lifetime: float | None = None,
        timeout: float | None = None,
        memory_limit: int | None = None,
    ) -> dict:
        """Open a session for ``ws``'s token (blocking: the interpreter starts)."""
        lim = self.limits
        if name is not None and not NAME.fullmatch(name):
            raise ApiError(400, "INVALID", "a session name is 1-64 of A-Z, a-z, 0-9, '_', '.', '-'")
        cwd = ws.python_cwd(cwd) if cwd is not None else "/workspace"
        ws.check_args(None, env)
        name = name or uuid.uuid4().hex[:16]
        key = (ws.token.id, name)
        with self._lock:
            self._prune()
            if key in self._live:
                raise ApiError(409, "SESSION_EXISTS", f"this token already has a session {name!r}")
            mine = sum(1 for k in self._live if k[0] == ws.token.id) + self._opening.get(ws.token.id, 0)
            if mine >= lim.sessions_per_token:
                raise ApiError(429, "TOO_MANY_SESSIONS", f"this token has {mine} sessions open, its most")
            if len(self._live) + sum(self._opening.values()) >= lim.max_sessions:
                raise ApiError(429, "TOO_MANY_SESSIONS", f"the server holds {lim.max_sessions} sessions, its most")
            self._opening[ws.token.id] = self._opening.get(ws.token.id, 0) + 1
            self._ended.pop(key, None)
        try:
            session = PythonSession(
                ws.tb,
                ws.tenant_id,
                cwd=cwd,
                env=env,
                idle_timeout=_capped(idle_timeout, lim.session_idle),
                lifetime=_capped(lifetime, lim.session_lifetime),
                timeout=_capped(timeout, lim.run_timeout),
                memory_limit=int(_capped(memory_limit, lim.run_memory)),
                read_only=ws.read_only,
                name=name,
            )
        except SessionFailed as exc:
            raise ApiError(422, "SESSION_FAILED", str(exc)) from None
        finally:
            with self._lock:
                self._opening[ws.token.id] -= 1
        with self._lock:
            self._live[key] = session
        return describe(session)

    def get_or_open(self, ws: Workspace, name: str, **options) -> PythonSession:
        """The token's session ``name``, opened with ``options`` when it has none (MCP)."""
        try:
            return self.get(ws, name)
        except ApiError as exc:
            if exc.status not in (404, 410):
                raise
        try:
            self.open(ws, name, **options)
        except ApiError as exc:
            if exc.code != "SESSION_EXISTS":  # a concurrent call opened it first
                raise
        return self.get(ws, name)

    # ---------------------------------------------------------------- using

    def get(self, ws: Workspace, name: str) -> PythonSession:
        key = (ws.token.id, name)
        with self._lock:
            self._prune()
            session = self._live.get(key)
            if session is None:
                ended = self._ended.get(key)
                if ended is not None:
                    raise ApiError(410, "SESSION_ENDED", f"session {name!r} has ended ({ended[0]})")
                raise ApiError(404, "NO_SESSION", f"this token has no session {name!r}")
            return session

    def list(self, ws: Workspace) -> list[dict]:
        with self._lock:
            self._prune()
            return [describe(s) for (token, _), s in self._live.items() if token == ws.token.id]

    def turn(self, ws: Workspace, name: str, code: str, *, stdin: bytes = b"", timeout: float | None = None) -> dict:
        """Run ``code`` in the session (blocking), within the server's run timeout."""
        session = self.get(ws, name)
        try:
            result = session.run(code, stdin=stdin, timeout=_capped(timeout, self.limits.run_timeout))
        except SessionBusy:
            raise ApiError(409, "SESSION_BUSY", f"session {name!r} is running a turn; one at a time") from None
        except SessionEnded as exc:
            raise ApiError(410, "SESSION_ENDED", str(exc)) from None
        return {**result_dict(result), "session": name, "session_ended": session.ended}

    def close(self, ws: Workspace, name: str) -> None:
        """End the session: Python shuts down, its writes are committed."""
        session = self.get(ws, name)
        session.close()
        with self._lock:
            self._prune()

    def close_all(self) -> None:
        with self._lock:
            live = list(self._live.values())
        for session in live:
            session.close()
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        """Under the lock: move ended sessions to the told-why list; forget old reasons."""
        now = time.monotonic()
        for key, session in list(self._live.items()):
            if session.ended is not None:
                del self._live[key]
                self._ended[key] = (session.ended, now)
        for key, (_, when) in list(self._ended.items()):
            if now - when > KEEP_ENDED:
                del self._ended[key]


def describe(session: PythonSession) -> dict:
    return {
        "session": session.name,
        "turns": session.turns,
        "cwd": session.cwd,
        "open_for": round(time.monotonic() - session.opened, 3),
        "idle_for": round(session.idle_for, 3),
        "idle_timeout": session.idle_timeout,
        "lifetime": session.lifetime,
        "timeout": session.timeout,
        "memory_limit": session.memory_limit,
        "ended": session.ended,
    }


def _capped(asked: float | int | None, most: float | int) -> float | int:
    """What a request asked for, never more than the server's bound (its default)."""
    return most if asked is None else min(asked, most)
