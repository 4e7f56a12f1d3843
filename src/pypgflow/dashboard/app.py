"""create_app: the dashboard and its HTTP API as one ASGI app, over a pypgflow App.

The routes are in :mod:`~pypgflow.dashboard.pages` (HTML) and :mod:`~pypgflow.dashboard.api`
(JSON under ``/api/``); :mod:`~pypgflow.dashboard.auth` guards them all. What they read goes
through the App's verbs (``get_run``, ``retry``, ``cancel``, ``instances``, ``schedules``) and
the engine's operators' reads (:mod:`pypgflow.engines.insight`), never SQL of their own.
The App may have no workflows (``pypgflow --database-url URL dashboard``): everything is then
read from what the database knows, and workflow graphs from the stored runs' steps.
"""

from __future__ import annotations

import os
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from pypgflow.app import App
from pypgflow.dashboard import api, pages
from pypgflow.dashboard.auth import Credentials, Guard, route_path
from pypgflow.dashboard.site import Dashboard, render, templates
from pypgflow.defaults import DASHBOARD_TOKEN_ENV
from pypgflow.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidArgument,
    NotSupported,
    PypgflowError,
    RunNotFound,
    UnknownWorkflow,
)

TOKEN_ENV = DASHBOARD_TOKEN_ENV


def create_app(app: App, *, token: str | None = None, read_only: bool = False) -> Starlette:
    """The dashboard over ``app``, as an ASGI app (mount it, or serve it with any ASGI server).

    ``token``: what every page and API call must present (``Authorization: Bearer TOKEN``, or
    the cookie set by ``/login?token=TOKEN``); default ``PYPGFLOW_DASHBOARD_TOKEN``.
    ``read_only``: no action is shown, and every one is refused (403)."""
    if not isinstance(app, App):
        raise InvalidArgument(f"create_app() takes a pypgflow App, got {type(app).__name__}")
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigurationError(
            f"the dashboard needs a token: create_app(app, token=...) or {TOKEN_ENV} "
            "(the `pypgflow dashboard` command makes a random one)"
        )
    dashboard = Dashboard(app, Credentials(token), read_only, templates())
    static = resources.files("pypgflow.dashboard").joinpath("static")
    routes: list[BaseRoute] = [
        *api.routes(dashboard),
        *pages.routes(dashboard),
        Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
    ]
    asgi = Starlette(
        routes=routes,
        exception_handlers={
            PypgflowError: lambda request, exc: error_response(dashboard, request, exc),
            HTTPException: lambda request, exc: error_response(dashboard, request, exc),
        },
    )
    asgi.state.dashboard = dashboard
    asgi.add_middleware(Guard, credentials=dashboard.credentials)
    return asgi


def status_of(exc: Exception) -> int:
    """The HTTP status of an error: bad input 400, unknown things 404, refused actions 403."""
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, InvalidArgument):
        return 400
    if isinstance(exc, RunNotFound | UnknownWorkflow):
        return 404
    if isinstance(exc, NotSupported):
        return 501
    if isinstance(exc, DatabaseUnavailable):
        return 503
    return 500


def error_response(dashboard: Dashboard, request: Request, exc: Exception) -> Response:
    status = status_of(exc)
    message = exc.detail if isinstance(exc, HTTPException) else str(exc)
    if route_path(request.scope).startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return render(dashboard, request, "error.html", {"status": status, "message": message}, status)
