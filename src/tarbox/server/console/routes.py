"""The console's pages under ``/ui`` (server-rendered Jinja2, no JavaScript needed).

Every page works on the tenant of the session's token, through the same
``Workspace`` as the REST API: a URL names paths and layers inside that tenant,
never a tenant, so nothing in it can reach another. Forms that change something
(rollback, logout) need the session's CSRF secret and a same-origin ``Origin`` (or
``Referer``); login needs the latter. Every answer carries a strict Content
Security Policy (only this server's own styles; no scripts at all), and raw file
downloads are sandboxed, so a file in a workspace cannot run script in the
console's origin.
"""

from __future__ import annotations

import functools
import posixpath
import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tarbox.fs import AuditOp
from tarbox.runs import OUTPUT_KEPT
from tarbox.server.console import diffview, graph, preview
from tarbox.server.console.sessions import COOKIE, LIFETIME, Session, SessionStore, csrf_ok
from tarbox.server.errors import ApiError, describe
from tarbox.server.pipes import file_chunks
from tarbox.server.workspace import Workspace, clean_path
from tarbox.tokens import TokenError, TokenInfo, verify_token

router = APIRouter(prefix="/ui", include_in_schema=False)
PAGE = 100  # directory entries a page
HISTORY_PAGE = 1000  # layers a page
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_env = jinja2.Environment(
    loader=jinja2.PackageLoader("tarbox.server.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters.update(
    size=preview.human_size,
    when=preview.when,
    perm=preview.permissions,
    q=lambda p: quote(p.lstrip("/"), safe="/"),  # a tenant path in a /ui/files/ URL
)


def sessions(request: Request) -> SessionStore:
    return request.app.state.console_sessions


@dataclass
class Viewer:
    """Who is looking: the session and its (just re-checked) token."""

    session: Session
    token: TokenInfo

    @property
    def tenant_name(self) -> str | None:
        return self.token.tenant.name if self.token.tenant is not None else None


class PageError(Exception):
    """A failure before a page's handler ran (checking the session's token): shown as an
    error page by :func:`page_error`, which ``console.install`` registers."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def page_error(request: Request, exc: PageError) -> HTMLResponse:
    return _error(request, exc.cause, None)


def viewer(request: Request) -> Viewer:
    session = sessions(request).get(request.cookies.get(COOKIE))
    if session is not None:
        try:
            return Viewer(session, verify_token(request.app.state.tb, session.token_text))
        except TokenError:  # revoked or expired since login: the session ends with it
            sessions(request).end(request.cookies.get(COOKIE))
        except Exception as exc:  # noqa: BLE001 - e.g. the database gone: a page that says so
            raise PageError(exc) from exc
    raise StarletteHTTPException(303, "log in", headers={"Location": "/ui/login", **SECURITY_HEADERS})


VIEWER = Annotated[Viewer, Depends(viewer)]


def _page(request: Request, template: str, status: int = 200, who: Viewer | None = None, **context) -> HTMLResponse:
    context.setdefault("section", "")
    html = _env.get_template(template).render(request=request, viewer=who, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _error(request: Request, exc: BaseException, who: Viewer | None) -> HTMLResponse:
    status, code, message, _ = describe(exc)
    return _page(request, "error.html", status, who, code=code, message=message)


def _shown(handler):
    """A page handler whose failures are error pages with the status that fits (as the
    API's JSON errors), never a traceback."""

    @functools.wraps(handler)
    def page(**kwargs):
        try:
            return handler(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is an answer
            return _error(kwargs["request"], exc, kwargs.get("who"))

    return page


def _workspace(request: Request, who: Viewer) -> Workspace:
    return Workspace(request.app.state.tb, who.token, request.app.state.limits)


def _same_origin(request: Request) -> bool:
    """Whether a form was posted from this server's own pages (browsers send Origin on
    POST; Referer where they do not). A request with neither is not a browser's."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if sent is None:
        return True
    parts = urlsplit(sent)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def _check_form(request: Request, who: Viewer, csrf: str | None) -> None:
    if not _same_origin(request):
        raise ApiError(403, "CROSS_ORIGIN", "this form was posted from another site")
    if not csrf_ok(who.session, csrf):
        raise ApiError(403, "CSRF", "the form's CSRF token is missing or wrong: reload the page and try again")


# ------------------------------------------------------------ login, logout


def _home(token: TokenInfo) -> str:
    """Where a token's console starts: an admin's has no files, only the tenants."""
    return "/ui/admin" if token.admin else "/ui/files/"


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", error=None)


@router.post("/login")
def login(request: Request, token: Annotated[str, Form()] = "") -> Response:
    if not _same_origin(request):
        return _page(request, "login.html", 403, error="this form was posted from another site")
    try:
        info = verify_token(request.app.state.tb, token.strip())
    except TokenError as exc:
        return _page(request, "login.html", 401, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. the database gone
        return _error(request, exc, None)
    # a new session id at every login, whatever cookie came with the request
    sessions(request).end(request.cookies.get(COOKIE))
    session_id, _ = sessions(request).create(token.strip(), info.id)
    response = RedirectResponse(_home(info), 303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(LIFETIME),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
@_shown
def logout(request: Request, who: VIEWER, csrf: Annotated[str | None, Form()] = None) -> Response:
    _check_form(request, who, csrf)
    sessions(request).end(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", 303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.get("/")
def home(who: VIEWER) -> Response:
    return RedirectResponse(_home(who.token), 303, headers=SECURITY_HEADERS)


@router.get("/highlight.css")
def highlight_css() -> Response:
    return Response(preview.stylesheet(), media_type="text/css", headers={"Cache-Control": "max-age=3600"})


# -------------------------------------------------------------------- files


def _crumbs(path: str) -> list[tuple[str, str]]:
    out, at = [("/", "/")], ""
    for part in [p for p in path.split("/") if p]:
        at += "/" + part
        out.append((part, at))
    return out


@router.get("/files")
@router.get("/files/{path:path}")
@_shown
def files(request: Request, who: VIEWER, path: str = "", offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    ws = _workspace(request, who)
    path = clean_path(path)
    st = ws.stat(path, follow=False)
    common: dict[str, Any] = {
        "path": path,
        "crumbs": _crumbs(path),
        "stat": st,
        "section": "files",
        "tree": ws.tree(path),
    }
    if st["type"] == "directory":
        listing = ws.list_dir(path, offset, PAGE)
        return _page(
            request,
            "directory.html",
            who=who,
            listing=listing,
            offset=offset,
            page=PAGE,
            join=lambda name: posixpath.join(path, name),
            **common,
        )
    shown: dict = {"kind": "other"}
    if st["type"] == "symlink":
        shown = {"kind": "symlink", "target": ws.fs().readlink(path)}
    elif st["type"] == "file":
        head = ws.read(path, 0, preview.PREVIEW_BYTES)
        image = preview.image_type(head[:16])
        text = None if image else preview.as_text(head)
        if image:
            shown = {"kind": "image", "type": image}
        elif text is not None:
            shown = {
                "kind": "text",
                "lines": preview.highlighted_lines(path, text),
                "cut": st["size"] > preview.PREVIEW_BYTES,
            }
        else:
            shown = {
                "kind": "binary",
                "rows": preview.hexdump(head[: preview.HEX_BYTES]),
                "shown": min(len(head), preview.HEX_BYTES),
            }
    return _page(request, "file.html", who=who, preview=shown, **common)


@router.get("/raw/{path:path}")
@_shown
def raw(request: Request, who: VIEWER, path: str, inline: bool = False) -> Response:
    """A file's bytes. Inline only for the image types the preview shows; everything
    else is an attachment, and a sandbox policy keeps any of it from running script."""
    path = clean_path(path)
    fs = _workspace(request, who).fs()
    st = fs.stat(path)
    if not st.is_file:
        raise ApiError(409, "EISDIR", f"not a regular file: {path}", 21)
    f = fs.open(path, "rb")
    media = preview.image_type(f.read(16)) if inline else None
    name = posixpath.basename(path) or "file"
    headers = {
        "Content-Length": str(st.size),
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Content-Disposition": ("inline" if media else "attachment") + f"; filename*=UTF-8''{quote(name)}",
    }
    return StreamingResponse(
        file_chunks(f, 0, st.size), headers=headers, media_type=media or "application/octet-stream"
    )


# ------------------------------------------------------------------ history


@router.get("/history")
@_shown
def history(request: Request, who: VIEWER, offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    ws = _workspace(request, who)
    layers = ws.layers()
    branches = ws.branches()
    rows, width = graph.branch_graph(layers, branches["branches"])
    current = ws.fs().current_layer().id
    return _page(
        request,
        "history.html",
        who=who,
        section="history",
        rows=rows[offset : offset + HISTORY_PAGE],
        total=len(rows),
        offset=offset,
        page=HISTORY_PAGE,
        width=width,
        row_h=graph.ROW_H,
        current=current,
        branch=branches["current"],
    )


@router.get("/diff")
@_shown
def diff(
    request: Request,
    who: VIEWER,
    a: Annotated[int, Query()],
    b: Annotated[int | None, Query()] = None,
    view: Annotated[str, Query(pattern="^(unified|split)$")] = "unified",
) -> HTMLResponse:
    ws = _workspace(request, who)
    changes = diffview.file_diffs(ws.diff(a, b, patch=True, patch_limit=diffview.PATCH_FILES))
    other = {"a": a, **({"b": b} if b is not None else {})}
    return _page(
        request,
        "diff.html",
        who=who,
        section="history",
        a=a,
        b=b,
        view=view,
        changes=changes,
        unified_url="/ui/diff?" + urlencode({**other, "view": "unified"}),
        split_url="/ui/diff?" + urlencode({**other, "view": "split"}),
    )


# ----------------------------------------------------------------- rollback


def _rollback_plan(ws: Workspace, layer: int) -> list[dict]:
    """What going back to ``layer`` changes in the current view: the diff from that
    layer to now, read backwards."""
    flip = {"added": "deleted", "deleted": "added", "modified": "modified"}
    return [
        {
            "path": c["path"],
            "kind": flip[c["kind"]],
            "type": c["type"],
            "size_before": c["size_after"],
            "size_after": c["size_before"],
        }
        for c in ws.diff(layer)
    ]


@router.get("/rollback")
@_shown
def rollback_form(request: Request, who: VIEWER, layer: Annotated[int, Query()]) -> HTMLResponse:
    ws = _workspace(request, who)
    ws.need_write()
    # the layer's own record: not ws.layers(), which counts the changes of every layer
    target = next((x.to_dict() for x in ws.fs().layers() if x.id == layer), None)
    if target is None:
        raise ApiError(404, "NO_LAYER", f"no layer {layer}")
    return _page(
        request,
        "rollback.html",
        who=who,
        section="history",
        target=target,
        plan=_rollback_plan(ws, layer),
        current=ws.fs().current_layer().id,
        branch=ws.branches()["current"],
    )


@router.post("/rollback")
@_shown
def rollback(
    request: Request,
    who: VIEWER,
    layer: Annotated[int, Form()],
    csrf: Annotated[str | None, Form()] = None,
) -> Response:
    _check_form(request, who, csrf)
    result = _workspace(request, who).switch(layer=layer)
    query = urlencode({"rolled_back": layer, "now": result["current_layer"]})
    return RedirectResponse(f"/ui/history?{query}", 303, headers=SECURITY_HEADERS)


# -------------------------------------------------------------- runs, audit


@router.get("/runs")
@_shown
def run_list(request: Request, who: VIEWER) -> HTMLResponse:
    found = _workspace(request, who).runs(limit=200)
    return _page(request, "runs.html", who=who, section="runs", runs=found)


@router.get("/runs/{run_id}")
@_shown
def run_page(request: Request, who: VIEWER, run_id: str) -> HTMLResponse:
    found = _workspace(request, who).run_record(run_id)
    return _page(request, "run.html", who=who, section="runs", run=found, kept=OUTPUT_KEPT)


@router.get("/audit")
@_shown
def audit(
    request: Request,
    who: VIEWER,
    run: str = "",
    path: str = "",
    op: str = "",
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> HTMLResponse:
    ws = _workspace(request, who)
    filters: dict = {"limit": limit, "newest_first": True}
    if run:
        try:
            filters["run_id"] = uuid.UUID(run)
        except ValueError:
            raise ApiError(400, "INVALID", f"not a run id: {run!r}") from None
    if path:
        filters["path"] = path
    if op:
        if op not in {str(o) for o in AuditOp}:
            raise ApiError(400, "INVALID", f"no such operation: {op!r}")
        filters["op"] = op
    records = ws.audit(**filters)
    return _page(
        request,
        "audit.html",
        who=who,
        section="audit",
        records=records,
        run=run,
        path=path,
        op=op,
        limit=limit,
        ops=sorted(str(o) for o in AuditOp),
    )


# -------------------------------------------------------------------- admin


@router.get("/admin")
@_shown
def admin(request: Request, who: VIEWER) -> HTMLResponse:
    if not who.token.admin:
        raise ApiError(403, "NOT_ADMIN", "the tenants page needs an admin token")
    tb = request.app.state.tb
    tenants = [tb.describe_tenant(t) for t in tb.list_tenants()]
    return _page(request, "admin.html", who=who, section="admin", tenants=tenants)
