"""The App of a Django project, described by its ``PYPGFLOW`` setting and made on first use.

``PYPGFLOW`` is a dict; every key is optional:

- ``"WORKFLOWS"``: the workflows the App registers, each as ``"module:name"`` or
  ``"module.name"`` (a :class:`~pypgflow.Workflow`, or a list of them).
- ``"DATABASE_URL"``: where the runs are stored. Default: the Django database ``"DATABASE"``
  names when it is PostgreSQL (the same server and database, so that a run can join a
  transaction of Django's), else what ``App()`` uses (``PYPGFLOW_DATABASE_URL``, else the SQLite
  file ``pypgflow.db``).
- ``"DATABASE"``: that Django database's alias (default ``"default"``), whose transactions
  :func:`~pypgflow.integrations.django.start_in_transaction` joins.
- ``"SCHEMA"``: the PostgreSQL schema of pypgflow's tables (default ``"pypgflow"``).
- ``"APP"``: instead of the three above, ``"module:name"`` of an App the project makes itself
  (or of a function returning one), e.g. to declare jobs with ``@app.job``.
- ``"QUEUES"`` and ``"WORKER"``: the queues (``{"default": 10}``, or names) and the
  :class:`~pypgflow.worker.Worker` options (``{"shutdown_timeout": 10}``) of
  ``manage.py pypgflow_worker``.

Everything is checked when the App is made, and a mistake is a ConfigurationError naming the key.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from pypgflow import defaults
from pypgflow.app import App
from pypgflow.cli.loading import load_app
from pypgflow.errors import ConfigurationError
from pypgflow.workflow import Workflow

#: the name of the Django setting
SETTING = "PYPGFLOW"
KEYS = frozenset({"APP", "WORKFLOWS", "DATABASE_URL", "DATABASE", "SCHEMA", "QUEUES", "WORKER"})
#: what App() makes itself, and "APP" cannot be combined with
APP_KEYS = ("WORKFLOWS", "DATABASE_URL", "SCHEMA")
#: keys of a Django database's OPTIONS that are Django's, not libpq's
DJANGO_OPTIONS = frozenset(
    {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory", "context"}
)

_lock = threading.Lock()
_app: App | None = None


def config() -> dict[str, Any]:
    """The ``PYPGFLOW`` setting, its keys checked (an empty dict when it is not set)."""
    value = getattr(settings, SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"settings.{SETTING} must be a dict, got {type(value).__name__}")
    unknown = sorted(set(value) - KEYS)
    if unknown:
        raise ConfigurationError(
            f"settings.{SETTING} has unknown keys {', '.join(map(repr, unknown))} "
            f"(it takes {', '.join(sorted(KEYS))})"
        )
    if "APP" in value:
        mixed = [key for key in APP_KEYS if key in value]
        if mixed:
            raise ConfigurationError(
                f"settings.{SETTING} names an APP and {', '.join(mixed)}: the App named by APP "
                "has its own database and workflows; give one or the other"
            )
    return dict(value)


def database_alias() -> str:
    """The alias of the Django database whose transactions runs join."""
    alias = config().get("DATABASE", "default")
    if not isinstance(alias, str) or alias not in settings.DATABASES:
        raise ConfigurationError(
            f"settings.{SETTING}['DATABASE'] is {alias!r}, which is not a database of "
            f"settings.DATABASES ({', '.join(settings.DATABASES)})"
        )
    return alias


def django_database_url(alias: str) -> str | None:
    """A libpq connection string for the Django database ``alias``, or None when it is not
    PostgreSQL."""
    database = settings.DATABASES[alias]
    if "postgresql" not in database.get("ENGINE", "") and "postgis" not in database.get(
        "ENGINE", ""
    ):
        return None
    import psycopg

    params: dict[str, Any] = {
        key: value
        for key, value in (database.get("OPTIONS") or {}).items()
        if key not in DJANGO_OPTIONS
    }
    for key, name in (("NAME", "dbname"), ("USER", "user"), ("PASSWORD", "password"),
                      ("HOST", "host"), ("PORT", "port")):  # fmt: skip
        if database.get(key) not in (None, ""):
            params[name] = database[key]
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


def load_object(path: Any, key: str) -> Any:
    """What ``"module:name"`` or ``"module.name"`` (in ``PYPGFLOW[key]``) names."""
    if not isinstance(path, str) or not path.strip("."):
        raise ConfigurationError(
            f"settings.{SETTING}['{key}'] takes 'module:name' strings, got {path!r}"
        )
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(
            f"settings.{SETTING}['{key}']: {path!r} is not 'module:name' (e.g. 'shop.flows:orders')"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"settings.{SETTING}['{key}']: no module {module_name!r} (from {path!r})"
            ) from None
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(
            f"settings.{SETTING}['{key}']: module {module_name!r} has no {attr!r}"
        ) from None


def workflows(paths: Any) -> list[Workflow]:
    """The workflows ``PYPGFLOW["WORKFLOWS"]`` names."""
    if isinstance(paths, str) or not isinstance(paths, list | tuple):
        raise ConfigurationError(
            f"settings.{SETTING}['WORKFLOWS'] is a list of 'module:name' strings, got {paths!r}"
        )
    found: list[Workflow] = []
    for path in paths:
        target = load_object(path, "WORKFLOWS")
        items = target if isinstance(target, list | tuple) else [target]
        for item in items:
            if not isinstance(item, Workflow):
                raise ConfigurationError(
                    f"settings.{SETTING}['WORKFLOWS']: {path!r} is a {type(item).__name__}, "
                    "not a pypgflow Workflow"
                )
            found.append(item)
    return found


def make_app() -> App:
    """A new App as ``PYPGFLOW`` describes it."""
    given = config()
    if "APP" in given:
        spec = given["APP"]
        if not isinstance(spec, str):
            raise ConfigurationError(f"settings.{SETTING}['APP'] is 'module:name', got {spec!r}")
        return load_app(spec)
    url = given.get("DATABASE_URL")
    if url is not None and not isinstance(url, str):
        raise ConfigurationError(f"settings.{SETTING}['DATABASE_URL'] must be a string")
    if url is None:
        url = django_database_url(database_alias())
    schema = given.get("SCHEMA", defaults.DEFAULT_SCHEMA)
    if not isinstance(schema, str):
        raise ConfigurationError(f"settings.{SETTING}['SCHEMA'] must be a string, got {schema!r}")
    return App(url, workflows=workflows(given.get("WORKFLOWS", [])), schema=schema)


def get_app() -> App:
    """The project's App, made from ``settings.PYPGFLOW`` on first use and shared by every
    thread of the process (an App is safe to share)."""
    global _app
    with _lock:
        if _app is None:
            _app = make_app()
        return _app


def close_app() -> None:
    """Close the project's App (its connections); the next :func:`get_app` makes a new one."""
    global _app
    with _lock:
        app, _app = _app, None
    if app is not None:
        app.close()
