"""What waits for the write-ahead log to reach the disk: a start and an outcome do (a start that
returned and an outcome recorded survive a crash of the server); a claim does not (a crash may
forget it, and its task runs again, as after its worker's crash: see claim_tasks)."""

from __future__ import annotations

import psycopg
import pytest

from pypgflow import Workflow
from pypgflow.app import App

pytestmark = pytest.mark.timeout(30)


def test_a_claim_alone_commits_without_waiting_for_the_disk(pg_url: str) -> None:
    flow = Workflow("durable")
    flow.step(name="a")(lambda input: input)
    app = App(pg_url, workflows=[flow])
    try:
        run = app.start(flow, 1)
        engine = app.engine
        relaxed = [
            name
            for name, text in engine._queries.items()
            if "synchronous_commit" in text.as_string()
        ]
        assert relaxed == ["claim_tasks"]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            with conn.transaction(force_rollback=True):
                claimed = conn.execute(
                    engine._q("claim_tasks"),
                    {
                        "queue": "default",
                        "limit": 10,
                        "instance_id": "x",
                        "workflows": "{durable}",
                        "versions": None,
                    },
                ).fetchall()
                assert [row[1] for row in claimed] == [run.id]
                setting = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
                assert setting == ("off",)  # for the claim's transaction only
            setting = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
            assert setting == ("on",)
    finally:
        app.close()
