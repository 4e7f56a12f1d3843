"""A worker process survives losing its database connections (pg_terminate_backend), and every
run still completes with each step executed and recorded exactly once. PostgreSQL only: a SQLite
file has no server connections to lose."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pypgflow.app import App, Run
from pypgflow.engines.postgres.engine import PostgresEngine
from pypgflow.status import RunStatus
from tests.integration import flows
from tests.integration.helpers import (
    WorkerProcess,
    assert_each_step_ran_once,
    postgres_only,
    query,
    terminate_backends,
    wait_all_finished,
    wait_for,
    wait_ready,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    postgres_only("pg_terminate_backend cuts server connections: SQLite has none"),
]

OTHER_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


def test_worker_survives_its_connections_being_terminated_again_and_again(
    app: App, database_url: str, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    worker = spawn_worker("it-survivor", poll_interval=0.5)
    wait_ready(app, [worker])
    log = str(log_path)

    ones: list[Run] = []
    threes: list[Run] = []
    terminated: list[int] = []
    for round_ in range(6):
        ones += app.start_many(
            "it_one", [{"log": log, "i": 100 * round_ + i, "sleep": 0.02} for i in range(25)]
        )
        threes += app.start_many(
            "it_three", [{"log": log, "i": 100 * round_ + i, "sleep": 0.02} for i in range(5)]
        )
        time.sleep(0.05 + 0.04 * round_)  # land at different points: claiming, running, flushing
        terminated.append(terminate_backends(database_url))
    # The test app's own connections were terminated too: it must cope as well.
    ones += app.start_many("it_one", [{"log": log, "i": 1000 + i} for i in range(10)])

    wait_all_finished(app, len(ones) + len(threes), timeout=40, workers=[worker])
    assert_each_step_ran_once(app, database_url, log_path, ones, threes)
    assert all(n >= 1 for n in terminated), terminated  # the LISTEN connection, at least

    # It noticed, said so, and is still a healthy worker that stops cleanly.
    assert "LISTEN connection lost" in worker.stderr()
    assert "Traceback" not in worker.stderr()
    assert worker.alive()
    assert worker.stop(timeout=10) == 0
    assert app.instances() == []


def test_app_calls_work_at_once_after_its_pooled_connections_were_terminated(
    database_url: str, log_path: Path
) -> None:
    # A busy web process holds several idle pooled connections: here, 4 from the start.
    engine = PostgresEngine(database_url, min_connections=4)
    with App(workflows=flows.ALL, engine=engine) as app:
        app.list_runs()
        wait_for(
            lambda: len(query(database_url, OTHER_BACKENDS)) >= 4,
            timeout=10,
            what="the pool to open its 4 connections",
        )
        assert terminate_backends(database_url) >= 4
        wait_for(lambda: not query(database_url, OTHER_BACKENDS), timeout=5, what="them to be gone")

        started = time.monotonic()
        try:
            run = app.start("it_one", {"log": str(log_path), "i": 1})
        finally:
            elapsed = time.monotonic() - started
        assert elapsed < 2.0
        assert run.status() is RunStatus.PENDING
