"""A worker whose database records outcomes slower than its steps end stops claiming while the
outcomes not yet recorded fill their limit: it neither piles them up in memory nor holds the
tasks behind them, and every run still completes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from pypgflow import Workflow, outcomes
from pypgflow.app import App
from pypgflow.engines.base import FinishResult, Outcome
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def test_claims_wait_while_the_unrecorded_outcomes_fill_their_limit(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = Workflow("quick")
    flow.step(name="only")(lambda input: input)
    app = make_app(flow)
    runs = app.start_many(flow, range(60))
    engine = app.engine
    record = engine.finish_tasks
    batches: list[int] = []
    lock = threading.Lock()

    def slow_finish(batch: Sequence[Outcome]) -> FinishResult:
        with lock:
            batches.append(len(batch))
        time.sleep(0.2)  # a database far slower than the steps
        return record(batch)

    monkeypatch.setattr(engine, "finish_tasks", slow_finish)
    monkeypatch.setattr(outcomes, "UNRECORDED_LIMIT", 5)
    slots = 2
    with running_worker(app, {"default": slots}):
        assert [run.result(timeout=30) for run in runs] == list(range(60))
    assert all(run.status() is RunStatus.COMPLETED for run in runs)
    # At most limit - 1 outcomes waited when the last claim went out, and at most the tasks a
    # worker holds (its slots, as many claimed ahead) ended after it.
    assert max(batches) <= 5 - 1 + 2 * slots, batches
    assert sum(batches) == 60
