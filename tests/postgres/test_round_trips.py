"""Batches cost a fixed number of statements, whatever their size: start_many inserts its runs,
steps and tasks in one statement."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pypgflow import Workflow
from pypgflow.app import App
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements this thread sends to PostgreSQL while the test runs."""
    sent: list[str] = []
    me = threading.get_ident()
    real = psycopg.Cursor.execute

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            sent.append(query.as_string(self) if hasattr(query, "as_string") else str(query))
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    return sent


def fan_flow() -> Workflow:
    flow = Workflow("batch")
    flow.step(name="a")(lambda input: input)
    flow.step(name="b", depends_on=["a"])(lambda a: a)
    flow.step(name="c", depends_on=["a"])(lambda a: a)
    return flow


def test_start_many_costs_the_same_for_1_or_500_runs(pg_url: str, statements: list[str]) -> None:
    flow = fan_flow()
    app = App(pg_url, workflows=[flow])
    try:
        app.start(flow, 0)  # open the pool and check the schema first
        statements.clear()
        app.start_many(flow, [1])
        one = list(statements)
        statements.clear()
        runs = app.start_many(flow, range(500))
        assert len(statements) == len(one), statements
        inserts = [s for s in statements if "INSERT" in s.upper()]
        assert len(inserts) == 1  # runs, steps and tasks in one statement
        assert len(app.list_runs(limit=1000)) == 502
        with running_worker(app, {"default": 50}):
            assert runs[-1].result(timeout=10) == {"b": 499, "c": 499}
    finally:
        app.close()
