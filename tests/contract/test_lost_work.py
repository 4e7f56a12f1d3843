"""Work whose worker lost it, on every engine: a rescued or handed-back task keeps its place in
the queue; only a worker lost while running a step alone counts toward that step's poison-pill
limit; and a claim whose answer was lost (it committed, the connection dropped) is handed back by
its live worker rather than stranded."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines import fleet
from pypgflow.engines.base import ClaimedTask
from pypgflow.errors import DatabaseUnavailable
from pypgflow.status import RunStatus, StepStatus, TaskStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def one_step(max_attempts: int = 10) -> Workflow:
    flow = Workflow("single", max_attempts=max_attempts)
    flow.step(name="only")(lambda input: input)
    return flow


def claim_as(app: App, instance_id: str, limit: int = 100) -> list[ClaimedTask]:
    return app.engine.claim_tasks(
        "default", limit, instance_id=instance_id, workflows=list(app.workflows)
    )


def rescue(app: App, *, max_rescues: int = 3) -> tuple[int, int]:
    result = app.engine.rescue_tasks(stale_after=30.0, max_rescues=max_rescues, rescuer="live")
    return result.requeued, result.failed


# -- a rescued task keeps its place ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["rescued", "handed back", "released at shutdown"])
def test_lost_work_is_claimed_before_newer_work_of_its_priority(
    make_app: Callable[..., App], how: str
) -> None:
    flow = one_step()
    app = make_app(flow)
    early = app.start(flow, "early")
    (task,) = claim_as(app, "ghost")  # never registered: lost as soon as it is claimed
    backlog = app.start_many(flow, [f"late-{n}" for n in range(20)])
    if how == "rescued":
        assert rescue(app) == (1, 0)
    elif how == "handed back":
        result = app.engine.hand_back_lost_tasks("ghost", keep=[], max_rescues=3, reason="gone")
        assert result.requeued == 1
    else:
        assert app.engine.release_tasks([task.id], instance_id="ghost") == 1
    # a backlog of newer runs of the same priority: the lost task goes first, not last
    (first,) = claim_as(app, "live", limit=1)
    assert (first.id, first.run_id) == (task.id, early.id)
    rest = claim_as(app, "live")
    assert [t.run_id for t in rest] == [r.id for r in backlog]  # the others in their order


# -- the poison-pill count ----------------------------------------------------------------------


def test_only_workers_lost_running_a_step_alone_count_toward_its_poison_pill_limit(
    make_app: Callable[..., App],
) -> None:
    flow = one_step()
    app = make_app(flow)
    runs = app.start_many(flow, ["a", "b"])
    # a worker lost with both tasks: the loss says nothing of either, nothing is condemned
    for lost in ("ghost-1", "ghost-2", "ghost-3"):
        assert len(claim_as(app, lost)) == 2
        assert rescue(app, max_rescues=0) == (2, 0)
    step = app.get_run(runs[0].id).steps[0]
    assert [e.type for e in step.errors] == ["WorkerLost"] * 3
    assert [e.lost_workers for e in step.errors] == [1, 2, 3]  # every loss is still told
    # a worker lost running it alone: with max_rescues=0, that one condemns it
    (alone,) = claim_as(app, "ghost-4", limit=1)
    assert rescue(app, max_rescues=0) == (0, 1)
    info = app.get_run(alone.run_id)
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert info.error.type == "PoisonPill"
    assert "running alone on 1 workers that were lost" in info.error.message
    assert "(4 lost in all)" in info.error.message
    other = next(r for r in runs if r.id != alone.run_id)
    assert app.get_run(other.id).steps[0].status is StepStatus.READY


def test_a_rescue_pass_takes_every_task_of_an_instance_together(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass of 2 tasks at most: instance a's 3 tasks are taken whole (a count split across
    # passes would make its last task look lost alone), b's single task in the next pass.
    monkeypatch.setattr(fleet, "_RESCUE_BATCH", 2)
    flow = one_step()
    app = make_app(flow)
    app.start_many(flow, ["1", "2", "3", "4"])
    assert len(claim_as(app, "a-ghost", limit=3)) == 3
    (alone,) = claim_as(app, "b-ghost")
    assert rescue(app, max_rescues=0) == (3, 0)  # shared: not charged
    assert rescue(app, max_rescues=0) == (0, 1)  # alone: charged, and condemned
    assert app.get_run(alone.run_id).status is RunStatus.FAILED


def test_a_hand_back_by_a_live_worker_charges_nothing(make_app: Callable[..., App]) -> None:
    flow = one_step()
    app = make_app(flow)
    run = app.start(flow, "x")
    for _ in range(3):
        claim_as(app, "me")
        result = app.engine.hand_back_lost_tasks(
            "me", keep=[], max_rescues=0, reason="it was cut off", worker_died=False
        )
        assert (result.requeued, result.failed) == (1, 0)
    # the earlier process of an id died: that one is charged
    claim_as(app, "me")
    result = app.engine.hand_back_lost_tasks("me", keep=[], max_rescues=0, reason="it died")
    assert (result.requeued, result.failed) == (0, 1)
    assert app.get_run(run.id).status is RunStatus.FAILED


# -- a claim whose answer was lost ----------------------------------------------------------------


def test_release_unheld_tasks_keeps_what_the_instance_holds(make_app: Callable[..., App]) -> None:
    flow = one_step(max_attempts=1)
    app = make_app(flow)
    app.start_many(flow, ["1", "2", "3"])
    held, *lost = claim_as(app, "me")
    claim_as(app, "other")  # nothing left: another instance's tasks are not touched anyway
    assert app.engine.release_unheld_tasks("me", keep=[held.id]) == 2
    again = claim_as(app, "other")
    assert sorted(t.id for t in again) == sorted(t.id for t in lost)
    assert [t.attempt for t in again] == [1, 1]  # the lost claim's attempt was given back
    assert app.engine.still_running([held.id]) == {held.id}
    assert app.engine.release_unheld_tasks("me", keep=[held.id]) == 0


def test_a_worker_hands_back_what_a_claim_whose_answer_was_lost_took(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = one_step(max_attempts=1)  # a counted attempt would leave none: it must be given back
    app = make_app(flow, stale_after=30.0)
    runs = app.start_many(flow, [1, 2, 3])
    engine = app.engine
    real_claim = engine.claim_tasks
    lost: list[ClaimedTask] = []
    lock = threading.Lock()

    def claim_then_lose_the_answer(*args: Any, **kwargs: Any) -> list[ClaimedTask]:
        tasks = real_claim(*args, **kwargs)
        with lock:
            if not lost and tasks:  # the first claim commits, then its connection drops
                lost.extend(tasks)
                raise DatabaseUnavailable("lost the connection (the claim had committed)")
        return tasks

    monkeypatch.setattr(engine, "claim_tasks", claim_then_lose_the_answer)
    with running_worker(app, heartbeat_interval=0.5):
        # well within stale_after: nobody else would have rescued them
        assert [run.result(timeout=10) for run in runs] == [1, 2, 3]
    assert lost
    for run in runs:
        (step,) = app.get_run(run.id).steps
        assert (step.status, step.attempts, step.errors) == (StepStatus.COMPLETED, 1, ())


def test_the_hand_back_after_a_lost_claim_keeps_what_the_worker_holds(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Two slots: two steps running, a third claimed ahead of them (slots.py), when the claim of
    # a fourth loses its answer. Only the fourth may be handed back.
    gate = threading.Event()
    calls: list[Any] = []

    def step(input: Any) -> Any:
        calls.append(input)
        if input != "late":
            gate.wait(20)
        return input

    flow = Workflow("gated", max_attempts=1)
    flow.step(name="only")(step)
    app = make_app(flow, stale_after=30.0)
    engine = app.engine
    early = app.start_many(flow, ["a", "b", "c"])
    early_ids = {run.id for run in early}
    real_claim = engine.claim_tasks
    lost: list[ClaimedTask] = []

    def claim(*args: Any, **kwargs: Any) -> list[ClaimedTask]:
        tasks = real_claim(*args, **kwargs)
        if not lost and any(t.run_id not in early_ids for t in tasks):
            lost.extend(tasks)
            raise DatabaseUnavailable("lost the connection (the claim had committed)")
        return tasks

    monkeypatch.setattr(engine, "claim_tasks", claim)

    def running() -> int:
        return sum(t.status is TaskStatus.RUNNING for r in early for t in engine.run_tasks(r.id))

    said = "a claim's answer was lost with its connection: handed"

    def handed_back() -> list[str]:
        return [r.getMessage() for r in caplog.records if said in r.getMessage()]

    caplog.set_level(logging.WARNING, logger="pypgflow")
    with running_worker(app, {"default": 2}, heartbeat_interval=0.5):
        deadline = time.monotonic() + 10
        while (len(calls) < 2 or running() < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (len(calls), running()) == (2, 3)  # two started, one claimed ahead
        late = app.start(flow, "late")
        deadline = time.monotonic() + 10
        while not handed_back() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [t.run_id for t in lost] == [late.id]
        assert handed_back() == [f"{said} 1 steps it had claimed back to their queues"]
        assert running() == 3  # what it holds (running, claimed ahead) was not handed back
        gate.set()
        assert [run.result(timeout=10) for run in [*early, late]] == ["a", "b", "c", "late"]
    assert sorted(calls) == ["a", "b", "c", "late"]  # each step ran once
    for run in [*early, late]:
        (step_info,) = app.get_run(run.id).steps
        assert (step_info.status, step_info.attempts, step_info.errors) == (
            StepStatus.COMPLETED,
            1,
            (),
        )
