"""Blueprints: a workflow's stored definition, and the code-less workflow made from it."""

from __future__ import annotations

import json

import pytest

from pypgflow import Backoff, NotSupported, Workflow, WorkflowDefinitionError
from pypgflow.blueprints import blueprint, from_blueprint
from pypgflow.orchestration import Changes, new_run


def shop() -> Workflow:
    flow = Workflow("shop", max_attempts=4, version="7")

    @flow.step(timeout=5.0)
    def cart(input: dict[str, list[int]]) -> list[int]:
        return input["items"]

    @flow.map(over=cart, backoff=Backoff(base=2.0, jitter=0.0))
    def price(item: int) -> int:
        return item * 10

    @flow.step(depends_on=[price], when=lambda price: bool(price))
    def total(price: list[int]) -> int:
        return sum(price)

    return flow


def test_a_blueprint_is_json_and_names_no_code() -> None:
    data = json.loads(json.dumps(blueprint(shop())))
    assert (data["name"], data["version"]) == ("shop", "7")
    assert [(s["name"], s["depends_on"], s["is_map"], s["conditional"]) for s in data["steps"]] == [
        ("cart", [], False, False),
        ("price", ["cart"], True, False),
        ("total", ["price"], False, True),
    ]
    assert [s["max_attempts"] for s in data["steps"]] == [4, 4, 4]
    assert data["steps"][0]["timeout"] == 5.0
    assert data["steps"][1]["backoff"]["base"] == 2.0


def test_the_code_less_workflow_starts_runs_as_the_workflow_would() -> None:
    original = shop()
    copy = from_blueprint(blueprint(original))
    assert (copy.name, copy.version) == ("shop", "7")
    assert blueprint(copy)["steps"] == [
        {**s, "conditional": False} for s in blueprint(original)["steps"]
    ]
    made, expected = Changes(), Changes()
    run = new_run(copy, run_id="r", input_json='{"items":[1]}', queue="q", priority=0, changes=made)
    like = new_run(
        original, run_id="r", input_json='{"items":[1]}', queue="q", priority=0, changes=expected
    )
    assert run.steps == like.steps
    assert made.new_tasks == expected.new_tasks
    with pytest.raises(NotSupported, match="has no code in this process"):
        copy.steps["cart"].fn()


def test_a_fingerprinted_version_survives_the_round_trip() -> None:
    flow = Workflow("plain")
    flow.step(name="a")(lambda input: input)
    assert from_blueprint(blueprint(flow)).version == flow.version


@pytest.mark.parametrize("data", [{}, {"format": 1, "name": "x"}, {"format": 9, "name": "x"}, 3])
def test_what_is_not_a_blueprint_is_refused(data: object) -> None:
    with pytest.raises(WorkflowDefinitionError):
        from_blueprint(data)
