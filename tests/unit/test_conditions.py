"""when=: a step whose condition is false is skipped, and its dependents get None for it."""

from __future__ import annotations

from typing import Any

import pytest

from pypgflow import StepContext, Workflow, WorkflowDefinitionError, WorkflowFailed, execute

pytestmark = pytest.mark.timeout(30)


def triage(calls: list[str]) -> Workflow:
    flow = Workflow("triage")

    @flow.step
    def classify(input: dict[str, Any]) -> dict[str, bool]:
        calls.append("classify")
        return {"spam": "win" in input["text"]}

    @flow.step(depends_on=[classify], when=lambda classify: classify["spam"])
    def quarantine(classify: dict[str, bool]) -> str:
        calls.append("quarantine")
        return "quarantined"

    @flow.step(depends_on=[classify], when=lambda classify: not classify["spam"])
    async def deliver(classify: dict[str, bool]) -> str:
        calls.append("deliver")
        return "delivered"

    @flow.step(depends_on=[quarantine, deliver])
    def report(quarantine: str | None, deliver: str | None) -> list[str | None]:
        calls.append("report")
        return [quarantine, deliver]

    return flow


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_a_false_condition_skips_the_step_and_its_dependents_get_none(retry: str) -> None:
    calls: list[str] = []
    flow = triage(calls)
    assert execute(flow, {"text": "you win"}, retry=retry) == ["quarantined", None]  # type: ignore[arg-type]
    assert calls == ["classify", "quarantine", "report"]
    calls.clear()
    assert execute(flow, {"text": "hello"}, retry=retry) == [None, "delivered"]  # type: ignore[arg-type]
    assert calls == ["classify", "deliver", "report"]


def test_conditions_bind_like_steps_and_may_be_async() -> None:
    flow = Workflow("bound")
    seen: list[Any] = []

    @flow.step
    def first(input: int) -> int:
        return input * 2

    async def big_enough(first: int, input: int, ctx: StepContext) -> bool:
        seen.append((first, input, ctx.step))
        return first > 10

    @flow.step(depends_on=[first], when=big_enough)
    def second(first: int) -> int:
        return first + 1

    assert execute(flow, 3) is None  # the only leaf was skipped
    assert execute(flow, 6) == 13
    assert seen == [(6, 3, "second"), (12, 6, "second")]


def test_a_map_over_a_skipped_step_maps_over_nothing() -> None:
    flow = Workflow("maybe_many")

    @flow.step(when=lambda input: input["fetch"])
    def fetch(input: dict[str, bool]) -> list[int]:
        return [1, 2, 3]

    @flow.map(over=fetch)
    def double(item: int) -> int:
        return item * 2

    assert execute(flow, {"fetch": True}) == [2, 4, 6]
    assert execute(flow, {"fetch": False}) == []


def test_a_condition_that_raises_fails_the_step_like_the_step_would() -> None:
    flow = Workflow("broken_condition")
    flow.step(name="only", when=lambda input: input["missing"])(lambda input: input)
    with pytest.raises(WorkflowFailed, match="KeyError"):
        execute(flow, {}, max_attempts=1)


def test_a_condition_is_checked_at_declaration() -> None:
    flow = Workflow("checked")
    flow.step(name="a")(lambda input: input)
    with pytest.raises(WorkflowDefinitionError, match="when= takes a function"):
        flow.step(name="b", when=True)(lambda a: a)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="its when= condition: parameter 'nope'"):
        flow.step(name="c", depends_on=["a"], when=lambda a, nope: a)(lambda a: a)
