"""Real worker processes on a real database, PostgreSQL or a SQLite file shared by the processes:
sharing a queue with each step run once, waking up at once for a new run (LISTEN/NOTIFY; SQLite:
PRAGMA data_version), and shutting down gracefully, handing back the steps that outlive the
shutdown timeout. What only the worker's signal handling decides runs on PostgreSQL alone."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pypgflow.app import App, Run
from pypgflow.status import RunStatus, StepStatus
from tests.integration.flows import read_log
from tests.integration.helpers import (
    WorkerProcess,
    executions,
    postgres_only,
    task_rows,
    wait_all_finished,
    wait_for,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SpawnWorker = Callable[..., WorkerProcess]


def test_two_worker_processes_share_a_queue_and_run_each_step_once(
    app: App, database_url: str, log_path: Path, spawn_worker: SpawnWorker
) -> None:
    workers = [spawn_worker("it-a"), spawn_worker("it-b")]
    wait_ready(app, workers)

    log = str(log_path)
    ones = app.start_many("it_one", [{"log": log, "i": i, "sleep": 0.01} for i in range(200)])
    threes = app.start_many("it_three", [{"log": log, "i": i, "sleep": 0.01} for i in range(20)])
    wait_all_finished(app, len(ones) + len(threes), timeout=30, workers=workers)

    runs = {r.id: r for r in app.list_runs(limit=1000)}
    assert {r.status for r in runs.values()} == {RunStatus.COMPLETED}
    for run in ones:
        info = runs[run.id]
        assert info.output == {"i": info.input["i"], "steps": ["work"]}
    for run in threes:
        info = runs[run.id]
        assert info.output == {"i": info.input["i"], "steps": ["first", "second", "third"]}

    # Every step ran exactly once, at its first attempt, and the database says who ran it.
    expected = {(r.id, "work") for r in ones} | {
        (r.id, step) for r in threes for step in ("first", "second", "third")
    }
    begun = executions(log_path)
    assert set(begun) == expected
    assert [key for key, n in begun.items() if n != 1] == []
    events = [e for e in read_log(log_path) if e["event"] == "begin"]
    assert {e["attempt"] for e in events} == {1}
    ran_on = {(e["run"], e["step"]): e["instance"] for e in events}
    tasks = task_rows(database_url)
    assert len(tasks) == len(expected)
    for run_id, step, status, attempt, instance in tasks:
        assert (status, attempt) == ("completed", 1), (run_id, step)
        assert instance == ran_on[(run_id, step)]

    # Both processes did a fair share, each in its own process.
    per_instance = collections.Counter(e["instance"] for e in events)
    print(f"steps per worker: {dict(per_instance)}")
    assert set(per_instance) == {"it-a", "it-b"}
    assert min(per_instance.values()) >= 0.2 * len(expected), per_instance
    assert {e["pid"] for e in events} == {w.pid for w in workers}

    # SIGTERM: both exit 0 within a few seconds and deregister.
    for worker in workers:
        worker.signal()
    assert [w.wait(timeout=10) for w in workers] == [0, 0]
    assert app.instances() == []
    for worker in workers:
        assert "Traceback" not in worker.stderr()
        assert " ERROR " not in worker.stderr()


def test_an_idle_worker_starts_a_new_run_on_notification_not_on_poll(
    app: App, log_path: Path, spawn_worker: SpawnWorker
) -> None:
    # With a 5 s poll interval, only a notification can explain a start within a second:
    # LISTEN/NOTIFY on PostgreSQL, the worker's PRAGMA data_version poll on SQLite.
    worker = spawn_worker("it-idle", poll_interval=5.0)
    wait_ready(app, [worker])
    time.sleep(0.3)  # let the worker's first claim find nothing and go to sleep

    latencies: list[float] = []
    for i in range(3):
        started = time.time()
        run = app.start("it_one", {"log": str(log_path), "i": i})

        def first_begin(run: Run = run) -> dict[str, Any] | None:
            events = read_log(log_path)
            return next((e for e in events if e["run"] == run.id and e["event"] == "begin"), None)

        begin = wait_for(
            first_begin,
            timeout=6,
            what=f"the first step of run {i} to begin",
            interval=0.01,
        )
        latencies.append(begin["t"] - started)
        assert run.result(timeout=5) == {"i": i, "steps": ["work"]}
        # Each completion made the worker claim once more and go back to its 5 s sleep, so the
        # next run again finds it idle, a poll far away.
        time.sleep(0.3)

    print(f"start-to-first-step latencies: {[f'{x:.3f}' for x in latencies]}")
    assert max(latencies) < 1.0, latencies
    assert worker.stop(timeout=10) == 0


@postgres_only(
    "SIGTERM handling is the worker's, whatever the engine; that a stopping worker finishes its "
    "steps and records their outcomes is proven on both engines by "
    "tests/contract/test_worker_shutdown.py"
)
def test_sigterm_lets_a_running_step_finish_and_record_its_outcome(
    app: App, database_url: str, log_path: Path, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker("it-graceful", shutdown_timeout=10.0)
    wait_ready(app, [worker])
    run = app.start("it_slow", {"log": str(log_path), "seconds": 2.0})
    wait_for(lambda: executions(log_path), timeout=5, what="the step to begin")

    worker.signal()
    assert worker.wait(timeout=10) == 0
    exited = time.time()

    # The step ran to its end before the process exited, and its outcome was recorded.
    events = [e["event"] for e in read_log(log_path)]
    assert events == ["begin", "end"]
    assert read_log(log_path)[-1]["t"] <= exited
    assert run.status() is RunStatus.COMPLETED
    assert run.result(timeout=0) == {"slept": "it-graceful"}
    (step,) = app.get_run(run.id).steps
    assert (step.status, step.attempts, step.instance_id) == (
        StepStatus.COMPLETED,
        1,
        "it-graceful",
    )
    assert task_rows(database_url) == [(run.id, "nap", "completed", 1, "it-graceful")]
    assert "received SIGTERM" in worker.stderr()
    assert app.instances() == []


# A sync and an async step on PostgreSQL; on SQLite the sync one: how a step is interrupted is the
# worker's business, the hand-back the engine's.
@pytest.mark.parametrize(
    ("database_url", "workflow"),
    [("postgres", "it_slow"), ("postgres", "it_slow_async"), ("sqlite", "it_slow")],
    indirect=["database_url"],
)
def test_a_step_outliving_the_shutdown_timeout_is_handed_back_and_completed_elsewhere(
    app: App, database_url: str, log_path: Path, spawn_worker: SpawnWorker, workflow: str
) -> None:
    first = spawn_worker("it-first", shutdown_timeout=1.0)
    wait_ready(app, [first])
    # 10 s on the first worker only: the second one finishes it at once.
    run = app.start(workflow, {"log": str(log_path), "seconds": 10.0, "slow_on": "it-first"})
    wait_for(lambda: executions(log_path), timeout=5, what="the step to begin")

    signalled = time.monotonic()
    first.signal()
    assert first.wait(timeout=8) == 0
    assert time.monotonic() - signalled < 6.0  # the shutdown timeout, not the 10 s step

    # The step saw its cancellation; the task is queued again with the attempt not counted.
    assert [e["event"] for e in read_log(log_path)] == ["begin", "cancelled"]
    (step_name,) = app.workflow(workflow).steps
    assert task_rows(database_url) == [(run.id, step_name, "queued", 0, "it-first")]
    assert run.status() in (RunStatus.PENDING, RunStatus.RUNNING)
    assert "handed 1 unfinished steps back" in first.stderr()
    assert app.instances() == []

    second = spawn_worker("it-second")
    assert run.result(timeout=15) == {"slept": "it-second"}
    begins = [(e["instance"], e["attempt"]) for e in read_log(log_path) if e["event"] == "begin"]
    assert begins == [("it-first", 1), ("it-second", 1)]
    (step,) = app.get_run(run.id).steps
    assert (step.status, step.attempts, step.instance_id, step.errors) == (
        StepStatus.COMPLETED,
        1,
        "it-second",
        (),
    )
    assert second.stop(timeout=10) == 0
    assert app.instances() == []


@pytest.mark.parametrize("workflow", ["it_slow", "it_slow_async"])
@postgres_only(
    "a second SIGTERM is the worker's signal handling; the hand-back it ends in is proven on "
    "SQLite by test_a_step_outliving_the_shutdown_timeout_is_handed_back_and_completed_elsewhere"
)
def test_a_second_sigterm_cancels_running_steps_and_hands_them_back(
    app: App, database_url: str, log_path: Path, spawn_worker: SpawnWorker, workflow: str
) -> None:
    first = spawn_worker("it-impatient", shutdown_timeout=30.0)
    wait_ready(app, [first])
    run = app.start(workflow, {"log": str(log_path), "seconds": 10.0, "slow_on": "it-impatient"})
    wait_for(lambda: executions(log_path), timeout=5, what="the step to begin")

    first.signal()
    wait_for(lambda: "received SIGTERM" in first.stderr(), timeout=5, what="the first SIGTERM")
    signalled = time.monotonic()
    first.signal()  # an impatient operator: stop now
    assert first.wait(timeout=8) == 0
    assert time.monotonic() - signalled < 6.0
    assert [e["event"] for e in read_log(log_path)] == ["begin", "cancelled"]
    assert "cancelling running steps now" in first.stderr()

    # Not completed, not lost: queued again for the next worker, the attempt not counted.
    (step_name,) = app.workflow(workflow).steps
    assert task_rows(database_url) == [(run.id, step_name, "queued", 0, "it-impatient")]
    second = spawn_worker("it-patient")
    assert run.result(timeout=15) == {"slept": "it-patient"}
    assert second.stop(timeout=10) == 0
