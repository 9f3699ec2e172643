"""The API's description at ``/openapi.json``, made to say what the server does.

FastAPI derives a document from the routes, but it cannot know what they do
outside their signatures: every failure is ``{"error": {...}}`` with its own
status (never FastAPI's 422), files and archives travel as raw bytes, a run may
answer as Server-Sent Events, and every ``/v1`` call needs a bearer token. This
module adds those facts to the generated document once, when it is first asked
for. ``tests/test_openapi.py`` runs schemathesis against a live server with this
document and every check on, so that the document and the server stay in step.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "errno", "message"],
            "properties": {
                "code": {"type": "string", "description": "ENOENT, EEXIST, ... or INVALID, TOO_LARGE, ..."},
                "errno": {"type": ["integer", "null"], "description": "the POSIX errno, for filesystem errors"},
                "message": {"type": "string"},
            },
        }
    },
}

# what any /v1 call may answer besides its success
_ERRORS = {
    "400": "Bad request: a malformed parameter, path or body, or one the operation cannot apply",
    "401": "Missing, malformed, unknown, expired or revoked token",
    "403": "Not allowed with this token (read-only, admin, or a tenant token on /v1/tenants)",
    "404": "No such file, directory, layer, branch, run, session or tenant",
    "409": "Conflicts with what exists (EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, ...)",
    "413": "Body over the server's limit, or a file over the tenant's size limit (EFBIG)",
    "422": "Well-formed, but its content cannot be applied (not a tar archive, a bad environment name)",
    "429": "This tenant or token has its share of requests, streams or runs in progress; retry later",
    "503": "The database is unreachable (nothing was changed)",
    "507": "The tenant's quota is exhausted (EDQUOT; nothing was changed)",
}
_BODY_ERRORS = {"408": "The request body paused for longer than the server's body timeout"}
_SESSION_ERRORS = {"410": "The session has ended (the message says why); after ten minutes, 404"}

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ARCHIVE = {"application/x-tar": _BINARY, "application/gzip": _BINARY, "application/zstd": _BINARY}

# (path, method) -> success responses whose content is not JSON
_CONTENT: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("/v1/files/{path}", "get"): {
        "200": {"description": "The file's bytes", "content": {"application/octet-stream": _BINARY}},
        "206": {"description": "The range asked for", "content": {"application/octet-stream": _BINARY}},
        "416": {"description": "The range is outside the file", "content": {"application/json": None}},
    },
    ("/v1/files/{path}", "head"): {
        "200": {"description": "The file's stat as headers, no body", "content": {"application/octet-stream": {}}},
    },
    ("/v1/export/{path}", "get"): {"200": {"description": "The tree as a tar stream", "content": _ARCHIVE}},
    ("/v1/export", "get"): {"200": {"description": "The tenant as a tar stream", "content": _ARCHIVE}},
}
# (path, method) -> request bodies that are raw bytes
_RAW_BODIES = {
    ("/v1/files/{path}", "put"): {"application/octet-stream": _BINARY},
    ("/v1/import/{path}", "post"): _ARCHIVE,
    ("/v1/import", "post"): _ARCHIVE,
}
_EVENTS = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"enum": ["stdout", "stderr", "result", "error"]},
                "data": {"type": "string", "description": "output text; a result or error as JSON"},
            },
        }
    }
}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document."""

    def document() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            complete(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def complete(spec: dict) -> None:
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, never answered
        components["schemas"].pop(name, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "tbx_... (tarbox token create)"}
    }
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            responses.pop("422", None)
            op["security"] = [{"bearer": []}]
            for status, text in {
                **_ERRORS,
                **(_BODY_ERRORS if "requestBody" in op or (path, method) in _RAW_BODIES else {}),
                **(_SESSION_ERRORS if path.startswith("/v1/sessions/") else {}),
            }.items():
                responses.setdefault(status, {"description": text, "content": error_ref})
            for status, response in _CONTENT.get((path, method), {}).items():
                content = {
                    k: (v if v is not None else error_ref["application/json"]) for k, v in response["content"].items()
                }
                responses[status] = {**response, "content": content}
            if (path, method) in _RAW_BODIES:
                op["requestBody"] = {"required": False, "content": _RAW_BODIES[(path, method)]}
            if (path, method) == ("/v1/runs", "post"):
                responses["200"].setdefault("content", {}).update(_EVENTS)
