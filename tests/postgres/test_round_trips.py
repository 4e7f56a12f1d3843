"""Batches cost a fixed number of statements, whatever their size: a start inserts its run and
tasks in one statement, and so does a batch of runs that start alike; a large batch of runs that
start each in its own way streams them in two COPYs; a batch of outcomes runs one statement per
kind of change, and announcing the runs it finishes costs none."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.base import Completed
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements this thread sends to PostgreSQL while the test runs (COPYs too)."""
    sent: list[str] = []
    me = threading.get_ident()
    real_execute = psycopg.Cursor.execute
    real_copy = psycopg.Cursor.copy

    def seen(cursor: psycopg.Cursor[Any], query: Any) -> None:
        if threading.get_ident() == me:
            sent.append(query.as_string(cursor) if hasattr(query, "as_string") else str(query))

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        seen(self, query)
        return real_execute(self, query, *args, **kwargs)

    def copy(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        seen(self, query)
        return real_copy(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    monkeypatch.setattr(psycopg.Cursor, "copy", copy)
    return sent


def fan_flow() -> Workflow:
    flow = Workflow("batch")
    flow.step(name="a")(lambda input: input)
    flow.step(name="b", depends_on=["a"])(lambda a: a)
    flow.step(name="c", depends_on=["a"])(lambda a: a)
    return flow


def map_flow() -> Workflow:
    flow = Workflow("each")
    flow.map(over=None, name="double")(lambda item: item * 2)
    return flow


def test_a_start_is_one_statement_and_a_batch_the_same_few_whatever_its_size(
    pg_url: str, statements: list[str]
) -> None:
    flow, each = fan_flow(), map_flow()
    app = App(pg_url, workflows=[flow, each])
    try:
        app.start(flow, 0)  # open the pool and check the schema first
        app.start(each, [0])
        statements.clear()
        app.start_many(flow, [1])
        assert len(statements) == 1, statements
        assert "INSERT" in statements[0].upper()  # runs and tasks in one statement
        # Runs that start alike (no root map step): one statement, whatever the batch's size.
        statements.clear()
        app.start_many(flow, range(100))
        hundred = list(statements)
        statements.clear()
        runs = app.start_many(flow, range(1000))
        assert statements == hundred
        assert len(statements) == 1, statements
        assert "INSERT" in statements[0].upper()
        # Runs that start each in its own way (a root map step over their input): two COPYs.
        statements.clear()
        app.start_many(each, [[i] for i in range(100)])
        mapped = list(statements)
        statements.clear()
        doubled = app.start_many(each, [[i, i + 1] for i in range(1000)])
        assert statements == mapped
        copied = [line for s in statements for line in s.splitlines() if line.startswith("COPY")]
        assert [line.split()[1] for line in copied] == ['"pypgflow".runs', '"pypgflow".tasks']
        assert not [s for s in statements if "INSERT" in s.upper()]
        assert len(app.list_runs(limit=3000)) == 2203
        with running_worker(app, {"default": 50}):
            assert runs[-1].result(timeout=10) == {"b": 999, "c": 999}
            assert runs[0].result(timeout=10) == {"b": 0, "c": 0}
            assert doubled[-1].result(timeout=10) == [1998, 2000]
    finally:
        app.close()


def test_outcomes_that_finish_runs_cost_no_statement_more(
    pg_url: str, statements: list[str]
) -> None:
    """A batch of outcomes runs the same statements whether it finishes 1 run or 200, and
    whether it finishes runs or not: the announcement of finished runs rides on update_runs."""
    flow = Workflow("two")
    flow.step(name="a")(lambda input: input)
    flow.step(name="b")(lambda a: a)
    app = App(pg_url, workflows=[flow])
    engine = app.engine
    names = {text.as_string(): name for name, text in engine._queries.items()}
    try:
        batches: dict[tuple[int, str], list[str]] = {}
        for size in (1, 200):
            app.start_many(flow, range(size))
            for step in ("a", "b"):
                tasks = engine.claim_tasks("default", 1000, instance_id="x", workflows=["two"])
                assert {t.step for t in tasks} == {step}
                assert len(tasks) == size
                statements.clear()
                engine.finish_tasks([Completed(t, "1") for t in tasks])
                # (the pool's liveness check sends an empty statement first)
                batches[size, step] = [names.get(s, s) for s in statements if s]
        # a run's steps live in its row: locked and read with it, written with it
        releasing = ["lock_runs", "complete_tasks", "insert_tasks", "update_runs", "notify"]
        finishing = ["lock_runs", "complete_tasks", "update_runs"]
        assert batches[1, "a"] == batches[200, "a"] == releasing
        assert batches[1, "b"] == batches[200, "b"] == finishing
        assert app.get_run(app.list_runs(limit=1)[0].id).status.finished
    finally:
        app.close()


def test_a_single_start_of_several_root_steps_inserts_each_root_task_in_one_statement(
    pg_url: str, statements: list[str]
) -> None:
    flow = Workflow("roots")
    flow.step(name="a")(lambda input: input)
    flow.step(name="b", depends_on=[], max_attempts=5)(lambda input: -input)
    flow.step(name="joined", depends_on=["a", "b"])(lambda a, b: [a, b])
    app = App(pg_url, workflows=[flow])
    try:
        app.start(flow, 0)
        statements.clear()
        run = app.start(flow, 7, idempotency_key="roots-7", delay=0.2)
        assert len(statements) == 1, statements
        assert "unnest" in statements[0]  # insert_run, not insert_runs
        assert app.start(flow, 7, idempotency_key="roots-7").id == run.id
        with psycopg.connect(pg_url) as conn:
            tasks = conn.execute(
                "SELECT step, max_attempts, run_at > now() FROM pypgflow.tasks"
                " WHERE run_id = %s ORDER BY id",
                (run.id,),
            ).fetchall()
        assert tasks == [("a", 3, True), ("b", 5, True)]
        with running_worker(app, {"default": 4}):
            assert run.result(timeout=10) == [7, -7]
    finally:
        app.close()
