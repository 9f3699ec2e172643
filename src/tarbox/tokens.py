"""API tokens: what a request to ``tarbox serve`` carries, and the one thing that
decides which tenant it may touch.

A token reads ``tbx_<tenant id>_<token id>_<secret>``. The database keeps only the
SHA-256 of the secret (the secret is 32 random bytes, so a fast hash is enough: no
dictionary to guess from), compared in constant time. The tenant id in the text
only routes the lookup: a token whose text names another tenant finds no row.
Admin tokens (``--admin``) belong to no tenant (the nil UUID) and may only manage
tenants. Tokens are created, listed, checked and revoked through the owner role.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tarbox.client import Tarbox, Tenant
from tarbox.errors import TarboxError

NO_TENANT = uuid.UUID(int=0)
_FORMAT = re.compile(r"tbx_([0-9a-f]{32})_([0-9a-f]{32})_([A-Za-z0-9_-]{43})")


class TokenError(TarboxError):
    """A token that is missing, malformed, unknown, expired or revoked (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as stored (never its secret)."""

    id: uuid.UUID
    tenant_id: uuid.UUID | None  # None: an admin token
    name: str
    read_only: bool
    admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    allow_net: tuple[str, ...] = ()  # HOST:PORT its native runs may reach (tarbox.sandbox.network)
    tenant: Tenant | None = None  # filled by verify_token (saves the server a lookup)

    def to_dict(self) -> dict:
        return {
            "id": str(self.id),
            "tenant_id": None if self.tenant_id is None else str(self.tenant_id),
            "name": self.name,
            "read_only": self.read_only,
            "admin": self.admin,
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "allow_net": list(self.allow_net),
        }


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


_COLUMNS = "token_id, tenant_id, name, read_only, admin, created_at, expires_at, revoked_at, allow_net"


def _info(row) -> TokenInfo:
    token_id, tenant_id, name, read_only, admin, created, expires, revoked, allow_net = row
    return TokenInfo(
        token_id, None if admin else tenant_id, name, read_only, admin, created, expires, revoked, tuple(allow_net)
    )


def create_token(
    tb: Tarbox,
    tenant: Tenant | str | uuid.UUID | None,
    *,
    name: str = "",
    read_only: bool = False,
    admin: bool = False,
    expires_days: float | None = None,
    allow_net: list[str] | None = None,
) -> tuple[str, TokenInfo]:
    """A new token for ``tenant`` (``admin=True``: for no tenant). Returns the token text,
    shown once and never stored, and its record. ``allow_net``: HOST:PORT destinations
    its native runs may reach (docs/exec.md)."""
    from tarbox.sandbox.network import Destination

    if admin == (tenant is not None):
        raise ValueError("a token is either for one tenant or, with admin=True, for none")
    for destination in allow_net or []:
        Destination.parse(destination)  # ValueError for a malformed one
    if expires_days is not None and expires_days <= 0:
        raise ValueError("expires_days must be positive")
    tid = NO_TENANT if tenant is None else tb.get_tenant(tenant).id
    token_id = uuid.uuid4()
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    expires = None if expires_days is None else datetime.now(UTC) + timedelta(days=expires_days)
    with tb.db.admin() as conn:
        row = conn.execute(
            f"""INSERT INTO api_tokens (tenant_id, token_id, secret_hash, name, read_only, admin, expires_at, allow_net)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
            (tid, token_id, _hash(secret), name, read_only, admin, expires, list(allow_net or [])),
        ).fetchone()
    return f"tbx_{tid.hex}_{token_id.hex}_{secret}", _info(row)


def verify_token(tb: Tarbox, text: str | None) -> TokenInfo:
    """The live token ``text`` is, or TokenError (the same message whatever is wrong
    with it, so an answer tells a guesser nothing)."""
    m = _FORMAT.fullmatch(text or "")
    if m is None:
        raise TokenError("missing or malformed token")
    tenant_id, token_id, secret = uuid.UUID(m.group(1)), uuid.UUID(m.group(2)), m.group(3)
    row = tb.db.lookup_one(
        f"""SELECT k.secret_hash, k.expires_at IS NOT NULL AND k.expires_at <= now(), t.name, t.created_at,
                   {", ".join("k." + c.strip() for c in _COLUMNS.split(","))}
            FROM api_tokens k LEFT JOIN tenants t ON t.tenant_id = k.tenant_id
            WHERE k.tenant_id = %s AND k.token_id = %s""",
        (tenant_id, token_id),
    )
    stored = row[0] if row is not None else b"\0" * 32
    if not hmac.compare_digest(stored, _hash(secret)) or row is None:
        raise TokenError("invalid token")
    info = _info(row[4:])
    if row[1] or info.revoked_at is not None or (not info.admin and row[2] is None):
        raise TokenError("expired or revoked token")
    if info.admin:
        return info
    return dataclasses.replace(info, tenant=Tenant(tenant_id, row[2], row[3]))


def list_tokens(tb: Tarbox, tenant: Tenant | str | uuid.UUID | None = None) -> list[TokenInfo]:
    """Every token (of ``tenant``, if given), oldest first."""
    where, args = ("", ()) if tenant is None else ("WHERE tenant_id = %s", (tb.get_tenant(tenant).id,))
    with tb.db.admin() as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens {where} ORDER BY created_at, token_id", args).fetchall()
    return [_info(r) for r in rows]


def revoke_token(tb: Tarbox, token_id: uuid.UUID | str) -> TokenInfo:
    """Revoke a token by its id (from ``list_tokens``); revoking twice keeps the first time."""
    tid = uuid.UUID(str(token_id))
    # two statements, not coalesce(revoked_at, now()): Citus refuses a non-immutable
    # function inside COALESCE in an UPDATE of a distributed table
    with tb.db.admin() as conn:
        row = conn.execute(
            f"UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL RETURNING {_COLUMNS}",
            (tid,),
        ).fetchone()
        if row is None:  # revoked before, or no such token
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE token_id = %s", (tid,)).fetchone()
    if row is None:
        raise TokenError(f"no token with id {token_id}")
    return _info(row)
