"""Failures as HTTP answers: ``{"error": {"code", "errno", "message"}}`` with the
status that fits. Never a traceback: anything unexpected is a 500 whose message
names only the kind of failure (the server log has the rest)."""

from __future__ import annotations

import errno as E
import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from tarbox.errors import DatabaseError, InvalidNameError, TenantExistsError, TenantNotFoundError
from tarbox.integrations.tar import UnsafeArchiveError
from tarbox.tokens import TokenError

log = logging.getLogger("tarbox.server")

# errno -> HTTP status (anything else an OSError carries: 400)
_STATUS = {
    E.ENOENT: 404,
    E.EEXIST: 409,
    E.ENOTEMPTY: 409,
    E.EBUSY: 409,
    E.EISDIR: 409,
    E.ENOTDIR: 409,
    E.EXDEV: 409,
    E.EPERM: 403,
    E.EACCES: 403,
    E.EROFS: 403,
    E.EDQUOT: 507,
    E.ENOSPC: 507,
    E.EFBIG: 413,
    E.ESTALE: 409,
    E.EIO: 500,
}


class ApiError(Exception):
    """A refusal with its own status and code (not a filesystem errno)."""

    def __init__(self, status: int, code: str, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errno = status, code, message, errno


def body(code: str, message: str, errno: int | None = None) -> dict:
    return {"error": {"code": code, "errno": errno, "message": message}}


def describe(exc: BaseException) -> tuple[int, str, str, int | None]:
    """(HTTP status, code, message, errno) of a failure."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message, exc.errno
    if isinstance(exc, ClientDisconnect):
        return 400, "DISCONNECTED", "the client went away before its request ended", None
    if isinstance(exc, TokenError):
        return 401, "UNAUTHENTICATED", str(exc), None
    if isinstance(exc, TenantNotFoundError):
        return 404, "NO_TENANT", str(exc), None
    if isinstance(exc, TenantExistsError):
        return 409, "TENANT_EXISTS", str(exc), None
    if isinstance(exc, UnsafeArchiveError):  # a well-formed request whose archive cannot be applied
        return 422, "BAD_ARCHIVE", str(exc), None
    if isinstance(exc, InvalidNameError):
        return 400, "INVALID_NAME", str(exc), None
    if isinstance(exc, OSError) and exc.errno:
        name = E.errorcode.get(exc.errno, "EIO")
        where = f": {exc.filename}" if exc.filename else ""
        return _STATUS.get(exc.errno, 400), name, f"{exc.strerror or name}{where}", exc.errno
    if isinstance(exc, DatabaseError):
        return 503, "DATABASE", str(exc).splitlines()[0], None
    if isinstance(exc, ValueError):
        return 400, "INVALID", str(exc), None
    log.exception("unexpected failure", exc_info=exc)
    return 500, "INTERNAL", f"internal error ({type(exc).__name__})", None


def response(exc: BaseException, *, retry_after: int | None = None) -> JSONResponse:
    status, code, message, errno = describe(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="tarbox"'} if status == 401 else {}
    if status in (429, 503):
        headers["Retry-After"] = str(retry_after or 1)
    return JSONResponse(body(code, message, errno), status_code=status, headers=headers or None)


async def handler(_request: Request, exc: Exception) -> JSONResponse:
    return response(exc)
