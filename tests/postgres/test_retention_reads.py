"""A retention batch reads what it deletes, not the history beside it.

The leader prunes in passes of bounded batches, each reading on from where the one before
stopped; the last batch of a pass, and every batch of a pass that finds nothing old enough,
ends at the cutoff. Here a history of finished runs, all younger than the cutoff, is loaded as
bench/scale.py loads it (in SQL, shaped as the engine leaves runs), and the prune statement is
run under ``EXPLAIN (ANALYZE, BUFFERS)``, planned for its values and generically (the leader's
connection may prepare it): it may read a handful of pages, never the index entries of every
finished run. A scan bounded by a row comparison read them all (about a second at ten million
runs) in each such batch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pypgflow.app import App
from pypgflow.engines.postgres.engine import PostgresEngine
from tests.postgres.test_query_plans import analyze, explain, explain_generic, nodes

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scale

pytestmark = pytest.mark.timeout(120)

#: finished runs loaded (50 ms apart: the newest a minute old, the oldest about 26 minutes)
HISTORY = 30_000
#: pages a batch that deletes nothing may read: index descents and the end of each range.
#: The history's entries in runs_status_created alone take about 190 pages.
PAGES = 40


def pages_read(plan: dict[str, Any]) -> int:
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


def deleted(plan: dict[str, Any]) -> int:
    return int(plan["Plan"]["Actual Rows"])


@pytest.mark.parametrize("statistics", [True, False], ids=["analyzed", "no-statistics"])
def test_a_batch_that_finds_nothing_old_enough_reads_a_few_pages(
    pg_url: str, statistics: bool
) -> None:
    app = App(pg_url, workflows=[scale.one_step])
    try:
        engine = app.engine
        assert isinstance(engine, PostgresEngine)
        scale.load_history(pg_url, HISTORY)
        if statistics:
            analyze(pg_url)
        hour = 3600.0
        for params in (
            # the first batch of a pass, and one read on from a position
            {"completed_after": None, "cancelled_after": None, "failed_after": None},
            {"completed_after": "-infinity", "cancelled_after": None, "failed_after": "-infinity"},
        ):
            values = {"completed_before": hour, "failed_before": hour, "batch": 1000, **params}
            with psycopg.connect(pg_url) as conn:
                for kind, explainer in (("", explain), (" (generic plan)", explain_generic)):
                    plan = explainer(conn, engine._q("prune_runs"), values)
                    conn.rollback()
                    assert deleted(plan) == 0
                    scans = [n for n in nodes(plan["Plan"]) if "Index Name" in n]
                    assert scans, "the runs are found through an index"
                    assert pages_read(plan) <= PAGES, (
                        f"prune_runs{kind} read {pages_read(plan)} pages to find nothing"
                    )
        # and a batch that does find old runs deletes them, oldest first, reading on from there
        oldest = min(r.created_at for r in app.list_runs(limit=HISTORY))
        count, position = engine.prune_runs(
            completed_before=hour / 4, failed_before=hour / 4, batch=1000
        )
        assert count == 1000
        assert position["completed"] is not None
        assert position["completed"] >= oldest
        assert len(app.list_runs(limit=HISTORY)) == HISTORY - 1000
    finally:
        app.close()
