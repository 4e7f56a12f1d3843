"""Declaring durable delays and wait steps: options checked at definition, kept in the stored
definition (blueprint), part of the version where they change the graph's kind; the executor
sleeps a delay and refuses a workflow that waits for signals (a signal needs a stored run)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from pypgflow import Workflow, execute
from pypgflow.blueprints import blueprint, from_blueprint
from pypgflow.errors import NotSupported, SignalTimeout, WorkflowDefinitionError


def test_the_executor_sleeps_a_start_delay() -> None:
    flow = Workflow("cool")

    @flow.step
    def first(input: int) -> float:
        return time.monotonic()

    @flow.step(start_delay=timedelta(seconds=0.3))
    def second(first: float) -> float:
        return time.monotonic() - first

    assert execute(flow, 1) >= 0.3


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "soon", True, 1e12])
def test_bad_start_delays_are_refused(bad: Any) -> None:
    flow = Workflow("bad-delay")
    with pytest.raises(WorkflowDefinitionError, match="start_delay"):
        flow.step(name="x", start_delay=bad)(lambda input: input)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), "1h", 1e12])
def test_bad_signal_timeouts_are_refused(bad: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="timeout"):
        Workflow("w").wait_for("w", signal="s", timeout=bad)


@pytest.mark.parametrize("bad", ["", "has space", None, 3])
def test_bad_signal_names_are_refused(bad: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="signal name"):
        Workflow("w").wait_for("w", signal=bad)


def test_a_wait_step_is_a_step_that_fails_with_signal_timeout_when_called() -> None:
    flow = Workflow("w")
    assert flow.wait_for("approval", signal="approved", timeout=60, depends_on=[]) == "approval"
    step = flow.steps["approval"]
    assert step.signal == "approved"
    assert step.signal_timeout == 60.0
    assert step.max_attempts == 1
    with pytest.raises(SignalTimeout, match="waited 60 s for signal 'approved'"):
        step.fn()
    with pytest.raises(NotSupported, match="signals"):
        execute(flow)


def test_the_signal_makes_another_version_and_delays_and_waits_are_stored() -> None:
    def build(signal: str | None) -> Workflow:
        flow = Workflow("w")

        @flow.step(start_delay=5)
        def a(input: int) -> int:
            return input

        if signal is not None:
            flow.wait_for("b", signal=signal, timeout=30)
        return flow

    plain, waits, other = build(None), build("go"), build("stop")
    assert len({plain.version, waits.version, other.version}) == 3
    again = from_blueprint(blueprint(waits))
    assert again.version == waits.version
    assert again.steps["a"].start_delay == 5.0
    assert again.steps["b"].signal == "go"
    assert again.steps["b"].signal_timeout == 30.0
    assert again.steps["b"].depends_on == ("a",)
