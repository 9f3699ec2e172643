"""Request bodies: how large they may be, how long they may pause, and where an
upload waits until it has arrived whole.

* :class:`BodyGuard` (ASGI middleware) refuses a body over the route's limit with
  413, by the declared length up front and by counting what arrives (a chunked body
  declares none), and one that pauses longer than ``body_timeout`` with 408. A JSON
  body is read whole here, before the route runs, so that these answers are never
  turned into a parse error; the route then reads it from memory.
* :func:`receive` takes an upload's body (a file, a tar archive) into a spool file
  on the event loop, holding no thread and touching no tenant: only a body that
  arrived whole is applied (docs/server.md, "Writes").
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tarbox.server import errors
from tarbox.server.errors import ApiError

SPOOL_IN_MEMORY = 1 << 20  # bodies up to this stay in memory; larger go to a temp file


class _Refused(Exception):
    def __init__(self, error: ApiError) -> None:
        self.error = error


class BodyGuard:
    """Size limits and pause timeouts on request bodies (see the module docstring).
    ``limit(path, method)`` is the route's limit in bytes; ``streamed(path, method)``
    says whether the route reads its body as a stream (else it is buffered here)."""

    def __init__(self, app: ASGIApp, limit: Callable[[str, str], int], streamed, timeout: float) -> None:
        self.app, self.limit, self.streamed, self.timeout = app, limit, streamed, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        limit = self.limit(path, method)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await errors.response(_too_big(limit))(scope, receive, send)
            return
        guarded = _Guarded(receive, limit, self.timeout)
        if self.streamed(path, method):
            await self.app(scope, guarded, send)
            return
        try:
            body = await guarded.read_all()
        except _Refused as refused:
            await errors.response(refused.error)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _too_big(limit: int) -> ApiError:
    return ApiError(413, "TOO_LARGE", f"request body over {limit} bytes")


class _Guarded:
    """``receive`` with the size limit and pause timeout applied while the body lasts.
    A streamed route sees a refusal as an :class:`ApiError` from ``request.stream()``."""

    def __init__(self, receive: Receive, limit: int, timeout: float) -> None:
        self._receive, self._limit, self._timeout = receive, limit, timeout
        self._seen, self._done = 0, False

    async def _next(self) -> Message:
        if self._done:  # the body is complete: what is left to wait for is the disconnect
            return await self._receive()
        # A timer that cancels this task, instead of a cancel scope per message: a large
        # body arrives in many small messages, and a scope costs more than the message.
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def pause_too_long() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self._timeout, pause_too_long)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not fired:
                raise
            task.uncancel()
            raise _Refused(
                ApiError(408, "BODY_TIMEOUT", f"the request body paused for more than {self._timeout:g} s")
            ) from None
        finally:
            timer.cancel()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit:
                raise _Refused(_too_big(self._limit))
            self._done = not message.get("more_body", False)
        return message

    async def __call__(self) -> Message:
        try:
            return await self._next()
        except _Refused as refused:
            raise refused.error from None

    async def read_all(self) -> bytes:
        parts = []
        while True:
            message = await self._next()
            if message["type"] != "http.request":
                raise _Refused(ApiError(400, "DISCONNECTED", "the client went away before its body ended"))
            parts.append(message.get("body", b""))
            if self._done:
                return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


async def receive(request: Request):
    """The request's whole body in a spool file (in memory up to ``SPOOL_IN_MEMORY``),
    positioned at its start; the caller closes it. A body cut off (the client went
    away), over the limit or paused too long raises before anything is applied."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="tarbox-upload-")  # noqa: SIM115
    try:
        async for chunk in request.stream():
            spool.write(chunk)  # the page cache: microseconds a chunk, not worth a thread
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise
