"""Rescue: the tasks of a lost instance (silent for longer than the stale threshold, or not
registered at all) become claimable again exactly once, and a step that keeps losing its workers
fails as a poison pill. A worker cut off from the database abandons its steps, and hands back
those nobody rescued once it is back. Against every engine, in one process (the multi-process
tests are in tests/integration/test_rescue.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.base import ClaimedTask, Completed, RescueResult
from pypgflow.errors import DatabaseUnavailable, InvalidArgument, WorkflowFailed
from pypgflow.status import RunStatus, StepStatus
from pypgflow.worker import Worker
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def two_steps(max_attempts: int = 3) -> Workflow:
    flow = Workflow("pair", max_attempts=max_attempts)
    flow.step(name="first")(lambda input: input + 1)
    flow.step(name="second")(lambda first: first * 2)
    return flow


def claim_as(app: App, instance_id: str, limit: int = 100) -> list[ClaimedTask]:
    return app.engine.claim_tasks(
        "default", limit, instance_id=instance_id, workflows=list(app.workflows)
    )


def register(app: App, instance_id: str) -> None:
    app.engine.register_instance(instance_id, hostname="host", pid=1, queues={"default": 1})


def rescue(app: App, *, stale_after: float = 30.0, max_rescues: int = 3) -> RescueResult:
    return app.engine.rescue_tasks(
        stale_after=stale_after, max_rescues=max_rescues, rescuer="rescuer"
    )


def test_tasks_of_an_unregistered_instance_are_rescued_once(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow)
    runs = app.start_many(flow, [1, 2, 3])
    tasks = claim_as(app, "ghost")  # never registered: crashed, or deregistered
    assert len(tasks) == 3

    result = rescue(app)
    assert (result.requeued, result.failed) == (3, 0)
    assert sorted(result.runs) == sorted(r.id for r in runs)
    assert result.queues == {"default"}
    assert rescue(app) == RescueResult()  # once

    step = app.get_run(runs[0].id).steps[0]
    assert step.status is StepStatus.READY
    assert step.attempts == 1  # the lost attempt stays counted
    (lost,) = step.errors
    assert lost.type == "WorkerLost"
    assert (lost.step, lost.attempt, lost.task_index, lost.instance_id) == (
        "first",
        1,
        None,
        "ghost",
    )
    assert "instance 'ghost' was lost while running step 'first' (attempt 1 of 3)" in lost.message
    assert "not registered" in lost.message
    assert "rescued by 'rescuer'" in lost.message

    again = claim_as(app, "live")
    assert sorted(t.attempt for t in again) == [2, 2, 2]
    # The lost worker's late outcome changes nothing: its attempt is no longer the running one.
    assert app.engine.finish_tasks([Completed(tasks[0], "99")]).accepted == 0
    app.engine.finish_tasks([Completed(t, str(t.run_input + 1)) for t in again])
    step = app.get_run(again[0].run_id).steps[0]
    assert (step.status, step.attempts, step.instance_id) == (StepStatus.COMPLETED, 2, "live")
    assert [e.instance_id for e in step.errors] == ["ghost"]  # which instance ran each attempt


def test_a_heartbeating_instance_is_never_rescued(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow)
    run = app.start(flow, 1)
    register(app, "alive")
    claim_as(app, "alive")
    for _ in range(5):
        assert rescue(app, stale_after=0.5) == RescueResult()
        app.engine.heartbeat_instance("alive", load=1)
        time.sleep(0.2)
    assert app.get_run(run.id).steps[0].errors == ()


def test_a_silent_instance_is_rescued_once_its_heartbeat_is_stale(
    make_app: Callable[..., App],
) -> None:
    flow = two_steps()
    app = make_app(flow)
    run = app.start(flow, 1)
    register(app, "silent")
    claim_as(app, "silent")
    assert rescue(app, stale_after=0.3) == RescueResult()
    time.sleep(0.5)
    assert rescue(app, stale_after=0.3).requeued == 1
    (lost,) = app.get_run(run.id).steps[0].errors
    assert lost.instance_id == "silent"
    assert "last seen at " in lost.message
    assert "(stale after 0.3 s)" in lost.message
    offline = {i.instance_id: i.status for i in app.instances(stale_after=0.3)}
    assert offline == {"silent": "offline"}


def test_the_poison_pill_cap_fails_the_run_and_cancels_its_other_work(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("wide", max_attempts=10)
    flow.step(name="deadly", depends_on=[])(lambda input: input)
    flow.step(name="fine", depends_on=[])(lambda input: input)
    flow.step(name="after", depends_on=["deadly", "fine"])(lambda deadly, fine: deadly)
    app = make_app(flow)
    run = app.start(flow, 1)
    register(app, "live")
    for lost in range(1, 4):
        (deadly,) = claim_as(app, f"victim-{lost}", limit=1)
        assert (deadly.step, deadly.attempt) == ("deadly", lost)
        if lost == 1:
            (fine,) = claim_as(app, "live", limit=1)  # running on a live instance meanwhile
            assert fine.step == "fine"
        result = rescue(app, max_rescues=2)
        if lost < 3:
            assert (result.requeued, result.failed) == (1, 0)
        else:
            assert (result.requeued, result.failed) == (0, 1)
            assert result.runs == [run.id]
    # Three workers lost for one step, more than max_rescues=2: failed for good.
    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=1)
    assert "PoisonPill" in str(caught.value)
    assert "running alone on 3 workers that were lost" in str(caught.value)
    info = app.get_run(run.id)
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert info.error.type == "PoisonPill"
    steps = {s.name: s for s in info.steps}
    assert steps["deadly"].status is StepStatus.FAILED
    assert [e.type for e in steps["deadly"].errors] == ["WorkerLost", "WorkerLost", "PoisonPill"]
    assert [e.instance_id for e in steps["deadly"].errors] == ["victim-1", "victim-2", "victim-3"]
    assert "more than max_rescues=2" in steps["deadly"].errors[-1].message
    assert steps["fine"].status is StepStatus.CANCELLED  # the run's other work is cancelled
    assert steps["after"].status is StepStatus.CANCELLED
    assert claim_as(app, "anyone") == []
    assert app.engine.finish_tasks([Completed(fine, "1")]).accepted == 0  # it was cancelled


def test_a_lost_last_attempt_fails_for_good(make_app: Callable[..., App]) -> None:
    flow = two_steps(max_attempts=1)
    app = make_app(flow)
    run = app.start(flow, 1)
    claim_as(app, "ghost")
    assert rescue(app).failed == 1
    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=1)
    assert "WorkerLost" in str(caught.value)
    (lost,) = app.get_run(run.id).steps[0].errors
    assert lost.type == "WorkerLost"
    assert "no attempts left" in lost.message


def test_a_map_element_is_rescued_with_its_index(make_app: Callable[..., App]) -> None:
    flow = Workflow("fan")
    flow.map(over=None, name="each")(lambda n: n * 10)
    app = make_app(flow)
    run = app.start(flow, [1, 2])
    tasks = claim_as(app, "ghost")
    assert rescue(app).requeued == 2
    errors = app.get_run(run.id).steps[0].errors
    assert sorted(e.task_index for e in errors if e.task_index is not None) == [0, 1]
    assert all("step 'each[" in e.message for e in errors)
    again = claim_as(app, "live")
    app.engine.finish_tasks([Completed(t, str(t.input * 10)) for t in again])
    assert run.result(timeout=1) == [10, 20]
    assert app.engine.finish_tasks([Completed(t, "0") for t in tasks]).accepted == 0


def test_rescuers_racing_rescue_each_task_exactly_once(
    make_app: Callable[..., App], database_url: str
) -> None:
    flow = two_steps()
    app = make_app(flow)
    runs = app.start_many(flow, range(40))
    register(app, "dead")
    assert len(claim_as(app, "dead")) == 40
    time.sleep(0.3)
    # Rescuers with connections of their own, as live instances in other processes have.
    rescuers = [App(database_url, workflows=[flow], instance_id=f"r{i}") for i in range(6)]
    results: list[RescueResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(rescuers))

    def race(rescuer: App) -> None:
        try:
            barrier.wait(5)
            for _ in range(3):
                results.append(
                    rescuer.engine.rescue_tasks(
                        stale_after=0.2, max_rescues=3, rescuer=rescuer.instance_id
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(r,)) for r in rescuers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        for rescuer in rescuers:
            rescuer.close()
    assert errors == []
    assert sum(r.requeued for r in results) == 40
    assert sum(r.failed for r in results) == 0
    for run in runs:
        (lost,) = app.get_run(run.id).steps[0].errors  # one entry: rescued once
        assert lost.type == "WorkerLost"
    assert len(claim_as(app, "live")) == 40


def test_hand_back_keeps_what_the_instance_holds(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow)
    app.start_many(flow, [1, 2, 3])
    register(app, "me")
    tasks = claim_as(app, "me")
    kept = tasks[0].id
    result = app.engine.hand_back_lost_tasks(
        "me", keep=[kept], max_rescues=3, reason="it was cut off"
    )
    assert result.requeued == 2
    again = claim_as(app, "other")
    assert sorted(t.id for t in again) == sorted(t.id for t in tasks[1:])
    (lost,) = app.get_run(again[0].run_id).steps[0].errors
    assert lost.message.endswith("it was cut off; handed back by 'me' itself; queued again")
    assert app.engine.finish_tasks([Completed(tasks[0], "2")]).accepted == 1


def test_heartbeat_registers_again_when_the_row_is_gone(make_app: Callable[..., App]) -> None:
    app = make_app(two_steps())
    options: dict[str, Any] = {"hostname": "h", "pid": 7, "queues": {"default": 2}, "load": 1}
    assert app.engine.heartbeat_or_register("w", **options) is True  # not registered yet
    assert app.engine.heartbeat_or_register("w", **options) is False
    app.engine.deregister_instance("w")
    assert app.engine.heartbeat_or_register("w", **options) is True
    (instance,) = app.instances()
    assert (instance.instance_id, instance.pid, instance.queues) == ("w", 7, {"default": 2})


def test_a_worker_registers_again_when_its_row_is_removed(make_app: Callable[..., App]) -> None:
    app = make_app(two_steps(), instance_id="removed")
    with running_worker(app, stale_after=1.0, heartbeat_interval=0.1):
        deadline = time.monotonic() + 10
        while [i.instance_id for i in app.instances()] != ["removed"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        app.engine.deregister_instance("removed")  # an operator's or a cleanup's doing
        deadline = time.monotonic() + 5
        while [i.instance_id for i in app.instances()] != ["removed"]:
            assert time.monotonic() < deadline, "the heartbeat did not register it again"
            time.sleep(0.02)


def test_a_worker_rescues_the_steps_of_a_lost_instance(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow, instance_id="rescuer-worker")
    run = app.start(flow, 4)
    register(app, "crashed")
    claim_as(app, "crashed")
    with running_worker(app, stale_after=0.5, heartbeat_interval=0.1):
        assert run.result(timeout=10) == 10
    first = app.get_run(run.id).steps[0]
    assert first.instance_id == "rescuer-worker"
    (lost,) = first.errors
    assert (lost.type, lost.instance_id) == ("WorkerLost", "crashed")
    assert "rescued by 'rescuer-worker'" in lost.message


def test_a_new_process_hands_back_what_an_earlier_one_of_its_id_held(
    make_app: Callable[..., App],
) -> None:
    flow = two_steps()
    app = make_app(flow, instance_id="pod-7")
    run = app.start(flow, 1)
    register(app, "pod-7")
    claim_as(app, "pod-7")  # then the process died, and came back with the same id
    with running_worker(app):  # default stale_after: 30 s; no need to wait for it
        assert run.result(timeout=10) == 4
    (lost,) = app.get_run(run.id).steps[0].errors
    assert lost.instance_id == "pod-7"
    assert "an earlier process with this instance id" in lost.message


def test_a_worker_cut_off_abandons_its_steps_then_hands_them_back(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pypgflow")
    flow = Workflow("cut", max_attempts=3)
    started = threading.Event()
    saw_cancel = threading.Event()

    @flow.step
    def hold(input: int, ctx) -> int:  # type: ignore[no-untyped-def]
        if ctx.attempt == 1:
            started.set()
            deadline = time.monotonic() + 20
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.01)
            saw_cancel.set()
        return input

    app = make_app(flow, instance_id="cut-off")
    run = app.start(flow, 5)
    engine = app.engine
    # What the worker's heartbeats (and its recovery) call: cut off, as in an outage.
    verbs = ("heartbeat_or_register", "register_instance", "hand_back_lost_tasks")
    real = {name: getattr(engine, name) for name in verbs}

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseUnavailable("cannot reach the database (test)")

    with running_worker(app, stale_after=0.6, heartbeat_interval=0.1):
        assert started.wait(10)
        for name in verbs:
            setattr(engine, name, unreachable)
        cut_at = time.monotonic()
        assert saw_cancel.wait(5)
        assert 0.4 < time.monotonic() - cut_at < 2.0
        assert "abandoning the 1 steps this worker runs" in caplog.text
        time.sleep(0.3)
        assert app.get_run(run.id).status is RunStatus.RUNNING  # nothing recorded, nothing claimed
        for name in verbs:
            setattr(engine, name, real[name])
        assert run.result(timeout=10) == 5
    assert "the database is reachable again" in caplog.text
    step = app.get_run(run.id).steps[0]
    assert step.attempts == 2
    (lost,) = step.errors
    assert lost.type == "WorkerLost"
    assert lost.instance_id == "cut-off"
    assert "cut off from the database for more than stale_after=0.6 s" in lost.message


def test_rescue_options_are_checked(make_app: Callable[..., App]) -> None:
    app = make_app(two_steps(), stale_after=12.0)
    assert app.stale_after == 12.0
    assert Worker(app).stale_after == 12.0
    assert Worker(app, stale_after=7, heartbeat_interval=1).stale_after == 7
    with pytest.raises(InvalidArgument, match="longer than heartbeat_interval"):
        Worker(app, stale_after=5, heartbeat_interval=5)
    with pytest.raises(InvalidArgument, match="max_rescues"):
        Worker(app, max_rescues=-1)
    with pytest.raises(InvalidArgument, match="stale_after"):
        make_app(two_steps(), stale_after=0)
