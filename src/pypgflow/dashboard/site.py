"""What every route of the dashboard shares: the :class:`Dashboard` (the App, the credentials,
read-only or not, the templates), the Jinja2 environment with its filters, and the rendering of
a page. Autoescaping is on for every template: what a page shows of stored data is text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from pypgflow.app import App
from pypgflow.cli.output import seconds, when
from pypgflow.dashboard.auth import Credentials, root_of, route_path

NAV = [
    ("overview", "/", "Overview"),
    ("runs", "/runs", "Runs"),
    ("failed", "/failed", "Failed"),
    ("workflows", "/workflows", "Workflows"),
    ("instances", "/instances", "Instances"),
    ("schedules", "/schedules", "Schedules"),
]


@dataclass(frozen=True)
class Dashboard:
    """What every route needs: the App, the credentials, whether actions are allowed, and the
    templates."""

    app: App
    credentials: Credentials
    read_only: bool
    templates: Environment


def pretty(value: Any) -> str:
    """JSON for people, indented; the template escapes it like any other text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def compact(value: Any) -> str:
    """JSON on one line, for tables; escaped by the template like any other text."""
    return json.dumps(value, ensure_ascii=False, default=str)


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("pypgflow.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = pretty
    env.filters["compact"] = compact
    env.filters["when"] = when
    env.filters["seconds"] = seconds
    return env


def url(request: Request, path: str) -> str:
    """A path of the dashboard (``/runs``) as the browser reaches it, under its mount point."""
    return root_of(request.scope) + path


def render(
    dashboard: Dashboard,
    request: Request,
    name: str,
    context: dict[str, Any],
    status: int = 200,
) -> HTMLResponse:
    template = dashboard.templates.get_template(name)
    html = template.render(
        request=request,
        root=root_of(request.scope),
        path=route_path(request.scope),
        nav=NAV,
        csrf=dashboard.credentials.csrf,
        read_only=dashboard.read_only,
        has_code=bool(dashboard.app.workflows),
        now=datetime.now(UTC),
        **context,
    )
    return HTMLResponse(html, status_code=status)
