"""Transactions on SQLite: all or nothing, a fixed number of statements per batch, and a clear
error when another process holds the write lock too long."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.base import Completed
from pypgflow.engines.sqlite import SqliteEngine
from pypgflow.errors import DatabaseUnavailable
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def fan_flow() -> Workflow:
    flow = Workflow("batch")
    flow.step(name="a")(lambda input: input)
    flow.step(name="b", depends_on=["a"])(lambda a: a)
    flow.step(name="c", depends_on=["a"])(lambda a: a)
    return flow


@pytest.fixture
def app(db_path: str) -> Iterator[App]:
    with App(engine=SqliteEngine(db_path), workflows=[fan_flow()]) as test_app:
        yield test_app


def traced(engine: Any) -> list[str]:
    """The statements the engine's writer and this thread's connection run from now on."""
    sent: list[str] = []
    engine._writer().set_trace_callback(sent.append)
    engine._conn().set_trace_callback(sent.append)
    return sent


def verb(statement: str) -> str:
    code = [line for line in statement.splitlines() if not line.strip().startswith("--")]
    return " ".join(code).split()[0]


def test_a_failure_while_releasing_dependents_keeps_nothing(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine: Any = app.engine
    run = app.start("batch", 1)
    (task,) = engine.claim_tasks("default", 5, instance_id="t", workflows=["batch"])
    real_apply = engine._apply

    def broken_apply(conn: Any, changes: Any, **options: Any) -> None:
        real_apply(conn, changes)  # everything written, not committed...
        raise RuntimeError("crash before commit")  # ...and then the transaction fails

    monkeypatch.setattr(engine, "_apply", broken_apply)
    with pytest.raises(RuntimeError, match="crash before commit"):
        engine.finish_tasks([Completed(task, '"out"')])
    monkeypatch.setattr(engine, "_apply", real_apply)

    info = app.get_run(run.id)
    assert info.status is RunStatus.PENDING  # claims write tasks only; nothing else changed
    assert [(s.status, s.output) for s in info.steps] == [
        (StepStatus.READY, None),
        (StepStatus.WAITING, None),
        (StepStatus.WAITING, None),
    ]
    assert engine.still_running([task.id]) == {task.id}
    assert engine.claim_tasks("default", 5, instance_id="t", workflows=["batch"]) == []

    assert engine.finish_tasks([Completed(task, '"out"')]).accepted == 1
    tasks = engine.claim_tasks("default", 5, instance_id="t", workflows=["batch"])
    assert [(t.step, t.dependency_outputs) for t in tasks] == [
        ("b", {"a": "out"}),
        ("c", {"a": "out"}),
    ]


def test_batches_cost_the_same_statements_for_1_or_500_runs(app: App) -> None:
    engine: Any = app.engine
    app.start("batch", 0)  # check the schema first
    sent = traced(engine)
    app.start_many("batch", [1])
    one = list(sent)
    sent.clear()
    runs = app.start_many("batch", range(500))
    assert len(sent) == len(one) == 4, sent  # BEGIN, runs with their steps, root tasks, COMMIT
    assert [verb(s) for s in sent] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]

    sent.clear()
    claimed = engine.claim_tasks("default", 501, instance_id="t", workflows=["batch"])
    assert len(claimed) == 501
    # BEGIN, claim, their inputs, COMMIT: the runs are not written
    assert [verb(s) for s in sent] == ["BEGIN", "UPDATE", "SELECT", "COMMIT"]
    sent.clear()
    result = engine.finish_tasks([Completed(t, str(t.run_input)) for t in claimed])
    assert result.accepted == 501
    assert result.queues_with_new_work == {"default"}
    # BEGIN, runs with their steps, complete, insert tasks, update runs, COMMIT
    assert len(sent) == 6, sent
    engine._writer().set_trace_callback(None)
    engine._conn().set_trace_callback(None)
    with running_worker(app, {"default": 50}):
        assert runs[-1].result(timeout=20) == {"b": 499, "c": 499}


def test_a_writer_holding_the_lock_too_long_makes_the_database_unavailable(
    db_path: str,
) -> None:
    engine = SqliteEngine(db_path, busy_timeout=0.2)
    app = App(engine=engine, workflows=[fan_flow()])
    app.start("batch", 1)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        with pytest.raises(DatabaseUnavailable, match="locked"):
            app.start("batch", 2)
        assert len(app.list_runs()) == 1  # WAL: readers are never blocked by a writer
        other.execute("COMMIT")
        app.start("batch", 3)
        assert len(app.list_runs()) == 2
    finally:
        other.close()
        app.close()
