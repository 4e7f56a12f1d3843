"""Arguments a database cannot take are refused before anything is written, on both engines
alike, with an InvalidArgument (or SerializationError) naming the argument: never the
database's own error (a DatabaseError) or a raw UnicodeEncodeError halfway through a write."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pypgflow import Backoff, InvalidArgument, RetryAfter, SerializationError, Workflow
from pypgflow.app import App
from pypgflow.defaults import MAX_DELAY, MAX_LIST_LIMIT
from pypgflow.insight import RunFilter
from pypgflow.worker import Worker
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

UNSTORABLE = {"nul": "a\x00b", "surrogate": "a\ud800b"}
WORDS = {"nul": "must not contain the NUL character", "surrogate": "must be valid Unicode"}


def echo_flow(name: str = "echo") -> Workflow:
    flow = Workflow(name)
    flow.step(name="echo")(lambda input: input)
    return flow


def nothing_written(app: App) -> None:
    assert app.list_runs() == []
    assert app.engine.queue_depths() == []


@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
def test_unstorable_queue_names_and_keys_are_refused(
    make_app: Callable[..., App], kind: str
) -> None:
    flow = echo_flow()
    app = make_app(flow)
    text = UNSTORABLE[kind]
    starts: list[tuple[str, Callable[[], Any]]] = [
        ("queue", lambda: app.start(flow, 1, queue=text)),
        ("queue", lambda: app.start_many(flow, [1, 2], queue=text)),
        ("queue", lambda: asyncio.run(app.start_async(flow, 1, queue=text))),
        ("queue", lambda: app.register(echo_flow("other"), queue=text)),
        ("queue", lambda: Worker(app, [text], install_signal_handlers=False)),
        ("queue", lambda: app.schedule("nightly", "0 3 * * *", flow, queue=text)),
        ("idempotency_key", lambda: app.start(flow, 1, idempotency_key=text)),
        ("idempotency_key", lambda: app.start(flow, 1, idempotency_key=f"k-{text}")),
    ]
    for argument, start in starts:
        with pytest.raises(InvalidArgument, match=f"^{argument} {WORDS[kind]}"):
            start()
    nothing_written(app)
    assert app.defined_schedules == {}
    for name in ("workflow", "queue", "search", "version"):
        with pytest.raises(InvalidArgument, match=f"^{name} {WORDS[kind]}"):
            app.engine.find_runs(RunFilter(**{name: text}), limit=10)


@pytest.mark.parametrize(
    "delay",
    [MAX_DELAY * 1.01, 1e15, 10**400, timedelta.max, float("inf"), float("nan"), -1],
    ids=["just-over", "1e15", "huge-int", "timedelta-max", "inf", "nan", "negative"],
)
def test_delays_beyond_a_hundred_years_are_refused(
    make_app: Callable[..., App], delay: Any
) -> None:
    flow = echo_flow()
    app = make_app(flow)
    words = re.escape("delay must be a number of seconds from 0 to 3155760000 (100 years)")
    with pytest.raises(InvalidArgument, match=words):
        app.start(flow, 1, delay=delay)
    with pytest.raises(InvalidArgument, match=words):
        app.start_many(flow, [1, 2], delay=delay)
    with pytest.raises(InvalidArgument, match=words):
        app.start(flow, 1, delay=delay, idempotency_key="k")
    nothing_written(app)
    with pytest.raises(InvalidArgument, match="RetryAfter takes a number of seconds from 0"):
        RetryAfter(delay)


def test_the_longest_delay_is_stored_and_read_back(make_app: Callable[..., App]) -> None:
    flow = echo_flow()
    app = make_app(flow)
    run = app.start(flow, 1, delay=MAX_DELAY)
    info = app.get_run(run.id)
    assert info.scheduled_at is not None
    waits = (info.scheduled_at - info.created_at).total_seconds()
    assert abs(waits - MAX_DELAY) < 5
    assert app.list_runs()[0].id == run.id  # listings read it back too
    assert app.start(flow, 1, delay=timedelta(days=36524)).info().scheduled_at is not None
    assert Backoff(max=MAX_DELAY).max == MAX_DELAY
    with pytest.raises(InvalidArgument, match="Backoff max must be from 0"):
        Backoff(max=MAX_DELAY * 2)


def test_a_step_asking_to_retry_in_too_long_fails_alone(make_app: Callable[..., App]) -> None:
    """RetryAfter beyond the bound is an error of that attempt (its step's code is wrong), not
    an outcome the database refuses, which would hold up every outcome of its batch."""
    flow = Workflow("patient")

    @flow.step(max_attempts=2)
    def wait_long(input: Any) -> None:
        raise RetryAfter(1e15)

    app = make_app(flow, echo_flow())
    slow = app.start(flow, None)
    quick = app.start("echo", 7)
    with running_worker(app):
        assert quick.result(timeout=10) == 7
        with pytest.raises(Exception, match="RetryAfter takes a number of seconds"):
            slow.result(timeout=10)
    attempts = app.get_run(slow.id).steps[0].attempts
    assert attempts == 2  # an ordinary failed attempt, retried by the backoff


def test_list_limits_beyond_the_bound_are_refused(make_app: Callable[..., App]) -> None:
    app = make_app(echo_flow())
    app.start("echo", 1)
    for limit in (2**63, 2**31 * 10**3, MAX_LIST_LIMIT + 1, 0, -1, True, 1.5):
        with pytest.raises(InvalidArgument, match="limit must be an integer from 1 to"):
            app.list_runs(limit=limit)
        with pytest.raises(InvalidArgument, match="limit must be an integer from 1 to"):
            app.engine.find_runs(RunFilter(), limit=limit)
    assert len(app.list_runs(limit=MAX_LIST_LIMIT)) == 1
    assert len(app.engine.find_runs(RunFilter(), limit=MAX_LIST_LIMIT).runs) == 1


@pytest.mark.parametrize(
    ("value", "key", "path"),
    [
        ({1: "a"}, "1", "$"),
        ({"order": [{"lines": {2.5: "x"}}]}, "2.5", '$["order"][0]["lines"]'),
        ([{"ok": {None: 1}}], "None", '$[0]["ok"]'),
        ({"flags": {True: 1}}, "True", '$["flags"]'),
    ],
    ids=["int", "float-deep", "none", "bool"],
)
def test_keys_that_are_not_strings_are_refused_not_converted(
    make_app: Callable[..., App], value: Any, key: str, path: str
) -> None:
    flow = echo_flow()
    app = make_app(flow)
    words = re.escape(f"the key {key} (of type ") + r".*" + re.escape(f"of the object at {path}")
    with pytest.raises(SerializationError, match=words):
        app.start(flow, value)
    with pytest.raises(SerializationError, match=words):
        app.start_many(flow, [{"fine": 1}, value])
    with pytest.raises(SerializationError, match=words):
        app.start(flow, value, idempotency_key="k")
    nothing_written(app)


def test_a_step_output_with_keys_that_are_not_strings_fails_the_step(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("counts")
    flow.step(name="count")(lambda input: {len(input): input})
    app = make_app(flow)
    run = app.start(flow, "abc")
    with running_worker(app), pytest.raises(Exception, match="the key 3 \\(of type int\\)"):
        run.result(timeout=10)
    step = app.get_run(run.id).steps[0]
    assert step.output is None
    assert step.attempts == 1  # the same output would fail again: no retry


def test_run_at_far_ahead_is_stored_and_read_back(make_app: Callable[..., App]) -> None:
    flow = echo_flow()
    app = make_app(flow)
    far = datetime(9999, 12, 31, tzinfo=UTC)
    run = app.start(flow, 1, run_at=far)
    assert app.get_run(run.id).scheduled_at == far
    assert [r.id for r in app.list_runs()] == [run.id]
