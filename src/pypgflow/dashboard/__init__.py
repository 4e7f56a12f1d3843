"""The operators' web dashboard and its JSON HTTP API: an ASGI app over a pypgflow App.

``create_app(app, token=..., read_only=False)`` returns it, to mount inside FastAPI or Starlette
or serve with any ASGI server; ``pypgflow dashboard`` serves it with uvicorn. It is an optional
part (``pip install 'pypgflow[dashboard]'``): the core imports nothing of it.
"""

from __future__ import annotations

from pypgflow.errors import ConfigurationError

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise ConfigurationError(
        f"the dashboard needs its optional dependencies ({exc.name} is missing): "
        "pip install 'pypgflow[dashboard]'"
    ) from exc

from pypgflow.dashboard.app import TOKEN_ENV, create_app

__all__ = ["TOKEN_ENV", "create_app"]
