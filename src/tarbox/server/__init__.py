"""``tarbox serve``: Tarbox over the network, an HTTP API under ``/v1`` and an MCP
server at ``/mcp`` (docs/server.md).

Every request carries a token (``tarbox.tokens``); the token alone decides the
tenant, and everything a request does goes through the same Python API as
in-process callers. Modules, top down: ``app`` (the ASGI application and
``serve``), ``rest`` and ``mcp`` (the two front ends), ``auth`` (who is asking),
``workspace`` (what a caller may do, shared by both front ends), ``pipes`` (bounded
byte streams between the event loop and the threads that do the work), ``errors``
(failures as HTTP answers).
"""
