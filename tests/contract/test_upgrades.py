"""Runs stored by an earlier schema carry on after an upgrade, on each engine: migration 0004
moves each run's steps into its row and plain steps' outputs onto their tasks, 0005 scopes
idempotency keys to their workflow, 0006 gives runs a trace context and 0007 a version (none
for the runs stored before them). A run caught
half-way (a step done, a map step with one element done and one queued, a step waiting) reads
back as it was and finishes with the outputs it had; a finished run keeps its steps' outputs."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.postgres.engine import PostgresEngine
from pypgflow.engines.sqlbase import SqlBase
from pypgflow.engines.sqlite import SqliteEngine
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

#: the last schema version before runs held their steps
BEFORE = 3

upgraded = Workflow("upgraded")


@upgraded.step
def a(input: int) -> list[int]:
    return list(range(1, input + 1))


@upgraded.map(over=a)
def m(item: int) -> int:
    return item * 10


@upgraded.step
def b(m: list[int]) -> int:
    return sum(m)


done_before = Workflow("done_before")


@done_before.step
def only(input: Any) -> str:
    return "ok"


@pytest.fixture(params=["postgres", "sqlite"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each engine at schema version 3."""
    if request.param == "postgres":
        url = str(request.getfixturevalue("empty_pg_url"))
        engine: SqlBase[Any] = PostgresEngine(url)
    else:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        engine = SqliteEngine(url)
    try:
        with engine._migrating() as conn:
            for version, name, text in engine._migrations:
                if version <= BEFORE:
                    engine._run_script(conn, text)
                    engine._record(conn, version, name)
    finally:
        engine.close()
    return url


def write_old_rows(url: str, half_way: str, finished: str) -> None:
    """The two runs as schema 3 stored them: steps in their table, a plain step's output on
    its step (its task's output empty), a map element's result on its task."""
    runs = [
        (half_way, "upgraded", "running", "3", None, 2),
        (finished, "done_before", "completed", None, json.dumps("ok"), 0),
    ]
    steps = [
        (half_way, "a", 0, "completed", "[]", 0, 3, False, None, 0, 1, "[1, 2]"),
        (half_way, "m", 1, "ready", '["a"]', 0, 3, True, "a", 1, 2, None),
        (half_way, "b", 2, "waiting", '["m"]', 1, 3, False, None, None, None, None),
        (finished, "only", 0, "completed", "[]", 0, 3, False, None, 0, 1, '"ok"'),
    ]
    tasks = [
        (half_way, "a", None, "upgraded", "completed", 1, None, None),
        (half_way, "m", 0, "upgraded", "completed", 1, "1", "10"),
        (half_way, "m", 1, "upgraded", "queued", 0, "2", None),
        (finished, "only", None, "done_before", "completed", 1, None, None),
    ]
    run_sql = (
        "INSERT INTO {p}runs (id, workflow, status, queue, input, output, remaining_steps) "
        "VALUES (%s, %s, %s, 'default', %s{j}, %s{j}, %s)"
    )
    step_sql = (
        "INSERT INTO {p}steps (run_id, name, position, status, depends_on, remaining_deps, "
        "max_attempts, is_map, map_over, remaining_tasks, task_count, output) "
        "VALUES (%s, %s, %s, %s, %s{j}, %s, %s, %s, %s, %s, %s, %s{j})"
    )
    task_sql = (
        "INSERT INTO {p}tasks (run_id, step, task_index, workflow, queue, status, attempt, "
        "max_attempts, input, output) "
        "VALUES (%s, %s, %s, %s, 'default', %s, %s, 3, %s{j}, %s{j})"
    )
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            with conn:
                for statement, rows in ((run_sql, runs), (step_sql, steps), (task_sql, tasks)):
                    text = statement.format(p="", j="").replace("%s", "?")
                    conn.executemany(text, [[json_of(v) for v in row] for row in rows])
        finally:
            conn.close()
        return
    with psycopg.connect(url) as pg:
        for statement, rows in ((run_sql, runs), (step_sql, steps), (task_sql, tasks)):
            pg.cursor().executemany(statement.format(p="pypgflow.", j="::jsonb"), rows)


def json_of(value: Any) -> Any:
    """SQLite's columns as the old engine wrote them: booleans as 0 or 1."""
    return int(value) if isinstance(value, bool) else value


def test_a_run_caught_half_way_by_the_upgrade_finishes_with_its_outputs(
    old_database: str,
) -> None:
    half_way, finished = str(uuid.uuid4()), str(uuid.uuid4())
    write_old_rows(old_database, half_way, finished)
    app = App(old_database, workflows=[upgraded, done_before])
    try:
        # 0004 moves the steps; 0005 scopes the keys; 0006 keeps the trace context; 0007 adds
        # versions (none for the runs stored before: any worker of their workflow takes them);
        # 0008 the versions of each instance; 0009 coordination (signals, forks, children);
        # 0010 the lone losses of tasks; 0011 fleet-wide limits
        assert app.migrate() == [4, 5, 6, 7, 8, 9, 10, 11]

        info = app.get_run(half_way)
        assert info.status is RunStatus.RUNNING
        assert [(s.name, s.status, s.output) for s in info.steps] == [
            ("a", StepStatus.COMPLETED, [1, 2]),
            ("m", StepStatus.READY, None),
            ("b", StepStatus.WAITING, None),
        ]
        assert [(s.is_map, s.task_count, s.depends_on) for s in info.steps] == [
            (False, 1, ()),
            (True, 2, ("a",)),
            (False, None, ("m",)),
        ]
        done = app.get_run(finished)
        assert (done.status, done.output) == (RunStatus.COMPLETED, "ok")
        assert [(s.name, s.status, s.output) for s in done.steps] == [
            ("only", StepStatus.COMPLETED, "ok")
        ]

        with running_worker(app):
            # the element recorded before the upgrade is not run again: 10 + 2 * 10
            assert app.run(half_way).result(timeout=15) == 30
        info = app.get_run(half_way)
        assert [(s.name, s.status, s.output) for s in info.steps] == [
            ("a", StepStatus.COMPLETED, [1, 2]),
            ("m", StepStatus.COMPLETED, [10, 20]),
            ("b", StepStatus.COMPLETED, 30),
        ]
        assert [s.attempts for s in info.steps] == [1, 1, 1]
    finally:
        app.close()
