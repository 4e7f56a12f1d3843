"""A start wakes an idle worker of the same process at once: the run begins within milliseconds,
not at the worker's next poll (5 s here). Across processes: tests/integration."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def test_a_start_wakes_an_idle_worker_in_this_process(make_app: Callable[..., App]) -> None:
    flow = Workflow("ping")
    began: list[tuple[str, float]] = []
    lock = threading.Lock()

    @flow.step
    def pong(input: None, ctx) -> str:  # type: ignore[no-untyped-def]
        with lock:
            began.append((ctx.run_id, time.time()))
        return "pong"

    app = make_app(flow)
    latencies: list[float] = []
    with running_worker(app, poll_interval=5.0):
        deadline = time.monotonic() + 10
        while [i.instance_id for i in app.instances()] != [app.instance_id]:
            assert time.monotonic() < deadline, "the worker did not register"
            time.sleep(0.02)
        time.sleep(0.2)  # idle: asleep on its 5 s poll
        for _ in range(7):
            before = time.time()
            run = app.start(flow, None)
            assert run.result(timeout=10) == "pong"
            run_id, at = began[-1]
            assert run_id == run.id
            latencies.append(at - before)
            time.sleep(0.05)
    # Typically a few milliseconds; the bound is generous for a busy machine.
    print("in-process start latencies (ms)", [round(x * 1000, 1) for x in latencies])
    assert statistics.median(latencies) < 0.1, latencies
    assert max(latencies) < 1.0, latencies
