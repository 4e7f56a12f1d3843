"""A worker process keeps going across a restart of the PostgreSQL server.

Opt-in (PYPGFLOW_TEST_RESTART_DB=1): restarting the server breaks every other session using it
(see tests/integration/server.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pypgflow.app import App, Run
from tests.integration.flows import read_log
from tests.integration.helpers import (
    WorkerProcess,
    assert_each_step_ran_once,
    executions,
    postgres_only,
    wait_all_finished,
    wait_for,
    wait_ready,
)
from tests.integration.server import local_cluster, needs_restart_rights

pytestmark = [
    pytest.mark.slow,
    pytest.mark.restart_db,
    postgres_only("restarts the PostgreSQL server: a SQLite file has no server to restart"),
    pytest.mark.timeout(180),
    needs_restart_rights,
]


def test_worker_keeps_going_across_a_server_restart(
    app: App, database_url: str, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    cluster = local_cluster()
    worker = spawn_worker("it-restart", poll_interval=0.5)
    wait_ready(app, [worker])
    log = str(log_path)

    # Enough work that steps are running and outcomes are buffered when the server goes away.
    ones: list[Run] = app.start_many(
        "it_one", [{"log": log, "i": i, "sleep": 0.2} for i in range(60)]
    )
    threes: list[Run] = app.start_many(
        "it_three", [{"log": log, "i": i, "sleep": 0.2} for i in range(10)]
    )
    wait_for(lambda: executions(log_path), timeout=10, what="the first steps to begin")
    restarted = time.time()
    cluster.restart()
    back = time.time()

    ones += app.start_many("it_one", [{"log": log, "i": 100 + i} for i in range(20)])
    threes += app.start_many("it_three", [{"log": log, "i": 100 + i} for i in range(5)])
    wait_all_finished(app, len(ones) + len(threes), timeout=60, workers=[worker])
    assert_each_step_ran_once(app, database_url, log_path, ones, threes)
    # The restart really fell in the middle of the first batch.
    first_batch = {r.id for r in ones[:60]} | {r.id for r in threes[:10]}
    begins = [e["t"] for e in read_log(log_path) if e["run"] in first_batch]
    assert min(begins) < restarted
    assert max(begins) > back

    stderr = worker.stderr()
    assert "LISTEN connection lost" in stderr
    assert "Traceback" not in stderr
    assert worker.alive()
    assert worker.stop(timeout=10) == 0
    assert app.instances() == []
