"""When a run says it is running. A claim writes only the tasks it takes: a run is marked
running by the first outcome of its steps, or, while a step of it runs longer than
MARK_RUNNING_AFTER, by its worker soon after the step began; either way its started_at is when
its first task was claimed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.base import Completed
from pypgflow.outcomes import MARK_RUNNING_AFTER
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def test_a_claim_leaves_the_run_pending_and_its_first_outcome_completes_it(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("quick")
    flow.step(name="only")(lambda input: input)
    app = make_app(flow)
    run = app.start(flow, 1)
    engine = app.engine
    (task,) = engine.claim_tasks("default", 5, instance_id="t", workflows=[flow.name])
    assert task.run_pending
    info = app.get_run(run.id)
    assert (info.status, info.started_at) == (RunStatus.PENDING, None)
    time.sleep(0.05)
    assert engine.finish_tasks([Completed(task, "1")]).accepted == 1
    info = app.get_run(run.id)
    assert info.status is RunStatus.COMPLETED
    assert info.started_at is not None
    assert info.finished_at is not None
    # started when the task was claimed, not when its outcome was written
    step = info.steps[0]
    assert step.started_at == info.started_at
    assert (info.finished_at - info.started_at).total_seconds() >= 0.04


def test_a_step_that_runs_long_has_its_run_marked_running_soon_after_it_begins(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("slow")
    began = threading.Event()
    release = threading.Event()

    @flow.step
    def wait(input: int) -> int:
        began.set()
        release.wait(10)
        return input

    app = make_app(flow)
    run = app.start(flow, 7)
    with running_worker(app):
        assert began.wait(10)
        started = time.monotonic()
        while run.status() is RunStatus.PENDING:
            assert time.monotonic() - started < MARK_RUNNING_AFTER + 2, "still pending"
            time.sleep(0.01)
        marked_after = time.monotonic() - started
        info = app.get_run(run.id)
        assert info.status is RunStatus.RUNNING
        assert info.started_at is not None
        assert info.started_at == info.steps[0].started_at
        release.set()
        assert run.result(timeout=10) == 7
    print(f"marked running {marked_after * 1000:.0f} ms after the step began")
    assert app.get_run(run.id).started_at == info.started_at
