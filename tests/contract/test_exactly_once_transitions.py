"""At-least-once execution, exactly-once transitions: an outcome counts only for the attempt that
is still running. A duplicate or late completion, or one for an attempt already retried or
cancelled, changes nothing; claims racing on one queue take each task once. Driven through the
engine's verbs, as a worker would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Backoff, DatabaseError, Workflow, WorkflowFailed
from pypgflow.app import App
from pypgflow.engines.base import ClaimedTask, Completed, Failed
from pypgflow.errors import AttemptError
from pypgflow.orchestration import GiveUp, Retry
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def two_steps() -> Workflow:
    flow = Workflow("pair", max_attempts=3)
    flow.step(name="first")(lambda input: input + 1)
    flow.step(name="second")(lambda first: first * 2)
    return flow


def claim(app: App, limit: int = 10) -> list[ClaimedTask]:
    """Claim as a worker does (the claim marks runs running on their first task)."""
    tasks = app.engine.claim_tasks(
        "default", limit, instance_id="test", workflows=list(app.workflows)
    )
    return tasks


def error(task: ClaimedTask, message: str = "boom") -> AttemptError:
    return AttemptError(
        step=task.step,
        attempt=task.attempt,
        type="RuntimeError",
        message=message,
        traceback="",
        task_index=task.task_index,
        instance_id="test",
    )


def snapshot(app: App, run_id: str) -> tuple[Any, ...]:
    info = app.get_run(run_id)
    return (
        info.status,
        info.output,
        info.error,
        info.finished_at,
        tuple(
            (s.name, s.status, s.attempts, s.output, s.errors, s.finished_at) for s in info.steps
        ),
    )


def test_a_duplicate_completion_changes_nothing(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow)
    run = app.start(flow, 1)
    (task,) = claim(app)
    done = Completed(task, "2")
    assert app.engine.finish_tasks([done]).accepted == 1
    (second,) = claim(app)
    assert second.step == "second"
    assert second.dependency_outputs == {"first": 2}
    before = snapshot(app, run.id)

    again = app.engine.finish_tasks([done])
    assert again.accepted == 0
    assert again.queues_with_new_work == set()
    assert snapshot(app, run.id) == before
    assert claim(app) == []  # no second copy of the dependent step was released

    app.engine.finish_tasks([Completed(second, "4")])
    assert run.result(timeout=1) == 4
    final = snapshot(app, run.id)
    app.engine.finish_tasks(
        [Completed(second, "999"), done, Failed(second, error(second), GiveUp())]
    )
    assert snapshot(app, run.id) == final
    assert run.result(timeout=1) == 4


def test_duplicates_within_one_batch_count_once(make_app: Callable[..., App]) -> None:
    flow = Workflow("map-dupes")
    flow.map(over=None, name="each")(lambda n: n)
    flow.step(name="after")(lambda each: sum(each))
    app = make_app(flow)
    run = app.start(flow, [1, 2, 3])
    tasks = claim(app)
    assert sorted(t.task_index for t in tasks if t.task_index is not None) == [0, 1, 2]
    first = Completed(tasks[0], "1")
    app.engine.finish_tasks([first, first])
    app.engine.finish_tasks([first])
    step = {s.name: s for s in app.get_run(run.id).steps}["each"]
    assert step.status is StepStatus.READY  # one element done, not three
    app.engine.finish_tasks([Completed(tasks[1], "2"), Completed(tasks[2], "3")])
    (after,) = claim(app)
    assert after.dependency_outputs == {"each": [1, 2, 3]}


def test_a_late_completion_of_a_retried_attempt_is_ignored(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow)
    run = app.start(flow, 1)
    (attempt1,) = claim(app)
    app.engine.finish_tasks([Failed(attempt1, error(attempt1), Retry(0.0))])
    before = snapshot(app, run.id)

    # The first attempt's result arrives after it was already failed and rescheduled.
    late = app.engine.finish_tasks([Completed(attempt1, "2")])
    assert late.accepted == 0
    assert snapshot(app, run.id) == before
    assert before[4][0][1] is StepStatus.READY

    (attempt2,) = claim(app)
    assert attempt2.id == attempt1.id
    assert attempt2.attempt == 2
    # ...and again while attempt 2 runs: still nothing.
    assert app.engine.finish_tasks([Completed(attempt1, "2")]).accepted == 0
    assert (
        app.engine.finish_tasks([Failed(attempt1, error(attempt1, "late"), GiveUp())]).accepted == 0
    )
    assert app.get_run(run.id).status is RunStatus.RUNNING

    app.engine.finish_tasks([Completed(attempt2, "20")])
    (second,) = claim(app)
    assert second.dependency_outputs == {"first": 20}  # attempt 2's output, not the late one
    app.engine.finish_tasks([Completed(second, "40")])
    assert run.result(timeout=1) == 40
    first_step = app.get_run(run.id).steps[0]
    assert [e.message for e in first_step.errors] == ["boom"]  # the late failure left no trace
    assert first_step.attempts == 2


def test_a_duplicate_failure_is_recorded_once(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow)
    run = app.start(flow, 1)
    (task,) = claim(app)
    failed = Failed(task, error(task), Retry(0.0))
    app.engine.finish_tasks([failed])
    app.engine.finish_tasks([failed])
    assert len(app.get_run(run.id).steps[0].errors) == 1
    (again,) = claim(app)
    final = Failed(again, error(again, "for good"), GiveUp())
    app.engine.finish_tasks([final])
    after = snapshot(app, run.id)
    assert after[0] is RunStatus.FAILED
    app.engine.finish_tasks([final, Completed(again, "5")])
    assert snapshot(app, run.id) == after


def test_a_completion_after_cancel_is_ignored(make_app: Callable[..., App]) -> None:
    flow = two_steps()
    app = make_app(flow)
    run = app.start(flow, 1)
    (task,) = claim(app)
    assert app.cancel(run.id)
    before = snapshot(app, run.id)
    assert app.engine.still_running([task.id]) == set()
    assert app.engine.finish_tasks([Completed(task, "2")]).accepted == 0
    assert snapshot(app, run.id) == before
    assert claim(app) == []


def test_concurrent_claims_take_each_task_once(make_app: Callable[..., App]) -> None:
    """Eight threads of two apps (separate connections, as separate processes would have) claim
    from one queue at once and complete what they claim: every task is claimed once."""
    flow = two_steps()
    apps = [make_app(flow), make_app(flow)]
    apps[0].start_many(flow, range(400))
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def output(task: ClaimedTask) -> str:
        if task.step == "first":
            return str(task.run_input + 1)
        return str(task.dependency_outputs["first"] * 2)

    def work(app: App, worker: int) -> None:
        try:
            while True:
                tasks = app.engine.claim_tasks(
                    "default", 7, instance_id=f"t{worker}", workflows=["pair"]
                )
                if not tasks:
                    return
                with lock:
                    claimed.extend(t.id for t in tasks)
                app.engine.finish_tasks([Completed(t, output(t)) for t in tasks])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(apps[i % 2], i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(claimed) == len(set(claimed)) == 800  # two steps per run, each claimed once
    runs = apps[1].list_runs(limit=1000)
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
    assert sorted(r.output for r in runs) == [(n + 1) * 2 for n in range(400)]


def test_an_outcome_the_engine_refuses_does_not_block_the_others(
    make_app: Callable[..., App],
) -> None:
    """If storing one outcome fails for a reason other than an outage, the worker records the
    others one by one, and turns the refused completion into a failed attempt."""
    flow = Workflow("poison", max_attempts=2, backoff=Backoff(base=0.01, factor=2, jitter=0))
    gate = threading.Barrier(4, timeout=5)

    @flow.step
    def work(input: str, ctx) -> str:  # type: ignore[no-untyped-def]
        if ctx.attempt == 1:
            gate.wait()  # all four finish together: their outcomes likely share one batch
        return input

    app = make_app(flow)
    engine = app.engine
    real_finish = engine.finish_tasks
    refused: list[int] = []

    def finish_tasks(outcomes):  # type: ignore[no-untyped-def]
        for outcome in outcomes:
            if isinstance(outcome, Completed) and outcome.output == '"poison"':
                refused.append(outcome.task.attempt)
                raise DatabaseError("PostgreSQL error: value too large to store")
        return real_finish(outcomes)

    engine.finish_tasks = finish_tasks  # type: ignore[method-assign]
    runs = [app.start(flow, name) for name in ("a", "poison", "b", "c")]
    with running_worker(app, {"default": 4}):
        assert [runs[i].result(timeout=5) for i in (0, 2, 3)] == ["a", "b", "c"]
        with pytest.raises(WorkflowFailed, match="could not be stored") as caught:
            runs[1].result(timeout=5)
    assert refused == [1, 1, 2, 2]  # each attempt: refused in its batch, then on its own
    assert caught.value.attempts == 2
    assert [e.type for e in caught.value.errors] == ["DatabaseError", "DatabaseError"]
    assert "the output of step 'work' could not be stored" in caught.value.errors[0].message
    assert "value too large" in caught.value.errors[0].message
