"""Who is asking: the ``Authorization: Bearer`` token of every request, checked
before any route runs.

A pure ASGI middleware. Paths under ``/v1`` and ``/mcp`` need a live token; the
verified token (``tarbox.tokens.TokenInfo``) is put in the request scope under
``tarbox.token``, and nothing else a client sends names a tenant. Missing, bad,
expired or revoked tokens get 401 with the same JSON error shape as every other
failure. ``/healthz`` and the API description are public.
"""

from __future__ import annotations

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tarbox.client import Tarbox
from tarbox.server import errors
from tarbox.tokens import TokenError, TokenInfo, verify_token

SCOPE_KEY = "tarbox.token"
_PROTECTED = ("/v1", "/mcp")


def token_of(scope: Scope) -> TokenInfo:
    """The verified token of a request that passed :class:`TokenAuth`."""
    return scope[SCOPE_KEY]


class TokenAuth:
    def __init__(self, app: ASGIApp, tb: Tarbox) -> None:
        self.app, self.tb = app, tb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not any(path == p or path.startswith(p + "/") for p in _PROTECTED):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, text = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenError("missing bearer token (Authorization: Bearer tbx_...)")
            scope[SCOPE_KEY] = await anyio.to_thread.run_sync(verify_token, self.tb, text.strip())
        except Exception as exc:  # noqa: BLE001 - every failure is an answer, never a traceback
            await errors.response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)
