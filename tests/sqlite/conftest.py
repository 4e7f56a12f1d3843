"""Fixtures of the SQLite engine tests: real database files in tmp_path, no server needed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.sqlite import SqliteEngine

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A migrated SQLite database file for one test."""
    path = str(tmp_path / "flows.db")
    engine = SqliteEngine(path)
    engine.migrate()
    engine.close()
    return path


@pytest.fixture
def make_app(db_path: str) -> Iterator[Callable[..., App]]:
    """``make_app(*workflows, **options)``: an App on this test's SQLite file, closed afterwards."""
    apps: list[App] = []

    def make(*workflows: Workflow, **options: Any) -> App:
        app = App(engine=SqliteEngine(db_path), workflows=workflows, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
