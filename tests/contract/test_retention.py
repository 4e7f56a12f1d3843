"""Retention: the leader deletes finished runs past their age (completed and cancelled after 7
days, failed after 30 by default) with their tasks, in bounded batches; and instances
offline for over an hour. Runs are aged here by moving their finished_at (and created_at) back
in the database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest

from pypgflow import Retention, Workflow
from pypgflow.app import App
from pypgflow.leader import Leader
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(120)

DAY = 86400.0


def flow() -> Workflow:
    two = Workflow("two_steps")
    two.step(name="first")(lambda input: input)
    two.step(name="second")(lambda first: first)
    return two


class Database:
    """Direct access to the test database, whichever the engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite:")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                with conn:
                    return conn.execute(statement.replace("%s", "?"), params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            pg.execute("SET search_path TO pypgflow")
            cursor = pg.execute(statement, params)
            return cursor.fetchall() if cursor.description is not None else []

    def finish(self, run_ids: Sequence[str], status: str, days_ago: float) -> None:
        """Mark runs (and their tasks: no worker claims them) finished ``days_ago`` days ago,
        created a minute before that."""
        for table, key in (("runs", "id"), ("tasks", "run_id")):
            if self.sqlite:
                self.execute(
                    f"UPDATE {table} SET status = %s, "
                    "finished_at = (julianday('now') - 2440587.5) * 86400.0 - %s, "
                    "created_at = (julianday('now') - 2440587.5) * 86400.0 - %s - 60 "
                    f"WHERE {key} IN (SELECT value FROM json_each(%s))",
                    (status, days_ago * DAY, days_ago * DAY, _json_list(run_ids)),
                )
            else:
                self.execute(
                    f"UPDATE {table} SET status = %s, "
                    "finished_at = now() - %s * interval '1 second', "
                    "created_at = now() - (%s + 60) * interval '1 second' "
                    f"WHERE {key} = ANY(%s::uuid[])",
                    (status, days_ago * DAY, days_ago * DAY, list(run_ids)),
                )

    def count(self, table: str) -> int:
        return int(self.execute(f"SELECT count(*) FROM {table}")[0][0])

    def run_ids(self) -> set[str]:
        return {str(row[0]) for row in self.execute("SELECT id FROM runs")}


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))


@pytest.fixture
def db(database_url: str) -> Database:
    return Database(database_url)


@pytest.fixture
def runs(make_app: Callable[..., App], db: Database) -> tuple[App, dict[str, list[str]]]:
    """2500 completed or cancelled runs 8 days old, failed runs 10 and 40 days old, recent
    finished runs, unfinished ones: each with two steps and a task."""
    app = make_app(flow())

    def start(count: int) -> list[str]:
        return [run.id for run in app.start_many("two_steps", range(count))]

    groups = {
        "old_completed": start(2000),
        "old_cancelled": start(500),
        "failed_10_days": start(5),
        "failed_40_days": start(5),
        "recent_completed": start(5),
        "recent_failed": start(5),
        "pending": start(5),
    }
    db.finish(groups["old_completed"], "completed", 8)
    db.finish(groups["old_cancelled"], "cancelled", 8)
    db.finish(groups["failed_10_days"], "failed", 10)
    db.finish(groups["failed_40_days"], "failed", 40)
    db.finish(groups["recent_completed"], "completed", 0.5)
    db.finish(groups["recent_failed"], "failed", 6.5)
    return app, groups


def test_prune_runs_deletes_old_runs_in_bounded_batches(
    runs: tuple[App, dict[str, list[str]]], db: Database
) -> None:
    app, groups = runs
    total = sum(len(ids) for ids in groups.values())
    assert db.count("runs") == total
    assert db.count("tasks") == total
    batches = []
    position = None
    while True:
        deleted, position = app.engine.prune_runs(
            completed_before=7 * DAY, failed_before=30 * DAY, batch=1000, after=position
        )
        batches.append(deleted)
        if deleted < 1000:
            break
    assert batches == [1000, 1000, 505]  # 2500 old completed/cancelled + 5 failed 40 days ago
    kept = {
        *groups["failed_10_days"],
        *groups["recent_completed"],
        *groups["recent_failed"],
        *groups["pending"],
    }
    assert db.run_ids() == kept
    # Tasks went with their runs, and only theirs.
    assert db.count("tasks") == len(kept)
    assert {info.id for info in app.list_runs(limit=10_000)} == kept
    assert (
        app.engine.prune_runs(completed_before=7 * DAY, failed_before=30 * DAY, batch=1000)[0] == 0
    )
    # Failed runs are kept until their own, longer age.
    assert (
        app.engine.prune_runs(completed_before=7 * DAY, failed_before=9 * DAY, batch=1000)[0] == 5
    )
    assert db.run_ids() == kept - set(groups["failed_10_days"])


def test_a_retention_pass_reports_its_batches(
    runs: tuple[App, dict[str, list[str]]], db: Database
) -> None:
    app, groups = runs
    leader = Leader(app, retention=Retention(batch=1000, pause=0.01))
    pruned = asyncio.run(leader.prune(while_leader=False))
    assert (pruned.runs, pruned.batches) == (2505, 3)
    assert db.count("runs") == 20
    # Shorter ages, in seconds or timedeltas.
    leader = Leader(app, retention=Retention(completed=3600, failed=DAY, batch=4, pause=0))
    pruned = asyncio.run(leader.prune(while_leader=False))
    assert (pruned.runs, pruned.batches) == (15, 4)  # 5 + 5 + 5 failed ones, 4 at a time
    assert db.run_ids() == set(groups["pending"])


def test_the_leader_prunes_on_its_own(make_app: Callable[..., App], db: Database) -> None:
    app = make_app(flow())
    old = [run.id for run in app.start_many("two_steps", range(30))]
    db.finish(old[:20], "completed", 8)
    db.finish(old[20:], "failed", 8)
    with running_worker(app, lease_ttl=2.0, retention=Retention(batch=7, pause=0.0)) as worker:
        _wait(lambda: db.count("runs") == 10, 10.0)
        assert worker.is_leader
    assert db.run_ids() == set(old[20:])  # failed ones are younger than 30 days


def test_instances_offline_for_over_an_hour_are_removed(
    make_app: Callable[..., App], db: Database
) -> None:
    app = make_app()
    engine = app.engine
    for name in ("recent", "silent-59m", "silent-2h"):
        engine.register_instance(name, hostname="h", pid=1, queues={"default": 1})
    if db.sqlite:
        db.execute(
            "UPDATE instances SET heartbeat_at = heartbeat_at - 59 * 60 WHERE id = 'silent-59m'"
        )
        db.execute("UPDATE instances SET heartbeat_at = heartbeat_at - 7200 WHERE id = 'silent-2h'")
    else:
        db.execute(
            "UPDATE instances SET heartbeat_at = now() - interval '59 minutes' "
            "WHERE id = 'silent-59m'"
        )
        db.execute(
            "UPDATE instances SET heartbeat_at = now() - interval '2 hours' WHERE id = 'silent-2h'"
        )
    assert engine.prune_instances(offline_for=3600) == 1
    assert {i.instance_id for i in app.instances()} == {"recent", "silent-59m"}
    pruned = asyncio.run(Leader(app).prune(while_leader=False))
    assert pruned.instances == 0


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
