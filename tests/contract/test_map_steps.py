"""Map steps run durably: one task per element, results in element order, and clear failures when
the thing mapped over is not a list."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from pypgflow import Backoff, MapInputError, Workflow, WorkflowFailed
from pypgflow.app import App
from pypgflow.engines.base import Completed
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(base=0.01, factor=2, jitter=0)


def test_map_over_a_step_keeps_element_order(make_app: Callable[..., App]) -> None:
    flow = Workflow("words")
    seen: list[str] = []
    lock = threading.Lock()

    @flow.step
    def split(input: str) -> list[str]:
        return input.split()

    @flow.map(over=split)
    async def measure(word: str) -> int:
        # Later elements finish first: the output must still follow the input order.
        await asyncio.sleep(0.005 * (10 - len(word)))
        with lock:
            seen.append(word)
        return len(word)

    @flow.step(depends_on=[split])
    def upper(split: list[str]) -> list[str]:
        return [w.upper() for w in split]

    @flow.step(depends_on=[measure, upper])
    def total(measure: list[int], upper: list[str]) -> dict[str, object]:
        return {"lengths": measure, "sum": sum(measure), "upper": upper}

    app = make_app(flow)
    run = app.start(flow, "a bb ccc dddd eeeee")
    with running_worker(app):
        assert run.result(timeout=5) == {
            "lengths": [1, 2, 3, 4, 5],
            "sum": 15,
            "upper": ["A", "BB", "CCC", "DDDD", "EEEEE"],
        }
    assert sorted(seen) == ["a", "bb", "ccc", "dddd", "eeeee"]
    steps = {s.name: s for s in app.get_run(run.id).steps}
    assert steps["measure"].is_map
    assert steps["measure"].task_count == 5
    assert steps["measure"].output == [1, 2, 3, 4, 5]
    assert steps["measure"].status is StepStatus.COMPLETED
    assert not steps["upper"].is_map
    # A map step joins the graph like any other: it depends on its list, others depend on it.
    assert steps["measure"].depends_on == ("split",)
    assert steps["total"].depends_on == ("measure", "upper")
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in steps.values())


def test_map_over_an_empty_list_completes_without_tasks(make_app: Callable[..., App]) -> None:
    flow = Workflow("empty-map")
    calls: list[object] = []

    @flow.step
    def nothing(input: object) -> list[int]:
        return []

    @flow.map(over=nothing)
    def each(item: int) -> int:
        calls.append(item)
        return item

    @flow.step
    def after(each: list[int]) -> str:
        return f"{len(each)} items"

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app):
        assert run.result(timeout=5) == "0 items"
    assert calls == []
    steps = {s.name: s for s in app.get_run(run.id).steps}
    assert steps["each"].output == []
    assert steps["each"].task_count == 0
    assert steps["each"].attempts == 0  # nothing ran
    assert steps["each"].status is StepStatus.COMPLETED


def test_map_over_the_workflow_input(make_app: Callable[..., App]) -> None:
    flow = Workflow("square-all")

    @flow.map(over=None)
    def square(n: int) -> int:
        return n * n

    app = make_app(flow)
    run = app.start(flow, [1, 2, 3, 4])
    empty = app.start(flow, [])
    with running_worker(app):
        assert run.result(timeout=5) == [1, 4, 9, 16]
        assert empty.result(timeout=5) == []
    (step,) = app.get_run(run.id).steps
    assert (step.is_map, step.task_count, step.output) == (True, 4, [1, 4, 9, 16])
    # An empty input list completes the run at once: nothing to claim.
    assert app.get_run(empty.id).steps[0].task_count == 0


def test_empty_input_map_run_is_complete_before_any_worker(make_app: Callable[..., App]) -> None:
    flow = Workflow("square-none")
    flow.map(over=None, name="square")(lambda n: n * n)
    app = make_app(flow)
    run = app.start(flow, [])
    assert run.status() is RunStatus.COMPLETED
    assert run.result(timeout=1) == []


def test_non_list_input_of_an_input_map_is_rejected_at_start(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("square-bad")
    flow.map(over=None, name="square")(lambda n: n * n)
    app = make_app(flow)
    with pytest.raises(MapInputError, match=r"square.*needs a list.*workflow input.*dict"):
        app.start(flow, {"not": "a list"})
    with pytest.raises(MapInputError, match="got int"):
        app.start_many(flow, [[1], 5])
    assert app.list_runs() == []  # nothing was written, not even the valid first run


def test_non_list_output_of_the_over_step_fails_the_run(make_app: Callable[..., App]) -> None:
    flow = Workflow("bad-over")
    calls: list[object] = []

    @flow.step
    def produce(input: object) -> dict[str, int]:
        return {"a": 1}

    @flow.map(over=produce)
    def each(item: object) -> object:
        calls.append(item)
        return item

    @flow.step
    def after(each: list[object]) -> int:
        calls.append("after")
        return len(each)

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    failure = caught.value
    assert failure.step == "each"
    assert "needs a list" in str(failure)
    assert "'produce'" in str(failure)
    assert "dict" in str(failure)
    assert calls == []
    info = app.get_run(run.id)
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert info.error.type == "MapInputError"
    steps = {s.name: s.status for s in info.steps}
    assert steps == {
        "produce": StepStatus.COMPLETED,
        "each": StepStatus.FAILED,
        "after": StepStatus.CANCELLED,
    }


def test_a_failing_element_is_retried_on_its_own(make_app: Callable[..., App]) -> None:
    flow = Workflow("flaky-map")
    calls: dict[int, int] = {}
    lock = threading.Lock()

    @flow.map(over=None, max_attempts=3, backoff=FAST)
    def each(n: int) -> int:
        with lock:
            calls[n] = calls.get(n, 0) + 1
            attempt = calls[n]
        if n == 2 and attempt < 3:
            raise RuntimeError(f"element {n} attempt {attempt}")
        return n * 10

    app = make_app(flow)
    run = app.start(flow, [0, 1, 2, 3])
    with running_worker(app):
        assert run.result(timeout=5) == [0, 10, 20, 30]
    assert calls == {0: 1, 1: 1, 2: 3, 3: 1}
    step = app.get_run(run.id).steps[0]
    assert step.attempts == 3  # the most any element took
    assert [(e.task_index, e.attempt, e.message) for e in step.errors] == [
        (2, 1, "element 2 attempt 1"),
        (2, 2, "element 2 attempt 2"),
    ]


def test_an_element_failing_for_good_fails_the_run(make_app: Callable[..., App]) -> None:
    flow = Workflow("map-fails")

    @flow.map(over=None, max_attempts=2, backoff=FAST)
    def each(n: int) -> int:
        if n == 1:
            raise ValueError("one is bad")
        return n

    app = make_app(flow)
    run = app.start(flow, [0, 1, 2])
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    assert caught.value.step == "each"
    assert caught.value.attempts == 2
    assert [(e.where, e.attempt, e.type) for e in caught.value.errors] == [
        ("each[1]", 1, "ValueError"),
        ("each[1]", 2, "ValueError"),
    ]


def test_claimed_elements_each_get_their_own_copy_of_the_dependency_outputs(
    make_app: Callable[..., App],
) -> None:
    # A claim sends a step's dependency outputs once for all its elements (a map over a big
    # list was quadratic): each element still decodes its own copy when it reads them.
    flow = Workflow("copies")

    @flow.step
    def items(input: int) -> list[int]:
        return list(range(input))

    @flow.map(over=items)
    def double(item: int) -> int:
        return 2 * item

    app = make_app(flow)
    run = app.start(flow, 20)
    (first,) = app.engine.claim_tasks("default", 5, instance_id="t", workflows=[flow.name])
    app.engine.finish_tasks([Completed(first, "[" + ",".join(map(str, range(20))) + "]")])
    tasks = app.engine.claim_tasks("default", 50, instance_id="t", workflows=[flow.name])
    assert len(tasks) == 20
    assert {t.run_id for t in tasks} == {run.id}
    assert sorted(t.input for t in tasks) == list(range(20))
    assert all(dict(t.dependency_outputs) == {"items": list(range(20))} for t in tasks)
    tasks[0].dependency_outputs["items"].append("changed by one element")
    assert tasks[1].dependency_outputs["items"] == list(range(20))
