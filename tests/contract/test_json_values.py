"""Inputs and outputs are JSON: a non-JSON input is refused at start with nothing written; a
non-JSON output fails that attempt with a clear error; JSON values round-trip exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from pypgflow import SerializationError, Workflow, WorkflowFailed
from pypgflow.app import App
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def echo_flow() -> Workflow:
    flow = Workflow("echo")
    flow.step(name="echo")(lambda input: input)
    return flow


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        {"when": datetime.timedelta(days=1)},
        [float("nan")],
        {"inf": float("inf")},
        b"bytes",
        object(),
        {"text": "a\x00b"},
        ["lone \ud800 surrogate"],
        {"key\x00": 1},
    ],
    ids=["set", "timedelta", "nan", "inf", "bytes", "object", "nul", "surrogate", "nul-key"],
)
def test_non_json_input_is_refused_and_nothing_is_written(
    make_app: Callable[..., App], value: Any
) -> None:
    flow = echo_flow()
    app = make_app(flow)
    with pytest.raises(SerializationError, match="the input of workflow 'echo' is not"):
        app.start(flow, value)
    with pytest.raises(SerializationError):
        asyncio.run(app.start_async(flow, value))
    with pytest.raises(TypeError):  # SerializationError is a TypeError too
        app.start(flow, value, idempotency_key="k")
    assert app.list_runs() == []


def test_json_values_round_trip(make_app: Callable[..., App]) -> None:
    flow = echo_flow()
    app = make_app(flow)
    values: list[Any] = [
        None,
        0,
        -1.5,
        "",
        'naïve ☃ "quoted" \\ back',
        "\\u0000 is only text here",
        "\U0001f600 astral",
        "tab\there, new\nline, return\r, \\N and \\. as text",
        [],
        {},
        {"nested": {"list": [1, "two", None, True, 2.25]}},
        10**18,
    ]
    runs = [app.start(flow, v) for v in values]
    batch = values * 7  # a large batch: PostgreSQL streams it by COPY
    many = app.start_many(flow, batch)
    with running_worker(app):
        assert [r.result(timeout=5) for r in runs] == values
        assert [r.result(timeout=5) for r in many] == batch
    assert app.get_run(runs[7].id).input == values[7]
    assert app.get_run(many[-4].id).input == batch[-4]


def test_a_large_batch_of_map_runs_round_trips(make_app: Callable[..., App]) -> None:
    flow = Workflow("doubles")
    flow.map(over=None, name="double")(lambda n: {"n\t": n * 2})
    app = make_app(flow)
    inputs = [list(range(i % 4)) for i in range(100)]
    runs = app.start_many(flow, inputs)
    with running_worker(app):
        assert [r.result(timeout=10) for r in runs] == [[{"n\t": n * 2} for n in i] for i in inputs]


def test_non_json_output_fails_the_step_clearly_without_retrying(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("bad-output", max_attempts=3)
    calls: list[int] = []

    @flow.step
    def produce(input: object, ctx) -> object:  # type: ignore[no-untyped-def]
        calls.append(ctx.attempt)
        return {"tags": {"a", "b"}}

    @flow.step
    def consume(produce: dict[str, str]) -> str:  # pragma: no cover - never runs
        return produce["when"]

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app), pytest.raises(WorkflowFailed):
        run.result(timeout=5)
    assert calls == [1]  # the same output would fail again: not retried
    (error,) = app.get_run(run.id).steps[0].errors
    assert error.type == "SerializationError"
    assert "the output of step 'produce' is not JSON-serializable" in error.message
    assert "type set" in error.message


def test_non_json_output_on_every_attempt_fails_the_run(make_app: Callable[..., App]) -> None:
    flow = Workflow("never-json", max_attempts=1)
    flow.step(name="produce")(lambda input: object())
    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app), pytest.raises(WorkflowFailed, match="SerializationError"):
        run.result(timeout=5)


def test_non_json_map_element_output_names_the_element(make_app: Callable[..., App]) -> None:
    flow = Workflow("map-out", max_attempts=1)
    flow.map(over=None, name="each")(lambda n: {n} if n == 2 else n)
    app = make_app(flow)
    run = app.start(flow, [1, 2, 3])
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    (error,) = caught.value.errors
    assert error.where == "each[1]"
    assert "the output of step 'each[1]' is not JSON-serializable" in error.message


@pytest.mark.parametrize(
    ("bad", "problem"),
    [("a\x00b", "NUL character"), ("\udcff", "lone surrogate")],
    ids=["nul", "surrogate"],
)
def test_unstorable_output_fails_the_attempt_and_spares_other_runs(
    make_app: Callable[..., App], bad: str, problem: str
) -> None:
    """Valid for Python's json module, refused by PostgreSQL: refused where it is produced, so
    the worker records a failed attempt instead of choking on the write."""
    flow = Workflow("unstorable", max_attempts=1)
    flow.step(name="produce")(lambda input: {"text": bad} if input else "fine")
    app = make_app(flow)
    poisoned, healthy = app.start(flow, True), app.start(flow, False)
    with running_worker(app):
        with pytest.raises(WorkflowFailed) as caught:
            poisoned.result(timeout=5)
        assert healthy.result(timeout=5) == "fine"
    (error,) = caught.value.errors
    assert error.type == "SerializationError"
    assert "the output of step 'produce' is not storable" in error.message
    assert problem in error.message


def test_exception_messages_with_any_character_are_kept(make_app: Callable[..., App]) -> None:
    flow = Workflow("odd-error", max_attempts=1)

    @flow.step
    def fail(input: object) -> None:
        raise ValueError("binary \x00 and \ud800 in a message")

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    (error,) = caught.value.errors
    assert error.type == "ValueError"
    assert error.message.startswith("binary ")
    assert "in a message" in error.message
    assert app.get_run(run.id).error is not None


@dataclasses.dataclass(frozen=True)
class Invoice:
    number: uuid.UUID
    issued: datetime.datetime
    amount: Decimal


typed = Workflow("typed")


@typed.step
def issue(input: Invoice) -> Invoice:
    assert isinstance(input.issued, datetime.datetime)
    return dataclasses.replace(input, amount=input.amount * 2)


@typed.step
def receipt(issue: Invoice) -> dict[str, object]:
    assert isinstance(issue.amount, Decimal)
    return {"number": issue.number, "amount": issue.amount, "day": issue.issued.date()}


def test_typed_values_round_trip_through_the_database(make_app: Callable[..., App]) -> None:
    invoice = Invoice(
        number=uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
        issued=datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC),
        amount=Decimal("10.05"),
    )
    app = make_app(typed)
    run = app.start(typed, invoice)
    with running_worker(app):
        # run.result() gives the stored JSON, as plain JSON values
        assert run.result(timeout=5) == {
            "number": "01890a5d-ac96-774b-bcce-b302099a8057",
            "amount": "20.10",
            "day": "2026-12-02",
        }
    steps = {s.name: s.output for s in app.get_run(run.id).steps}
    assert steps["issue"]["issued"] == "2026-12-02T12:00:00+00:00"
    assert app.get_run(run.id).input["amount"] == "10.05"
