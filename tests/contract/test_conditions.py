"""when= in durable runs: a false condition skips the step without running it (shown as
skipped), its dependents receive None and run; on every engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)

ran: list[str] = []
triage = Workflow("triage")


@triage.step
def classify(input: dict[str, Any]) -> dict[str, bool]:
    return {"spam": "win" in input["text"]}


@triage.step(depends_on=[classify], when=lambda classify: classify["spam"])
def quarantine(classify: dict[str, bool]) -> list[str]:
    ran.append("quarantine")
    return ["quarantined"]


@triage.step(depends_on=[classify], when=lambda classify: not classify["spam"])
async def deliver(classify: dict[str, bool]) -> str:
    ran.append("deliver")
    return "delivered"


@triage.step(depends_on=[quarantine, deliver])
def report(quarantine: list[str] | None, deliver: str | None) -> list[Any]:
    return [quarantine, deliver]


@triage.map(over=quarantine)
def each_letter(item: str) -> str:
    return item.upper()


def test_a_false_condition_skips_the_step_and_the_run_goes_on(
    make_app: Callable[..., App],
) -> None:
    ran.clear()
    app = make_app(triage)
    ham = app.start(triage, {"text": "hello"})
    spam = app.start(triage, {"text": "you win"})
    with running_worker(app):
        assert ham.result(timeout=10) == {"report": [None, "delivered"], "each_letter": []}
        spam_result = spam.result(timeout=10)
    assert spam_result == {"report": [["quarantined"], None], "each_letter": ["QUARANTINED"]}
    assert sorted(ran) == ["deliver", "quarantine"]  # each ran once, for its own run
    info = app.get_run(ham.id)
    assert info.status is RunStatus.COMPLETED
    steps = {s.name: s for s in info.steps}
    assert steps["quarantine"].status is StepStatus.SKIPPED
    assert steps["quarantine"].output is None
    assert steps["each_letter"].status is StepStatus.COMPLETED
    assert steps["each_letter"].output == []
    assert {s.name: s.status for s in app.get_run(spam.id).steps}["deliver"] is (StepStatus.SKIPPED)


def test_a_skipped_step_is_done_for_a_resumed_run(make_app: Callable[..., App]) -> None:
    flow = Workflow("resumable")
    state = {"fail": True}

    @flow.step(when=lambda input: False)
    def never(input: int) -> int:  # pragma: no cover - always skipped
        return input

    @flow.step(depends_on=[never], max_attempts=1)
    def after(never: None) -> str:
        if state["fail"]:
            raise RuntimeError("not yet")
        return f"after {never}"

    app = make_app(flow)
    run = app.start(flow, 1)
    with running_worker(app):
        with pytest.raises(Exception, match="not yet"):
            run.result(timeout=10)
        state["fail"] = False
        assert app.retry(run.id)
        assert run.result(timeout=10) == "after None"
    steps = {s.name: s.status for s in app.get_run(run.id).steps}
    assert steps == {"never": StepStatus.SKIPPED, "after": StepStatus.COMPLETED}
