"""Durable runs of every graph shape: linear chains, a diamond, a wide fan-out with its fan-in.

Each step must run after its dependencies completed, once, with their outputs; the run's result is
its leaf's output (or a dict of its leaves' outputs).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def test_linear_chain_passes_each_output_to_the_next_step(make_app: Callable[..., App]) -> None:
    flow = Workflow.from_steps(
        "arith", [("add", lambda x: x + 1), ("mul", lambda x: x * 3), ("neg", lambda x: -x)]
    )
    app = make_app(flow)
    runs = [app.start(flow, n) for n in (1, 2, 3)]
    with running_worker(app, poll_interval=0.2):
        assert [r.result(timeout=5) for r in runs] == [-6, -9, -12]
    info = app.get_run(runs[0].id)
    assert info.status is RunStatus.COMPLETED
    assert info.output == -6
    assert info.input == 1
    assert [(s.name, s.status, s.attempts, s.output) for s in info.steps] == [
        ("add", StepStatus.COMPLETED, 1, 2),
        ("mul", StepStatus.COMPLETED, 1, 6),
        ("neg", StepStatus.COMPLETED, 1, -6),
    ]
    for earlier, later in zip(info.steps, info.steps[1:], strict=False):
        assert earlier.finished_at is not None
        assert later.started_at is not None
        assert earlier.finished_at <= later.started_at
    assert info.started_at is not None
    assert info.finished_at is not None


def test_diamond_runs_the_join_after_both_branches(make_app: Callable[..., App]) -> None:
    flow = Workflow("diamond")
    order: list[str] = []
    lock = threading.Lock()

    def seen(name: str) -> None:
        with lock:
            order.append(name)

    @flow.step
    def start(input: int) -> int:
        seen("start")
        return input

    @flow.step(depends_on=[start])
    def plus(start: int) -> int:
        seen("plus")
        return start + 1

    @flow.step(depends_on=[start])
    async def times(start: int) -> int:
        await asyncio.sleep(0.01)
        seen("times")
        return start * 10

    @flow.step(depends_on=[plus, times])
    def merge(plus: int, times: int) -> dict[str, int]:
        seen("merge")
        return {"plus": plus, "times": times}

    app = make_app(flow)
    run = app.start("diamond", 4)
    with running_worker(app):
        assert run.result(timeout=5) == {"plus": 5, "times": 40}
    assert order[0] == "start"
    assert sorted(order[1:3]) == ["plus", "times"]
    assert order[3:] == ["merge"]
    steps = {s.name: s for s in app.get_run(run.id).steps}
    assert steps["merge"].depends_on == ("plus", "times")
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in steps.values())


def test_several_leaves_make_a_dict_result(make_app: Callable[..., App]) -> None:
    flow = Workflow("leaves")
    flow.step(name="root")(lambda input: input)
    flow.step(name="left", depends_on=["root"])(lambda root: root + 1)
    flow.step(name="right", depends_on=["root"])(lambda root: root - 1)
    flow.step(name="alone", depends_on=[])(lambda input: "alone")
    app = make_app(flow)
    run = app.start(flow, 10)
    with running_worker(app):
        assert run.result(timeout=5) == {"left": 11, "right": 9, "alone": "alone"}


def test_wide_fan_out_then_fan_in(make_app: Callable[..., App]) -> None:
    width = 50
    flow = Workflow("fan")
    calls: dict[str, int] = {}
    lock = threading.Lock()

    @flow.step
    def seed(input: int) -> int:
        return input

    branches = []
    for i in range(width):

        def branch(seed: int, i: int = i) -> int:
            with lock:
                calls[f"b{i}"] = calls.get(f"b{i}", 0) + 1
            return seed + i

        flow.step(name=f"b{i}", depends_on=["seed"])(branch)
        branches.append(f"b{i}")

    def total(**outputs: int) -> list[int]:
        return [outputs[name] for name in branches]

    # The join takes one parameter per branch, named after it.
    total.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in branches]
    )
    flow.step(name="total", depends_on=branches)(total)

    app = make_app(flow)
    run = app.start(flow, 1000)
    with running_worker(app, {"default": 20}):
        result = run.result(timeout=10)
    assert result == [1000 + i for i in range(width)]
    assert calls == {f"b{i}": 1 for i in range(width)}
    info = app.get_run(run.id)
    assert len(info.steps) == width + 2
    assert info.steps[-1].name == "total"
    assert all(s.status is StepStatus.COMPLETED for s in info.steps)


def test_async_steps_run_concurrently_on_one_worker(make_app: Callable[..., App]) -> None:
    flow = Workflow("concurrent")
    flow.step(name="root")(lambda input: input)
    for i in range(10):

        async def nap(root: float) -> float:
            await asyncio.sleep(root)
            return root

        flow.step(name=f"nap{i}", depends_on=["root"])(nap)
    app = make_app(flow)
    run = app.start(flow, 0.4)
    with running_worker(app, {"default": 10}):
        run.result(timeout=5)
    info = app.get_run(run.id)
    naps = [s for s in info.steps if s.name.startswith("nap")]
    first_start = min(s.started_at for s in naps if s.started_at)
    last_finish = max(s.finished_at for s in naps if s.finished_at)
    # Ten 0.4 s naps side by side, not one after another (4 s).
    assert (last_finish - first_start).total_seconds() < 2.0
