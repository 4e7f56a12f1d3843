"""Finding and loading the user's app: ``MODULE:APP``, the database-only app of commands that
need no workflows, and the global options (``--database-url``, ``--schema``) they read."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from pypgflow import defaults
from pypgflow.app import App, Job
from pypgflow.errors import ConfigurationError


@dataclass(frozen=True)
class Config:
    """The global options, shared by every command through the click context."""

    database_url: str | None = None
    schema: str = defaults.DEFAULT_SCHEMA
    schema_given: bool = False
    #: ``pypgflow --app MODULE:APP``, for the commands that need only the database
    app_spec: str | None = None


def config(ctx: click.Context) -> Config:
    """The global options of this invocation (from the environment outside a ``pypgflow`` group)."""
    found = ctx.find_object(Config)
    return found if found is not None else Config(os.environ.get(defaults.DATABASE_URL_ENV) or None)


def warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def load_app(spec: str, *, database_url: str | None = None) -> App:
    """The App named by ``MODULE:ATTR``: an App, or a callable returning one.

    The current directory is put on ``sys.path`` first (as other tools do), and ``database_url``,
    if given, is exported as PYPGFLOW_DATABASE_URL while the module is imported and the factory
    called, so an ``App()`` without a URL connects where the command line says.
    """
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigurationError(
            f"expected MODULE:APP, e.g. myproject.flows:app or myproject.flows:create_app, "
            f"got {spec!r}"
        )
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        raise ConfigurationError(
            f"{module_name!r} is a path: give a module name (myproject.flows, not "
            "myproject/flows.py), importable from the current directory"
        )
    if module_name.startswith("."):
        raise ConfigurationError(f"relative module names are not supported: {module_name!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    with _exported(defaults.DATABASE_URL_ENV, database_url):
        module = _import(module_name)
        target: Any = module
        for part in attr.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ConfigurationError(
                    f"module {module_name!r} has no attribute {attr!r} (from {spec!r})"
                ) from None
        if isinstance(target, App):
            return target
        if not callable(target) or isinstance(target, Job):  # never run a user's job here
            raise ConfigurationError(
                f"{spec!r} is not a pypgflow App (nor a function returning one): got "
                f"{type(target).__name__}"
            )
        made = target()
    if not isinstance(made, App):
        raise ConfigurationError(f"{spec!r} returned {type(made).__name__}, not a pypgflow App")
    return made


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigurationError(
                f"cannot import module {module_name!r}: no module named {missing!r} "
                "(searched the current directory and the Python path)"
            ) from None
        raise  # the module exists but imports something missing: its traceback helps


@contextlib.contextmanager
def _exported(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` for the duration of the block (nothing if value is None)."""
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def user_app(ctx: click.Context, spec: str) -> App:
    """The user's app, closed when the command ends; warns if it ignores the global options."""
    given = config(ctx)
    if given.app_spec and given.app_spec != spec:
        warn(f"--app {given.app_spec} is not used: this command runs {spec}")
    app = ctx.with_resource(load_app(spec, database_url=given.database_url))
    if given.database_url and app.url and app.url != given.database_url:
        warn(
            f"{spec} connects to its own database, not to the --database-url "
            f"({defaults.DATABASE_URL_ENV}) given"
        )
    schema = getattr(app.engine, "schema", None)
    if given.schema_given and schema is not None and schema != given.schema:
        warn(f"{spec} uses schema {schema!r}, not --schema {given.schema!r}")
    return app


def database_app(ctx: click.Context, app_spec: str | None) -> App:
    """For commands that only need the database: the app of --app (the command's, else the
    one before it), or one on the URL."""
    given = config(ctx)
    app_spec = app_spec or given.app_spec
    if app_spec:
        return user_app(ctx, app_spec)
    # Like App(): without a URL, the embedded default in the working directory.
    return ctx.with_resource(App(given.database_url or defaults.DEFAULT_URL, schema=given.schema))
