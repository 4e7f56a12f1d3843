"""Fork: ``App.fork(run_id, from_step=...)`` makes a new run of the same workflow version that
keeps what the original run's steps before ``from_step`` returned (they do not run again), and
runs ``from_step`` and every step after it, on the original input or a new one. The original is
left as it was; the fork names it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.errors import InvalidArgument, RunNotFound, WorkflowFailed
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def make_order_flow(calls: list[str], fixed: dict[str, bool]) -> Workflow:
    flow = Workflow("order", max_attempts=1)

    @flow.step(depends_on=[])
    def lines(input: dict[str, Any]) -> list[int]:
        return input["lines"]

    @flow.step(depends_on=[])
    def reserve(input: dict[str, Any]) -> dict[str, Any]:
        calls.append("reserve")
        return {"sku": input["sku"], "reservation": len(calls)}

    @flow.map(over="lines")
    def price(line: int) -> int:
        calls.append(f"price{line}")
        return line * 10

    @flow.step(depends_on=["reserve", "price"])
    def charge(reserve: dict[str, Any], price: list[int]) -> dict[str, Any]:
        calls.append("charge")
        if not fixed["done"]:
            raise RuntimeError("the card service is down")
        return {"charged": sum(price), "reservation": reserve["reservation"]}

    @flow.step(depends_on=["charge"])
    def ship(charge: dict[str, Any]) -> str:
        calls.append("ship")
        return f"shipped after charging {charge['charged']}"

    return flow


def test_a_fork_keeps_the_steps_before_and_runs_from_the_step_on(
    make_app: Callable[..., App],
) -> None:
    calls: list[str] = []
    fixed = {"done": False}
    flow = make_order_flow(calls, fixed)
    app = make_app(flow)
    original = app.start(flow, {"sku": "A1", "lines": [1, 2]})
    with running_worker(app):
        with pytest.raises(WorkflowFailed):
            original.result(timeout=10)
        assert sorted(calls) == sorted(["reserve", "price1", "price2", "charge"])
        fixed["done"] = True
        calls.clear()
        fork = app.fork(original.id, from_step="charge")
        assert fork.id != original.id
        assert fork.result(timeout=10) == "shipped after charging 30"
    assert calls == ["charge", "ship"]  # reserve and the map elements kept their outputs
    info = app.get_run(fork.id)
    assert info.forked_from == original.id
    assert info.version == app.get_run(original.id).version
    assert info.input == {"sku": "A1", "lines": [1, 2]}
    steps = {s.name: s for s in info.steps}
    assert steps["reserve"].output == {"sku": "A1", "reservation": 1}
    assert steps["reserve"].attempts == 0  # not run in this run
    assert steps["price"].output == [10, 20]
    assert steps["price"].task_count == 2
    assert steps["charge"].output == {"charged": 30, "reservation": 1}
    assert all(s.status is StepStatus.COMPLETED for s in info.steps)
    assert app.get_run(original.id).status is RunStatus.FAILED  # left as it was


def test_a_fork_from_a_root_with_a_new_input_runs_what_depends_on_it(
    make_app: Callable[..., App],
) -> None:
    calls: list[str] = []
    flow = make_order_flow(calls, {"done": True})
    app = make_app(flow)
    original = app.start(flow, {"sku": "B2", "lines": [3]})
    with running_worker(app):
        original.result(timeout=10)
        calls.clear()
        fork = app.fork(original.id, "reserve", input={"sku": "C3", "lines": [3]})
        assert fork.result(timeout=10) == "shipped after charging 30"
    # lines does not depend on reserve: kept; the map does not either: kept
    assert sorted(calls) == ["charge", "reserve", "ship"]
    assert app.get_run(fork.id).input == {"sku": "C3", "lines": [3]}


def test_fork_errors_name_the_problem(make_app: Callable[..., App]) -> None:
    flow = make_order_flow([], {"done": True})
    app = make_app(flow)
    original = app.start(flow, {"sku": "D4", "lines": []})
    with pytest.raises(InvalidArgument, match="no step 'nope' to fork from"):
        app.fork(original.id, "nope")
    with pytest.raises(RunNotFound):
        app.fork("0190a8a2-0000-7000-8000-000000000000", "charge")
    assert len(app.list_runs()) == 1  # nothing written
