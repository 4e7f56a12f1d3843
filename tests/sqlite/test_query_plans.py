"""SQLite's hot-path and list statements search by key, whatever the statistics say.

The same database as PostgreSQL's plan test (tests/postgres/test_query_plans.py): finished runs
beside a backlog of pending ones, ANALYZEd with the backlog present, ANALYZEd before the backlog
arrived (sqlite_stat1 says pending runs are rare), or never. Every named statement the engine
runs for a claim (claim_tasks, claimed_task_inputs), the worker's
checks, the recording of outcomes and the listings is run under ``EXPLAIN QUERY PLAN`` with its
parameters, on the engine's own connection, just before it runs. SQLite's plan says which
index a statement searches, not how many rows it reads, so the rules are about the searches:

- no table is scanned (``SCAN runs``, with or without an index) where a search is possible:
  the one scan allowed is list_runs' walk of runs_created, newest first, which its limit stops;
- a statement about given runs or tasks finds them by key (primary key, a run's tasks),
  never through an index on their status, which would read every run or task of that
  status (the claim's pick, next_due and the listings, whose searches are by queue, status or
  workflow, are checked on their own);
- listings never sort (``USE TEMP B-TREE``): the index gives their order, so their limit stops
  them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from pypgflow import RunStatus
from pypgflow.app import App
from pypgflow.engines.sqlite import SqliteEngine
from tests.plan_workload import WORKFLOWS, mapped, one, outcomes

pytestmark = pytest.mark.timeout(60)

QUEUE = "default"
INSTANCE = "plans"
LIMIT = 10
FINISHED = 1000
MAP_HISTORY = 30
BACKLOG = 2000
MAP_RUNS = 2
LIST_LIMIT = 20

STATES = {
    "analyzed-with-backlog": "ANALYZE with the backlog present",
    "analyzed-before-backlog": "ANALYZE with no pending run, then a backlog",
    "no-statistics": "never analyzed",
}

#: a search through a key: a primary key, or the run of a step or task
KEYED = re.compile(
    r"USING INTEGER PRIMARY KEY|USING INDEX sqlite_autoindex_\w+ \((id|run_id)=|"
    r"USING INDEX tasks_run_step_index \(run_id="
)
#: what the statements that are not about given runs or tasks search with
SEARCHES = {
    "claim_tasks": re.compile(r"SEARCH tasks USING INDEX tasks_claim \(queue=\?\)"),
    "next_due": re.compile(r"SEARCH t USING INDEX tasks_claim \(queue=\? AND priority=\?\)"),
    "list_runs": re.compile(r"SCAN runs USING INDEX runs_created$"),
    "list_runs_by_status": re.compile(r"SEARCH runs USING INDEX runs_status_created \(status="),
    "list_runs_by_workflow": re.compile(
        r"SEARCH runs USING INDEX runs_workflow_created \(workflow="
    ),
    "list_runs_by_status_and_workflow": re.compile(
        r"SEARCH runs USING INDEX runs_workflow_status_created \(workflow=\? AND status="
    ),
    # the children of failed or cancelled runs (a statement every such batch runs)
    "active_children": re.compile(r"SEARCH runs USING INDEX runs_parent \(parent_run_id=\?\)"),
    "run_ids_by_prefix": re.compile(
        r"SEARCH runs USING COVERING INDEX sqlite_autoindex_runs_1 \(id>\? AND id<\?\)"
    ),
}


def violations(name: str, plan: list[str]) -> list[str]:
    """What is wrong with a statement's plan (its EXPLAIN QUERY PLAN lines)."""
    found = []
    expected = SEARCHES.get(name)
    # a subquery's rows, made by a co-routine of the plan (whose own lines are checked too)
    coroutines = {line.split()[1] for line in plan if line.startswith("CO-ROUTINE ")}
    for line in plan:
        if "VIRTUAL TABLE" in line or (expected is not None and expected.search(line)):
            continue  # a parameter's json_each, or the search the statement is there to do
        table_scan = line.startswith("SCAN ") and line.split()[1] not in coroutines
        search_not_by_key = line.startswith("SEARCH ") and not KEYED.search(line)
        listing_sorted = name.startswith("list_runs") and "TEMP B-TREE" in line
        if table_scan or search_not_by_key or listing_sorted:
            found.append(f"{name}: {line}")
    if expected is not None and not any(expected.search(line) for line in plan):
        found.append(f"{name}: no line like {expected.pattern!r}")
    return found


class Explaining:
    """A connection that runs EXPLAIN QUERY PLAN of each of the engine's named statements
    before the statement itself, and keeps ``(name, plan lines)``."""

    def __init__(self, conn: sqlite3.Connection, names: dict[str, str], seen: list[Any]) -> None:
        self._conn = conn
        self._names = names
        self._seen = seen

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._conn, attribute)

    def execute(self, statement: str, params: Any = ()) -> sqlite3.Cursor:
        name = self._names.get(statement)
        if name is not None:
            rows = self._conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
            self._seen.append((name, [row[3] for row in rows]))
        return self._conn.execute(statement, params)


def analyze(path: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(params=list(STATES))
def database(request: pytest.FixtureRequest, db_path: str) -> Iterator[tuple[str, SqliteEngine]]:
    engine = SqliteEngine(db_path)
    app = App(engine=engine, workflows=[one, mapped])
    try:
        app.start_many(one, [{"n": -n} for n in range(FINISHED)])
        app.start_many(mapped, [[3, 4]] * MAP_HISTORY)
        while tasks := engine.claim_tasks(QUEUE, 500, instance_id=INSTANCE, workflows=WORKFLOWS):
            engine.finish_tasks(outcomes(tasks))
        if request.param == "analyzed-before-backlog":
            analyze(db_path)
        app.start_many(mapped, [[1, 2]] * MAP_RUNS)
        app.start_many(one, [{"n": n} for n in range(BACKLOG)])
        if request.param == "analyzed-with-backlog":
            analyze(db_path)
        yield request.param, engine
    finally:
        app.close()


def test_statements_search_by_key_whatever_the_statistics(
    database: tuple[str, SqliteEngine],
) -> None:
    state, engine = database
    seen: list[tuple[str, list[str]]] = []
    names = {text: name for name, text in engine._queries.items()}
    real_conn, real_writer = engine._conn, engine._writer
    engine._conn = lambda: Explaining(real_conn(), names, seen)  # type: ignore[method-assign]
    engine._writer = lambda: Explaining(real_writer(), names, seen)  # type: ignore[method-assign]
    try:
        tasks = engine.claim_tasks(QUEUE, LIMIT, instance_id=INSTANCE, workflows=WORKFLOWS)
        assert len(tasks) == LIMIT
        assert engine.still_running([t.id for t in tasks]) == {t.id for t in tasks}
        assert engine.next_due_in([QUEUE], WORKFLOWS) is not None
        assert engine.finish_tasks(outcomes(tasks)).accepted == LIMIT
        for status, workflow in [
            (None, None),
            (RunStatus.PENDING, None),
            (RunStatus.FAILED, None),
            (None, one.name),
            (None, mapped.name),
            (RunStatus.PENDING, one.name),
            (RunStatus.COMPLETED, mapped.name),
        ]:
            assert len(engine.list_runs(status=status, workflow=workflow, limit=LIST_LIMIT)) == (
                LIST_LIMIT
            )
        assert engine.get_run(tasks[0].run_id) is not None
        found = engine.run_ids_with_prefix(tasks[0].run_id[:8], limit=LIST_LIMIT)
        assert len(found) == LIST_LIMIT  # (made within a minute: they share their first 8)
    finally:
        del engine._conn, engine._writer
    ran = {name for name, _ in seen}
    assert {
        "claim_tasks", "claimed_task_inputs", "next_due",
        "running_tasks_still_running", "lock_runs", "complete_tasks", "retry_tasks",
        "fail_tasks", "update_runs", "list_runs", "list_runs_by_status", "list_runs_by_workflow",
        "list_runs_by_status_and_workflow", "get_run", "run_ids_by_prefix",
    } <= ran, ran  # fmt: skip
    problems = [
        f"{problem}\n    plan: {' | '.join(plan)}"
        for name, plan in seen
        for problem in violations(name, plan)
    ]
    assert not problems, f"[{state}: {STATES[state]}]\n" + "\n".join(problems)
