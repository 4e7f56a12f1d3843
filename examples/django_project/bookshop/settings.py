"""The bookshop's settings. The database is BOOKSHOP_DATABASE_URL: ``postgresql://...`` (runs
then live in the same database, and start inside Django's transactions) or ``sqlite:///file``;
default ``postgresql://postgres@127.0.0.1:5432/bookshop``."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit


def database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a ``postgresql://`` or ``sqlite:///`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parts.path[1:] or "bookshop.db"}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


SECRET_KEY = os.environ.get("BOOKSHOP_SECRET_KEY", "only-for-the-example")
DEBUG = os.environ.get("BOOKSHOP_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
ROOT_URLCONF = "bookshop.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "pypgflow.integrations.django",  # manage.py pypgflow_worker, pypgflow_migrate
    "orders",
]

DATABASES = {
    "default": database(
        os.environ.get("BOOKSHOP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bookshop")
    )
}

PYPGFLOW = {
    "WORKFLOWS": ["orders.flows:fulfil_order"],
    # None: DATABASES["default"] when it is PostgreSQL, else PYPGFLOW_DATABASE_URL (or the
    # SQLite file pypgflow.db).
    "DATABASE_URL": os.environ.get("BOOKSHOP_PYPGFLOW_URL"),
    "QUEUES": {"default": 8},
    "WORKER": {"shutdown_timeout": 10},
}
