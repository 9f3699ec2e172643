"""Console sessions: a browser logs in once with an API token and then carries only an
opaque session cookie.

The session id is 32 random bytes, minted at each login (an id the browser brought
along is never adopted: no session fixation), kept server-side only as its SHA-256,
and sent as an HttpOnly, SameSite=Strict cookie scoped to ``/ui`` (Secure over
TLS). The token stays in this process's memory, never in a cookie or a URL, and is
checked again on every request, so revoking it ends the session at once. Each
session has its own CSRF secret, which every form that changes something echoes.
Sessions end at logout, after ``IDLE`` without use, or ``LIFETIME`` after login;
they live in this process and do not survive a restart (log in again). One token
keeps at most ``PER_TOKEN`` sessions (its oldest go first), so no token, and so no
tenant, can push another's sessions out; what they hold in all is bounded by the
number of tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "tarbox_session"
IDLE = 12 * 3600.0  # seconds without a request
LIFETIME = 7 * 24 * 3600.0  # seconds after login, whatever the use
PER_TOKEN = 32  # sessions one token keeps; its least recently used go first beyond this


@dataclass
class Session:
    token_text: str
    token_id: object = None  # the token's id: whose share of sessions it counts in
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._by_token: dict[object, OrderedDict[str, None]] = {}  # each token's, least recently used first
        self._lock = threading.Lock()

    def create(self, token_text: str, token_id: object = None) -> tuple[str, Session]:
        """A new session for a verified token: (the id for the cookie, the session)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(token_text, token_id)
        with self._lock:
            key = _key(session_id)
            self._sessions[key] = session
            mine = self._by_token.setdefault(token_id, OrderedDict())
            mine[key] = None
            while len(mine) > PER_TOKEN:
                oldest, _ = mine.popitem(last=False)
                self._sessions.pop(oldest, None)
        return session_id, session

    def _forget(self, key: str) -> None:
        """Drop a session (the lock held)."""
        session = self._sessions.pop(key, None)
        if session is not None:
            mine = self._by_token.get(session.token_id)
            if mine is not None:
                mine.pop(key, None)
                if not mine:
                    del self._by_token[session.token_id]

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        key = _key(session_id)
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.used > IDLE or now - session.created > LIFETIME:
                self._forget(key)
                return None
            session.used = now
            self._by_token[session.token_id].move_to_end(key)
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._forget(_key(session_id))

    def __len__(self) -> int:
        return len(self._sessions)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())
