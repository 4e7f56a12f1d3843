"""Many instances, as real worker processes on a real database (PostgreSQL, or a SQLite file the
processes share): a worker killed with SIGKILL in the middle of a step has that step rescued, once,
and finished by another within the stale threshold; two workers share a queue fairly. On
PostgreSQL only: a step that kills every worker running it fails as a poison pill; a step still
heartbeating is never rescued (both engines' side of these is proven by tests/contract/
test_rescue.py); a worker cut off from the database (through a TCP proxy) abandons its steps,
which another worker completes, and recovers when the database is back.

Every test bounds its time and kills every process it started (the ``spawn_worker`` fixture).
Settings: stale_after=2 s, heartbeat_interval=0.5 s, so a rescue takes 1.5 to 2.5 s plus a claim.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pypgflow.app import App
from pypgflow.errors import WorkflowFailed
from pypgflow.status import RunStatus, StepStatus
from tests.integration.flows import read_log
from tests.integration.helpers import (
    WorkerProcess,
    postgres_only,
    wait_all_finished,
    wait_for,
    wait_ready,
)
from tests.integration.proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STALE = 2.0
BEAT = 0.5
FAST: dict[str, Any] = {"stale_after": STALE, "heartbeat_interval": BEAT}
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def begins(log: Path, workflow_step: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in read_log(log)
        if e["event"] == "begin" and (workflow_step is None or e["step"] == workflow_step)
    ]


def wait_begun(log: Path, instance: str, count: int = 1, timeout: float = 15.0) -> None:
    wait_for(
        lambda: len([e for e in begins(log) if e["instance"] == instance]) >= count,
        timeout=timeout,
        what=f"{count} steps to begin on {instance}",
    )


# A sync and an async step on PostgreSQL; on SQLite the sync one: how a step runs is the worker's
# business, the rescue the engine's.
@pytest.mark.parametrize(
    ("database_url", "workflow"),
    [("postgres", "it_slow"), ("postgres", "it_slow_async"), ("sqlite", "it_slow")],
    indirect=["database_url"],
)
def test_a_step_of_a_killed_worker_is_rescued_and_finished_by_another(
    app: App, log_path: Path, spawn_worker: Callable[..., WorkerProcess], workflow: str
) -> None:
    doomed = spawn_worker("doomed", **FAST)
    wait_ready(app, [doomed])
    run = app.start(workflow, {"log": str(log_path), "seconds": 60, "slow_on": "doomed"})
    wait_begun(log_path, "doomed")
    survivors = {name: spawn_worker(name, **FAST) for name in ("survivor-1", "survivor-2")}
    wait_ready(app, [doomed, *survivors.values()])

    killed_at = time.monotonic()
    doomed.kill()  # SIGKILL, in the middle of a 60 s step
    output = run.result(timeout=STALE + BEAT + 8)
    elapsed = time.monotonic() - killed_at
    # Not before its last heartbeat was stale_after old, and soon after.
    assert STALE - BEAT - 0.2 < elapsed < STALE + BEAT + 3.0, elapsed
    rescuer = output["slept"]
    assert rescuer in survivors

    (step,) = app.get_run(run.id).steps
    assert (step.status, step.attempts, step.instance_id) == (StepStatus.COMPLETED, 2, rescuer)
    (lost,) = step.errors  # rescued once, though both survivors were looking
    assert (lost.type, lost.attempt, lost.instance_id) == ("WorkerLost", 1, "doomed")
    assert "instance 'doomed' was lost while running step" in lost.message
    assert "last seen at" in lost.message
    assert "rescued by 'survivor-" in lost.message
    assert [(e["instance"], e["attempt"]) for e in begins(log_path)] == [
        ("doomed", 1),
        (rescuer, 2),
    ]
    logs = "".join(w.stderr() for w in survivors.values())
    assert logs.count("rescued 1 steps of lost instances") == 1, logs
    statuses = {i.instance_id: i.status for i in app.instances(stale_after=STALE)}
    assert statuses == {"doomed": "offline", "survivor-1": "online", "survivor-2": "online"}


@postgres_only(
    "the rescue cap is the engine's and is proven on both engines by tests/contract/"
    "test_rescue.py::test_the_poison_pill_cap_fails_the_run_and_cancels_its_other_work; "
    "three killed workers here (~10 s) would add nothing on SQLite"
)
def test_a_step_that_kills_its_worker_every_time_fails_as_a_poison_pill(
    app: App, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    options = {**FAST, "max_rescues": 2}
    workers = [spawn_worker(f"pill-{i}", **options) for i in range(2)]
    wait_ready(app, workers)
    spawned = len(workers)
    run = app.start("it_poison", {"log": str(log_path), "after": 0.1})
    deadline = time.monotonic() + 60
    while run.status() not in FINISHED:
        assert time.monotonic() < deadline, f"the run is still {run.status()} after 60 s"
        for index, worker in enumerate(workers):
            if not worker.alive():  # killed by the step: start another, as a supervisor would
                workers[index] = spawn_worker(f"pill-{spawned}", **options)
                spawned += 1
        time.sleep(0.1)

    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=1)
    assert "PoisonPill" in str(caught.value)
    assert "running alone on 3 workers that were lost, more than max_rescues=2" in str(caught.value)
    killed = [e["instance"] for e in begins(log_path)]
    assert len(killed) == 3  # max_rescues + 1 executions, then no more
    (step,) = app.get_run(run.id).steps
    assert step.status is StepStatus.FAILED
    assert step.attempts == 3  # of max_attempts=20: the cap came first
    assert [e.type for e in step.errors] == ["WorkerLost", "WorkerLost", "PoisonPill"]
    assert [e.instance_id for e in step.errors] == killed
    time.sleep(STALE + BEAT)
    assert len(begins(log_path)) == 3  # and nothing ran it again


@postgres_only(
    "that a heartbeating instance is never rescued is proven on both engines by tests/contract/"
    "test_rescue.py::test_a_heartbeating_instance_is_never_rescued; this 7 s step across "
    "processes would add nothing on SQLite"
)
def test_a_step_still_heartbeating_is_never_rescued(
    app: App, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    busy = spawn_worker("busy", **FAST)
    wait_ready(app, [busy])
    seconds = 3.5 * STALE
    run = app.start("it_slow", {"log": str(log_path), "seconds": seconds, "slow_on": "busy"})
    wait_begun(log_path, "busy")
    idle = spawn_worker("idle", **FAST)  # a live instance that would rescue it if it could
    wait_ready(app, [busy, idle])
    rescued = 0
    deadline = time.monotonic() + seconds + 10
    while run.status() not in FINISHED:  # the test app tries too, all along
        assert time.monotonic() < deadline
        result = app.engine.rescue_tasks(stale_after=STALE, max_rescues=3, rescuer="it-test")
        rescued += result.requeued + result.failed
        time.sleep(0.2)
    assert rescued == 0
    assert run.result(timeout=1) == {"slept": "busy"}
    (step,) = app.get_run(run.id).steps
    assert (step.attempts, step.errors, step.instance_id) == (1, (), "busy")
    assert len(begins(log_path)) == 1
    assert "rescued" not in idle.stderr()


def test_two_workers_of_five_slots_share_twenty_steps_fairly(
    app: App, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    workers = [spawn_worker(f"fair-{i}", queues=("default=5",), **FAST) for i in range(2)]
    wait_ready(app, workers)
    started = time.monotonic()
    app.start_many("it_one", [{"log": str(log_path), "i": i, "sleep": 0.1} for i in range(20)])
    wait_all_finished(app, 20, timeout=30, workers=workers)
    elapsed = time.monotonic() - started
    share = collections.Counter(e["instance"] for e in begins(log_path))
    assert sum(share.values()) == 20
    # Claims are sized to free slots: 5 + 5 at a time, so 10 each (give or take a batch).
    assert set(share) == {"fair-0", "fair-1"}
    assert min(share.values()) >= 7, share
    assert elapsed < 3.0, elapsed  # two rounds of 10 in parallel, not four of 5


@postgres_only(
    "a TCP proxy cuts a worker off from a PostgreSQL server; a SQLite file cannot be cut off "
    "(the worker's side of it runs on both engines in tests/contract/test_rescue.py::"
    "test_a_worker_cut_off_abandons_its_steps_then_hands_them_back)"
)
def test_a_worker_cut_off_from_the_database_abandons_its_steps_and_recovers(
    app: App, database_url: str, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        cut_off = spawn_worker("cut-off", url=proxy.url_for(database_url), **FAST)
        wait_ready(app, [cut_off])
        log = str(log_path)
        runs = [
            app.start("it_slow", {"log": log, "seconds": 60, "slow_on": "cut-off"}),
            app.start("it_slow", {"log": log, "seconds": 60, "slow_on": "cut-off"}),
            app.start("it_slow_async", {"log": log, "seconds": 60, "slow_on": "cut-off"}),
        ]
        wait_begun(log_path, "cut-off", count=3)
        other = spawn_worker("other", **FAST)
        wait_ready(app, [cut_off, other])

        proxy.cut()
        cut_at = time.monotonic()
        wait_for(
            lambda: "abandoning the 3 steps this worker runs" in cut_off.stderr(),
            timeout=STALE + 5,
            what="the cut-off worker to abandon its steps",
        )
        assert time.monotonic() - cut_at > STALE - BEAT - 0.2
        for run in runs:
            assert run.result(timeout=STALE + BEAT + 8) == {"slept": "other"}
        cancelled = [e for e in read_log(log_path) if e["event"] == "cancelled"]
        assert {e["instance"] for e in cancelled} == {"cut-off"}
        assert len(cancelled) == 3  # each step saw it was abandoned (sync: ctx.cancelled)
        for run in runs:
            (step,) = app.get_run(run.id).steps
            assert (step.attempts, step.instance_id) == (2, "other")
            (lost,) = step.errors
            assert (lost.type, lost.instance_id) == ("WorkerLost", "cut-off")
            assert "rescued by 'other'" in lost.message
        assert cut_off.alive()

        proxy.restore()
        wait_for(
            lambda: "the database is reachable again" in cut_off.stderr(),
            timeout=15,
            what="the cut-off worker to recover",
        )
        statuses = {i.instance_id: i.status for i in app.instances(stale_after=STALE)}
        assert statuses == {"cut-off": "online", "other": "online"}
        assert "of the 3 steps it abandoned, 0 were handed back" in cut_off.stderr()

        # And it works again: alone on the queue, it runs the next run.
        assert other.stop(timeout=15) == 0
        run = app.start("it_one", {"log": log, "i": 1})
        assert run.result(timeout=15) == {"i": 1, "steps": ["work"]}
        assert begins(log_path, "work")[-1]["instance"] == "cut-off"
        assert cut_off.stop(timeout=15) == 0
        assert "Traceback" not in cut_off.stderr()


@postgres_only(
    "a TCP proxy drops the answer of a committed claim on its way from a PostgreSQL server; the "
    "worker's side of it runs on both engines in tests/contract/test_lost_work.py::"
    "test_a_worker_hands_back_what_a_claim_whose_answer_was_lost_took"
)
def test_a_claim_whose_answer_was_lost_is_handed_back_by_its_live_worker(
    app: App, database_url: str, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    # As after a crash-restart of PostgreSQL: the claim commits, its answer never arrives, the
    # connection drops for far less than stale_after. The worker keeps heartbeating, so nobody
    # else rescues what the claim took: the worker must hand it back itself.
    with TcpProxy("127.0.0.1", 5432) as proxy:
        worker = spawn_worker(
            "unanswered", url=proxy.url_for(database_url), stale_after=30.0, heartbeat_interval=BEAT
        )
        wait_ready(app, [worker])
        marker = "claim-answer-lost-7f3a"
        proxy.drop_answer(b"run_pending", marker.encode())  # the claim's answer, with its input
        started = time.monotonic()
        run = app.start("it_one", {"log": str(log_path), "i": 1, "marker": marker})
        assert run.result(timeout=10) == {"i": 1, "steps": ["work"]}
        assert time.monotonic() - started < 10  # well within stale_after=30 s
        assert proxy.dropped == 1
        (step,) = app.get_run(run.id).steps
        # the lost claim's attempt was given back: it never ran
        assert (step.attempts, step.errors, step.instance_id) == (1, (), "unanswered")
        assert len(begins(log_path, "work")) == 1
        assert "a claim's answer was lost with its connection: handed 1 steps" in worker.stderr()
        assert worker.stop(timeout=15) == 0
        assert "Traceback" not in worker.stderr()
