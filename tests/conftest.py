"""Shared fixtures: a real PostgreSQL database per test, cloned from a migrated template.

Point the suite at a server with PYPGFLOW_TEST_DATABASE_URL (any database on it; the tests create
and drop their own). Default: postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.worker import Worker

ADMIN_URL = os.environ.get(
    "PYPGFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ENGINES = ["postgres", "sqlite"]

# The fault scenarios take minutes: `make chaos` runs them (PYPGFLOW_CHAOS=1), `make test` not.
collect_ignore = [] if os.environ.get("PYPGFLOW_CHAOS") == "1" else ["chaos"]


def _with_dbname(url: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, made once per test session."""
    try:
        conn = _admin()
    except psycopg.OperationalError as exc:
        pytest.exit(
            "These tests need a PostgreSQL server and could not reach one at "
            f"{ADMIN_URL!r}: {exc}\nStart one, or point the suite at yours with "
            "PYPGFLOW_TEST_DATABASE_URL=postgresql://user@host:port/dbname make test",
            returncode=3,
        )
    name = f"pypgflow_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    app = App(_with_dbname(ADMIN_URL, name))
    app.migrate()
    app.close()
    yield name
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"pypgflow_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(pg_template)
            )
        )
    yield _with_dbname(ADMIN_URL, name)
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database with no pypgflow schema."""
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        pytest.exit(f"cannot reach PostgreSQL at {ADMIN_URL!r}: {exc}", returncode=3)
    name = f"pypgflow_empty_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_dbname(ADMIN_URL, name)
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database of each engine in turn."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    if request.param == "sqlite":
        from pypgflow.engines.sqlite.engine import SqliteEngine

        path = request.getfixturevalue("tmp_path") / "flows.db"
        engine = SqliteEngine(path)
        engine.migrate()
        engine.close()
        return f"sqlite:///{path}"
    raise AssertionError(f"unknown engine {request.param}")  # pragma: no cover


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., App]]:
    """``make_app(*workflows, **options)``: an App on this test's database, closed afterwards."""
    apps: list[App] = []

    def make(*workflows: Workflow, **options: Any) -> App:
        app = App(database_url, workflows=workflows, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@contextlib.contextmanager
def running_worker(app: App, queues: Any = None, **options: Any) -> Iterator[Worker]:
    """A worker on a background thread for the duration of the block; stopped and joined after."""
    options.setdefault("install_signal_handlers", False)
    options.setdefault("poll_interval", 0.2)
    options.setdefault("shutdown_timeout", 5.0)
    worker = Worker(app, queues, **options)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop within 30 s"
    if errors:
        raise errors[0]


def module_at(path: Path, name: str) -> ModuleType:
    """The module of a file outside the packages (docs/hooks.py, .ci/audit.py), loaded."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
