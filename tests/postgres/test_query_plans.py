"""Every hot-path and list statement keeps a flat plan, whatever the statistics say.

A user's database has statistics of any age: ANALYZEd while a backlog waited, ANALYZEd when no
run was pending (then a backlog arrived: the statistics say pending runs are rare), or none at
all yet (autovacuum has not come by; it never does on a server running with it off). In each of
these states the statements are run under ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` with the
parameters the engine gives them, planned for those values and, as a prepared statement may be
(psycopg prepares a statement run five times on a connection), for any values (a generic plan):
the claim (in a transaction rolled back), then a real claim and the recording of its outcomes
(every statement of ``finish_tasks``), the worker's checks (``still_running``, ``next_due_in``),
``list_runs`` with and without filters, and ``get_run``.

No plan node that reads runs or tasks may touch more rows (rows returned, and rows read
then removed by a filter, over every loop) than a small multiple of what its statement is about
(the claim's batch, the outcomes recorded, the listing's limit), nor scan a whole table: a plan
whose cost grows with the backlog or the history fails here, however fast it is on a small
database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pypgflow import RunStatus
from pypgflow.app import App
from pypgflow.engines.postgres.engine import PostgresEngine
from tests.plan_workload import WORKFLOWS, mapped, one, outcomes

pytestmark = pytest.mark.timeout(60)

SCHEMA = "pypgflow"
TABLES = ("runs", "tasks")
QUEUE = "default"
INSTANCE = "plans"
#: the claim's batch, the runs finished before the backlog, the backlog (one-step runs)
LIMIT = 10
FINISHED = 2000
BACKLOG = 3000
#: map runs (two elements, then a step over their results) finished, and in the backlog
MAP_HISTORY = 30
MAP_RUNS = 2
#: the limit of the listings
LIST_LIMIT = 20
#: how many times the rows its statement is about a plan node may touch: the batch (a claim,
#: outcomes), the limit (a listing, which reads up to the limit from each status by workflow)
BOUND = 3
LIST_BOUND = len(RunStatus)

STATES = {
    "analyzed-with-backlog": "ANALYZE with the backlog present",
    "analyzed-before-backlog": "ANALYZE with no pending run, then a backlog",
    "no-statistics": "never analyzed",
}


# -- plans -----------------------------------------------------------------------------------------


def nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a JSON plan, init plans, subplans and CTEs included."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def touched(node: Mapping[str, Any]) -> float:
    """The rows a node handled: returned or removed by a filter (EXPLAIN reports both per
    loop), over all its loops."""
    per_loop = (
        node.get("Actual Rows", 0)
        + node.get("Rows Removed by Filter", 0)
        + node.get("Rows Removed by Index Recheck", 0)
        + node.get("Rows Removed by Join Filter", 0)
    )
    return float(per_loop * node.get("Actual Loops", 0))


def describe(plan: Mapping[str, Any], depth: int = 0) -> str:
    """A plan as short indented lines, for failure messages."""
    parts = [node_label(plan)]
    for key in ("Index Cond", "Filter", "Join Filter", "Hash Cond"):
        if key in plan:
            parts.append(f"{key}: {plan[key]}")
    parts.append(f"rows={plan.get('Actual Rows')} loops={plan.get('Actual Loops')}")
    if plan.get("Rows Removed by Filter"):
        parts.append(f"removed by filter={plan['Rows Removed by Filter']}")
    if plan.get("Rows Removed by Join Filter"):
        parts.append(f"removed by join filter={plan['Rows Removed by Join Filter']}")
    lines = ["  " * depth + "  ".join(parts)]
    for child in plan.get("Plans", []):
        lines.append(describe(child, depth + 1))
    return "\n".join(lines)


def node_label(node: Mapping[str, Any]) -> str:
    label = str(node["Node Type"])
    if "Relation Name" in node:
        label += f" on {node['Relation Name']}"
    if "Index Name" in node:
        label += f" using {node['Index Name']}"
    return label


def violations(
    plan: Mapping[str, Any], *, bound: int, what: str, indexes: Mapping[str, str]
) -> list[str]:
    """What is wrong with a plan: a node reading runs or tasks that scans a table, or
    touches more than ``bound`` rows."""
    found = []
    for node in nodes(plan["Plan"]):
        table = node.get("Relation Name") or indexes.get(node.get("Index Name", ""))
        if table not in TABLES:
            continue
        if "Seq Scan" in node["Node Type"]:
            found.append(f"{what}: a sequential scan of {table}\n{describe(plan['Plan'])}")
        elif touched(node) > bound:
            found.append(
                f"{what}: {node_label(node)} touched {touched(node):.0f} rows of {table}, more "
                f"than {bound}\n{describe(plan['Plan'])}"
            )
    return found


def table_of_indexes(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = %s", (SCHEMA,)
        ).fetchall()
    return dict(rows)


def explain(conn: psycopg.Connection[Any], statement: Any, params: Any) -> dict[str, Any]:
    """The plan of a statement as the engine runs it (planned for these parameter values)."""
    query = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + statement
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return dict(row[0][0])


def explain_generic(conn: psycopg.Connection[Any], statement: Any, params: Any) -> dict[str, Any]:
    """The plan of a statement prepared and planned for any parameter values: psycopg prepares
    a statement run five times on a connection, and PostgreSQL may then keep a generic plan.
    To be run in a transaction or savepoint rolled back afterwards (SET LOCAL)."""
    text = re.sub(r"--[^\n]*", "", statement.as_string(conn))
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    text = re.sub(r"%\((\w+)\)[sb]", number, text)
    conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    conn.execute(f"PREPARE explained_generic AS {text}")  # type: ignore[arg-type]
    try:
        cursor = psycopg.ClientCursor(conn)  # the values as literals: EXECUTE takes no $n
        arguments = f"({', '.join(['%s'] * len(names))})" if names else ""
        cursor.execute(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE explained_generic{arguments}",
            [(params or {})[name] for name in names],
        )
        row = cursor.fetchone()
    finally:
        conn.execute("DEALLOCATE explained_generic")
    assert row is not None
    return dict(row[0][0])


@contextmanager
def explained(engine: PostgresEngine) -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    """Every statement the engine runs in the block is first run under EXPLAIN ANALYZE, planned
    for its parameter values and then for any (a generic plan), each time in a savepoint of the
    engine's transaction rolled back (so it changes nothing), then for real: ``(name, params,
    plan)`` for each plan."""
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    real_fetch, real_execute = engine._fetch, engine._execute

    def plan_of(conn: psycopg.Connection[Any], name: str, params: Any) -> None:
        # A savepoint inside the engine's transaction, or a transaction of its own on a
        # connection in autocommit mode: rolled back either way.
        with conn.transaction(force_rollback=True):
            seen.append((name, params, explain(conn, engine._q(name), params)))
        with conn.transaction(force_rollback=True):
            seen.append(
                (f"{name} (generic plan)", params, explain_generic(conn, engine._q(name), params))
            )

    def fetch(
        conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        plan_of(conn, name, params)
        return real_fetch(conn, name, params)

    def execute(
        conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None
    ) -> None:
        plan_of(conn, name, params)
        real_execute(conn, name, params)

    real_submit = engine._submit

    def submit(
        conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None
    ) -> Callable[[], list[tuple[Any, ...]]]:
        plan_of(conn, name, params)
        return real_submit(conn, name, params)

    engine._fetch = fetch  # type: ignore[method-assign]
    engine._execute = execute  # type: ignore[method-assign]
    engine._submit = submit  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del engine._fetch, engine._execute, engine._submit


# -- the database ----------------------------------------------------------------------------------


def analyze(url: str) -> None:
    """What autovacuum would have done by now (it is off on the test server)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ANALYZE {}, {}").format(*(sql.Identifier(SCHEMA, table) for table in TABLES))
        )


def finish_history(engine: PostgresEngine) -> None:
    """Claim and record every due task, as workers would have: the finished runs."""
    while tasks := engine.claim_tasks(QUEUE, 500, instance_id=INSTANCE, workflows=WORKFLOWS):
        engine.finish_tasks(outcomes(tasks))


def add_backlog(app: App) -> None:
    """Map runs first, so that the first claim takes their elements, then one-step runs."""
    app.start_many(mapped, [[1, 2]] * MAP_RUNS)
    for offset in range(0, BACKLOG, 1000):
        app.start_many(one, [{"n": n} for n in range(offset, min(BACKLOG, offset + 1000))])


@pytest.fixture(params=list(STATES))
def database(request: pytest.FixtureRequest, pg_url: str) -> Iterator[tuple[str, App]]:
    """A database with finished runs (completed, failed, waiting to retry) and a backlog of
    pending one-step and map runs, in each state of its statistics."""
    app = App(pg_url, workflows=[one, mapped])
    try:
        app.start_many(one, [{"n": -n} for n in range(FINISHED)])
        app.start_many(mapped, [[3, 4]] * MAP_HISTORY)
        engine = app.engine
        assert isinstance(engine, PostgresEngine)
        finish_history(engine)
        if request.param == "analyzed-before-backlog":
            analyze(pg_url)
        add_backlog(app)
        if request.param == "analyzed-with-backlog":
            analyze(pg_url)
        yield request.param, app
    finally:
        app.close()


# -- the test --------------------------------------------------------------------------------------


def test_plans_stay_flat_whatever_the_statistics(database: tuple[str, App]) -> None:
    state, app = database
    engine = app.engine
    assert isinstance(engine, PostgresEngine)
    indexes = table_of_indexes(engine.url)
    where = f"[{state}: {STATES[state]}]"

    # The claim, in a transaction rolled back: the backlog stays as it is.
    # as a worker claims: the versions it has the code of, too
    versions = [f"{flow.name}@{flow.version}" for flow in app.workflows.values()]
    params = {
        "queue": QUEUE,
        "limit": LIMIT,
        "instance_id": INSTANCE,
        "workflows": WORKFLOWS,
        "versions": engine._ids(versions),
    }
    problems: list[str] = []
    with psycopg.connect(engine.url) as conn:
        for kind, explainer in (("", explain), (" (generic plan)", explain_generic)):
            plan = explainer(conn, engine._q("claim_tasks"), params)
            conn.rollback()
            claimed = [n for n in nodes(plan["Plan"]) if n.get("Relation Name") == "tasks"]
            assert any(
                n["Node Type"] == "ModifyTable" and n["Actual Rows"] == LIMIT for n in claimed
            )
            problems += violations(
                plan, bound=BOUND * LIMIT, what=f"claim_tasks{kind} {where}", indexes=indexes
            )

    # A real claim (map elements and one-step tasks), and recording its outcomes.
    with explained(engine) as seen:
        tasks = engine.claim_tasks(
            QUEUE, LIMIT, instance_id=INSTANCE, workflows=WORKFLOWS, versions=versions
        )
    assert len(tasks) == LIMIT
    assert len([t for t in tasks if t.workflow == mapped.name]) == 2 * MAP_RUNS
    for name, _, plan in seen:
        problems += violations(plan, bound=BOUND * LIMIT, what=f"{name} {where}", indexes=indexes)

    with explained(engine) as seen:
        assert engine.still_running([t.id for t in tasks]) == {t.id for t in tasks}
        assert engine.next_due_in([QUEUE], WORKFLOWS, versions) is not None
        result = engine.finish_tasks(outcomes(tasks))
    assert result.accepted == len(tasks)
    names = {name for name, _, _ in seen}
    assert {
        "running_tasks_still_running", "next_due", "lock_runs", "complete_tasks", "retry_tasks",
        "fail_tasks", "update_runs", "insert_tasks", "map_outputs",
    } <= names, names  # fmt: skip
    for name, _, plan in seen:
        problems += violations(
            plan, bound=BOUND * len(tasks), what=f"{name} {where}", indexes=indexes
        )

    # Listings stop after their limit, whatever they filter on; a run is read by its id.
    listings: list[tuple[RunStatus | None, str | None, int]] = [
        (None, None, LIST_LIMIT),
        (RunStatus.PENDING, None, LIST_LIMIT),
        (RunStatus.COMPLETED, None, LIST_LIMIT),
        (RunStatus.FAILED, None, LIST_LIMIT),
        (None, one.name, LIST_LIMIT),
        (None, mapped.name, LIST_LIMIT),
        (RunStatus.PENDING, one.name, LIST_LIMIT),
        (RunStatus.FAILED, one.name, LIST_LIMIT),
        (RunStatus.COMPLETED, mapped.name, LIST_LIMIT),
        (RunStatus.RUNNING, mapped.name, MAP_RUNS),  # fewer than the limit: all of them
        (RunStatus.CANCELLED, mapped.name, 0),
    ]
    with explained(engine) as seen:
        for status, workflow, expected in listings:
            found = engine.list_runs(status=status, workflow=workflow, limit=LIST_LIMIT)
            assert len(found) == expected, (status, workflow)
        assert engine.get_run(tasks[0].run_id) is not None
        # runs made within a minute share their first 8 digits: a range of every run here
        found = engine.run_ids_with_prefix(tasks[0].run_id[:8], limit=LIST_LIMIT)
        assert len(found) == LIST_LIMIT
    assert "run_ids_by_prefix" in {name for name, _, _ in seen}
    for name, params, plan in seen:
        problems += violations(
            plan, bound=LIST_BOUND * LIST_LIMIT, what=f"{name} {params} {where}", indexes=indexes
        )
    assert not problems, "\n\n".join(problems)
