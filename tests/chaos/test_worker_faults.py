"""Faults of one worker at a time, on both engines:

(4) Zombie: a worker frozen with SIGSTOP past ``stale_after`` while its steps run, then thawed
    with SIGCONT: its steps were rescued and ran elsewhere; nothing it does after it wakes
    changes what was recorded.
(5) Graceful drain under load: SIGTERM to 3 of 4 workers: no rescue, no repeated execution,
    every run completes, the three exit 0.
(6) A step that heartbeats for 3 x ``stale_after`` is never rescued; a poison pill (a step that
    kills every worker running it) runs exactly ``max_rescues + 1`` times, then fails.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.status import RunStatus
from tests.chaos import audit
from tests.chaos.conftest import Figures
from tests.chaos.harness import (
    HEARTBEAT,
    STALE_AFTER,
    Fleet,
    repeated_executions,
    run_statuses,
    total_rescues,
    wait_finished,
)
from tests.integration import flows
from tests.integration.flows import read_log
from tests.integration.helpers import WorkerProcess, wait_for, wait_ready

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


def test_zombie_worker_thawed_after_its_steps_were_rescued(
    app: App,
    database_url: str,
    log_path: Path,
    spawn_worker: Callable[..., WorkerProcess],
    figures: Figures,
) -> None:
    fleet = Fleet(spawn_worker, "zombie")
    (zombie,) = fleet.start()
    wait_ready(app, [zombie], timeout=60)
    log = str(log_path)
    count = 8
    # Slow on the zombie only: its steps are mid-way when it freezes, and end the moment it
    # thaws (their deadline long past), racing its own cut-off to report an outcome.
    runs = app.start_many(
        flows.slow,
        [{"log": log, "seconds": 4, "slow_on": zombie.instance_id, "i": i} for i in range(count)],
    )
    wait_for(
        lambda: len([e for e in read_log(log_path) if e["event"] == "begin"]) >= count,
        timeout=30,
        what="every step to begin on the zombie",
    )
    (rescuer,) = fleet.start()
    wait_ready(app, [rescuer], timeout=60)
    zombie.signal(signal.SIGSTOP)
    frozen_at = time.time()
    wait_finished(app, count, timeout=STALE_AFTER * 4 + 30)
    rescued_after = time.time() - frozen_at
    time.sleep(1.0)
    zombie.signal(signal.SIGCONT)
    thawed_at = time.time()
    wait_for(
        lambda: "registered again" in zombie.stderr(), timeout=30, what="the zombie to come back"
    )
    time.sleep(2 * HEARTBEAT)  # whatever it still had to say, said

    infos = {r.id: r for r in app.list_runs(limit=100)}
    events = read_log(log_path)
    late = [e for e in events if e["instance"] == zombie.instance_id and e["t"] > thawed_at]
    found = audit.verdict(database_url)
    outputs = {infos[r.id].output["slept"] for r in runs if infos[r.id].output}
    figures.add(
        f"{count} steps frozen mid-way by SIGSTOP for {thawed_at - frozen_at:.1f} s "
        f"(stale_after={STALE_AFTER:g} s): all runs completed by the other worker after "
        f"{rescued_after:.1f} s; after SIGCONT the zombie's steps ended and tried to report "
        f"{len(late)} outcomes; late overwrites (audit): {len(found.late_overwrites)}; "
        f"completions recorded once: {found.tasks - len(found.tasks_not_completed_once)}/"
        f"{found.tasks}"
    )
    assert {infos[r.id].status for r in runs} == {RunStatus.COMPLETED}
    assert outputs == {rescuer.instance_id}
    assert found.violations() == []
    assert zombie.alive()
    assert total_rescues(database_url) == count


def test_graceful_drain_of_three_workers_under_load(
    app: App,
    database_url: str,
    log_path: Path,
    spawn_worker: Callable[..., WorkerProcess],
    figures: Figures,
) -> None:
    fleet = Fleet(spawn_worker, "drain", {"queues": ["default=10"], "shutdown_timeout": 30.0})
    workers = fleet.start(4)
    wait_ready(app, workers, timeout=60)
    log = str(log_path)
    count = 2000
    began = time.time()
    app.start_many(flows.one, [{"log": log, "i": i, "sleep": 0.1} for i in range(count)])
    wait_for(
        lambda: run_statuses(app)["completed"] >= count // 3,
        timeout=120,
        what="a third of the runs",
        interval=0.1,
    )
    for worker in workers[:3]:
        worker.signal(signal.SIGTERM)
    drained_at = time.time()
    codes = [worker.wait(timeout=60) for worker in workers[:3]]
    drain_seconds = time.time() - drained_at
    fleet.alive = workers[3:]
    finished_at = wait_finished(app, count, timeout=300, fleet=fleet)
    begun, repeated = repeated_executions(log_path)
    found = audit.verdict(database_url)
    rescues = total_rescues(database_url)
    figures.add(
        f"{count} one-step runs (0.1 s each), 4 workers x 10 slots, SIGTERM to 3 after "
        f"{drained_at - began:.1f} s: they exited {codes} within {drain_seconds:.1f} s; handed "
        f"back unstarted: {found.requeued}; rescues: {rescues}; executions {begun}, repeated "
        f"{repeated}; all {dict(run_statuses(app))} in {finished_at - began:.1f} s"
    )
    assert codes == [0, 0, 0]
    assert rescues == 0
    assert repeated == 0
    assert begun == count
    assert found.violations() == []
    assert run_statuses(app) == {"completed": count}


def test_long_heartbeating_step_is_never_rescued_and_a_poison_pill_runs_max_rescues_plus_one(
    app: App,
    database_url: str,
    log_path: Path,
    spawn_worker: Callable[..., WorkerProcess],
    figures: Figures,
) -> None:
    max_rescues = 2
    # The long step has a worker of its own (queue "long"): the pill's kills are not its losses.
    keeper = Fleet(spawn_worker, "keeper", {"queues": ["long=2"], "max_rescues": max_rescues})
    fleet = Fleet(spawn_worker, "pill", {"queues": ["default=4"], "max_rescues": max_rescues})
    wait_ready(app, [*keeper.start(), *fleet.start(2)], timeout=60)
    log = str(log_path)
    seconds = 3 * STALE_AFTER
    long_run = app.start(flows.slow, {"log": log, "seconds": seconds}, queue="long")
    pill = app.start(flows.poison, {"log": log, "after": 0.2})
    began = time.monotonic()
    deaths = 0
    while pill.status() not in (RunStatus.FAILED, RunStatus.COMPLETED) or long_run.status() in (
        RunStatus.PENDING,
        RunStatus.RUNNING,
    ):
        keeper.check_alive()
        for worker in list(fleet.alive):
            if not worker.alive():  # killed by the pill: replaced, as a supervisor would
                fleet.alive.remove(worker)
                deaths += 1
                fleet.start()
        if time.monotonic() - began > seconds + 8 * STALE_AFTER + 60:
            raise AssertionError(f"not finished: {pill.status()}, {long_run.status()}")
        time.sleep(0.1)
    events = read_log(log_path)
    long_begins = [e for e in events if e["run"] == long_run.id and e["event"] == "begin"]
    pill_begins = [e for e in events if e["run"] == pill.id and e["event"] == "begin"]
    pill_info = app.get_run(pill.id)
    long_info = app.get_run(long_run.id)
    found = audit.verdict(database_url, every_run_completes=False)
    figures.add(
        f"a step of {seconds:g} s (3 x stale_after) heartbeating: {long_info.status.value}, "
        f"executions {len(long_begins)}, rescues {total_rescues(database_url, long_run.id)}"
    )
    figures.add(
        f"a poison pill with max_rescues={max_rescues}: {len(pill_begins)} executions, "
        f"{deaths} workers lost, run {pill_info.status.value}: "
        f"{pill_info.error.type if pill_info.error else None}"
    )
    assert long_info.status is RunStatus.COMPLETED
    assert len(long_begins) == 1
    assert long_info.steps[0].attempts == 1
    assert total_rescues(database_url, long_run.id) == 0
    assert pill_info.status is RunStatus.FAILED
    assert len(pill_begins) == max_rescues + 1
    assert pill_info.error is not None
    assert pill_info.error.type == "PoisonPill"
    assert found.violations() == []
