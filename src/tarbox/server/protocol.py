"""The HTTP protocol of ``tarbox serve``: uvicorn's httptools protocol with a deadline
for each request's headers.

uvicorn closes a connection idle *between* requests (``timeout_keep_alive``), but
not one that opened and never finished its headers: 2,000 such connections stayed
open for as long as their clients liked. Here a connection must complete a
request's headers within ``header_timeout`` seconds of connecting (or of the
request's first byte); otherwise it is closed.

It subclasses uvicorn's ``HttpToolsProtocol`` and hooks three of its methods
(``connection_made``, ``on_message_begin``, ``on_headers_complete``), which are
uvicorn internals: :func:`protocol_class` checks they are there and falls back to
uvicorn's own protocol, with a warning, if a uvicorn release renamed them.
"""

from __future__ import annotations

import logging

log = logging.getLogger("tarbox.server")

_HOOKED = ("connection_made", "on_message_begin", "on_headers_complete", "connection_lost")


def protocol_class(header_timeout: float):
    """The protocol class to give uvicorn's ``Config(http=...)``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools missing: uvicorn's default (h11) without the deadline
        log.warning("tarbox serve: httptools is not installed; no deadline for request headers")
        return "auto"
    if not all(callable(getattr(HttpToolsProtocol, name, None)) for name in _HOOKED):
        log.warning("tarbox serve: this uvicorn's protocol has changed; no deadline for request headers")
        return "httptools"

    class HeaderDeadline(HttpToolsProtocol):
        _deadline = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline
