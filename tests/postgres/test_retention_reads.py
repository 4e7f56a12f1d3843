"""A retention batch reads what it deletes, not the history beside it.

The leader prunes in passes of bounded batches, each reading on from where the one before
stopped; the last batch of a pass, and every batch of a pass that finds nothing old enough,
ends at the cutoff. Here a history of finished runs, all younger than the cutoff, is loaded as
bench/scale.py loads it (in SQL, shaped as the engine leaves runs), and the engine's prune
statement is run under ``EXPLAIN (ANALYZE, BUFFERS)``, planned for its values and generically
(the leader's connection may prepare it). A batch that finds nothing may read a handful of
pages, never the index entries of every finished run (a scan bounded by a row comparison read
them all: about a second at ten million runs); a batch among many old runs reads its thousand
in order and stops, with statistics or without (without them the planner would read every old
run and sort them).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pypgflow.app import App
from pypgflow.engines.postgres.engine import PostgresEngine
from tests.postgres.test_query_plans import (
    analyze,
    explained,
    nodes,
    table_of_indexes,
    violations,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scale

pytestmark = pytest.mark.timeout(120)

#: finished runs loaded (50 ms apart: the newest a minute old, the oldest about 26 minutes)
HISTORY = 30_000
#: the leader's batch
BATCH = 1000
#: pages a batch that deletes nothing may read: index descents and the end of each range.
#: The history's entries in runs_status_created alone take about 190 pages.
PAGES = 40


def pages_read(plan: dict[str, Any]) -> int:
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


def pages_of_range_scans(plan: dict[str, Any]) -> int:
    """Pages read by the scans of runs_status_created (the statuses' ranges)."""
    return sum(
        int(n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0))
        for n in nodes(plan["Plan"])
        if n.get("Index Name") == "runs_status_created"
    )


@pytest.fixture(params=[True, False], ids=["analyzed", "no-statistics"])
def history(request: pytest.FixtureRequest, pg_url: str) -> Iterator[PostgresEngine]:
    """An engine on a database holding the history, analyzed or never."""
    app = App(pg_url, workflows=[scale.one_step])
    try:
        scale.load_history(pg_url, HISTORY)
        if request.param:
            analyze(pg_url)
        engine = app.engine
        assert isinstance(engine, PostgresEngine)
        yield engine
    finally:
        app.close()


def prune_plans(
    engine: PostgresEngine, older_than: float, after: Any = None
) -> tuple[int, Any, list[dict[str, Any]]]:
    """One batch of retention as the leader runs it, and the plans of its prune statement."""
    with explained(engine) as seen:
        count, position = engine.prune_runs(
            completed_before=older_than, failed_before=older_than, batch=BATCH, after=after
        )
    plans = [plan for name, _, plan in seen if name.startswith("prune_runs")]
    assert len(plans) == 2  # planned for its values, and generically
    return count, position, plans


def test_a_batch_that_finds_nothing_old_enough_reads_a_few_pages(
    history: PostgresEngine,
) -> None:
    count, _, plans = prune_plans(history, older_than=3600.0)
    assert count == 0
    _, _, from_a_position = prune_plans(
        history, older_than=3600.0, after={"completed": "-infinity", "failed": "-infinity"}
    )
    for plan in plans + from_a_position:
        assert any("Index Name" in n for n in nodes(plan["Plan"])), "read through an index"
        assert pages_read(plan) <= PAGES, f"read {pages_read(plan)} pages to find nothing"


def test_a_batch_reads_its_runs_in_order_and_stops_at_its_size(
    history: PostgresEngine,
) -> None:
    """About 19,000 runs are old enough: each batch reads a thousand of them, oldest first, and
    the next one reads on from where it stopped, whatever the statistics say."""
    indexes = table_of_indexes(history.url)
    position = None
    deleted: list[int] = []
    scanned: list[int] = []
    for _ in range(4):
        count, position, plans = prune_plans(history, older_than=600.0, after=position)
        deleted.append(count)
        for plan in plans:
            assert violations(plan, bound=3 * BATCH, what="prune_runs", indexes=indexes) == []
        scanned.append(pages_of_range_scans(plans[0]))
    assert deleted == [BATCH] * 4
    # read on from the position: not over the entries of the runs deleted before (they stay
    # until a VACUUM), which would make each batch of a pass cost more than the one before
    assert max(scanned[1:]) <= 1.25 * scanned[0], scanned
    with psycopg.connect(history.url) as conn:
        row = conn.execute(
            "SELECT count(*), min(created_at) FILTER (WHERE status = 'completed')"
            " FROM pypgflow.runs"
        ).fetchone()
    assert row is not None
    assert row[0] == HISTORY - 4 * BATCH
    assert row[1] > position["completed"]  # the oldest went first
