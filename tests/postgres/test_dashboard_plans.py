"""The dashboard's page reads (engines/insight.py) keep flat plans, whatever the statistics say.

On the workload and in each state of tests/postgres/test_query_plans.py, every statement a page
of runs, a run's tasks or a workflow's graph and durations runs, planned for its values and for
any (a generic plan), reads an index and touches no more rows of runs or tasks than its page
(of each status) or its sample, and scans no table whole.

The reads bounded by a window or a cap rather than a page (queue and search filters, failure
groups, outcomes, throughput, queue depth, counts: hundreds to thousands of rows) are left out:
on this workload of a few thousand runs a whole-table read is cheaper than their window, and
the planner rightly takes it. bench/dashboard.py measures them beside 1,000,000 runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pypgflow import RunStatus
from pypgflow.app import App
from pypgflow.engines.postgres.engine import PostgresEngine
from pypgflow.insight import RunFilter
from tests.plan_workload import mapped, one
from tests.postgres.test_query_plans import (
    STATES,
    database,  # noqa: F401 (the fixture)
    explained,
    table_of_indexes,
    violations,
)

PAGE = 20
#: rows a statement may touch, by name: its page of each status plus one, or its sample
BOUNDS = {
    "find_runs": len(RunStatus) * (PAGE + 1) * 2,
    "find_runs_of_workflow": len(RunStatus) * (PAGE + 1) * 2,
    # a time range from now: the scan stops at its start, whatever older runs there are
    "find_runs_since": len(RunStatus) * (PAGE + 1) * 2,
    "find_runs_of_workflow_since": len(RunStatus) * (PAGE + 1) * 2,
    "run_tasks": 10,
    "run_task_counts": 10,
    "workflow_step_durations": 50 * 3,
    "workflow_shape": len(RunStatus) * 2,
}


def test_the_dashboard_page_reads_stay_flat(database: tuple[str, App]) -> None:  # noqa: F811
    state, app = database
    engine = app.engine
    assert isinstance(engine, PostgresEngine)
    indexes = table_of_indexes(engine.url)
    where = f"[{state}: {STATES[state]}]"
    now = datetime.now(UTC)
    pages = [
        RunFilter(),
        RunFilter(statuses=(RunStatus.FAILED,)),
        RunFilter(statuses=(RunStatus.PENDING, RunStatus.COMPLETED)),
        RunFilter(workflow=one.name),
        RunFilter(workflow=mapped.name, statuses=(RunStatus.COMPLETED,)),
        RunFilter(created_after=now),
        RunFilter(statuses=(RunStatus.COMPLETED,), created_before=now - timedelta(days=1)),
        RunFilter(workflow=one.name, created_after=now),
    ]
    with explained(engine) as seen:
        for where_runs in pages:
            page = engine.find_runs(where_runs, limit=PAGE)
            if page.next_cursor:
                following = engine.find_runs(where_runs, limit=PAGE, cursor=page.next_cursor)
                assert not {r.id for r in following.runs} & {r.id for r in page.runs}
        first = engine.find_runs(RunFilter(workflow=mapped.name), limit=1).runs[0]
        assert engine.run_tasks(first.id)
        assert engine.run_task_counts(first.id)
    stats = {}
    with explained(engine) as sampled:
        for name in (one.name, mapped.name):
            stats[name] = engine.workflow_stats(name)
    assert stats[mapped.name].steps
    assert stats[one.name].durations
    problems: list[str] = []
    for name, params, plan in [
        *seen,
        *((n, p, q) for n, p, q in sampled if n.split(" ")[0] in BOUNDS),
    ]:
        bound = BOUNDS[name.split(" ")[0]]
        problems += violations(plan, bound=bound, what=f"{name} {params} {where}", indexes=indexes)
    assert not problems, "\n\n".join(problems)
