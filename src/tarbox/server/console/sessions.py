"""Console sessions: a browser logs in once with an API token and then carries only an
opaque session cookie.

The session id is 32 random bytes, minted at each login (an id the browser brought
along is never adopted: no session fixation), kept server-side only as its SHA-256,
and sent as an HttpOnly, SameSite=Strict cookie scoped to ``/ui`` (Secure over
TLS). The token stays in this process's memory, never in a cookie or a URL, and is
checked again on every request, so revoking it ends the session at once. Each
session has its own CSRF secret, which every form that changes something echoes.
Sessions end at logout, after ``IDLE`` without use, or ``LIFETIME`` after login;
they live in this process and do not survive a restart (log in again).
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
MAX_SESSIONS = 10_000  # the oldest unused sessions go first beyond this


@dataclass
class Session:
    token_text: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, token_text: str) -> tuple[str, Session]:
        """A new session for a verified token: (the id for the cookie, the session)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(token_text)
        with self._lock:
            self._sessions[_key(session_id)] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session_id, session

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
                del self._sessions[key]
                return None
            session.used = now
            self._sessions.move_to_end(key)
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())
