"""The web console of ``tarbox serve`` at ``/ui/``: browse a tenant's files, its
history as a branch graph, diffs, runs and the audit log, and go back to any layer.

``routes`` serves the pages (Jinja2 templates, ``templates/``), ``sessions`` the
login cookie; ``preview``, ``diffview`` and ``graph`` compute what the pages show
(file previews, highlighted diffs, the branch graph). Every asset is in
``static/`` inside the package: the console works offline. docs/console.md
describes it.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from tarbox.server.console.routes import PageError, page_error, router
from tarbox.server.console.sessions import SessionStore


def install(app: FastAPI) -> None:
    """Serve the console on ``app`` (its sessions live in ``app.state``)."""
    app.state.console_sessions = SessionStore()
    app.include_router(router)
    app.add_exception_handler(PageError, page_error)  # type: ignore[arg-type]  # starlette types handlers by Exception
    app.mount("/ui/static", StaticFiles(packages=[("tarbox.server.console", "static")]), name="console-static")
