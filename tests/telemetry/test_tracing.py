"""OpenTelemetry traces, on every engine: a start is a child of the span current where it is
called, every attempt of every step joins its trace (also on a worker in another process), the
steps' own spans nest under their step's, a failed attempt records its error, and a stored trace
context that is not one is ignored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pypgflow.app import App
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.telemetry import otel
from tests.conftest import running_worker
from tests.telemetry.flows import traced

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def wait_for_spans(exporter: InMemorySpanExporter, name: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(by_name(exporter.get_finished_spans(), name)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {name} spans"
        time.sleep(0.02)


def test_one_trace_from_the_request_through_every_step(
    make_app: Callable[..., App], spans: InMemorySpanExporter
) -> None:
    app = make_app(traced)
    tracing = otel.instrument(app)
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        run = app.start(traced, {"n": 4, "fail_first": True})
    with running_worker(app) as worker:
        assert run.result() == 8
        wait_for_spans(spans, "pypgflow.run", 1)
    tracing.close()
    finished = spans.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in finished if s.name != "request"} == {trace_id}

    (start,) = by_name(finished, "pypgflow.start")
    assert start.parent is not None
    assert start.parent.span_id == request.get_span_context().span_id
    assert start.attributes is not None
    assert start.attributes["pypgflow.run_id"] == run.id
    assert start.attributes["pypgflow.workflow"] == "traced"
    assert start.attributes["pypgflow.queue"] == "default"

    steps = sorted(by_name(finished, "pypgflow.step"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {}).get("pypgflow.step") for s in steps] == ["fetch", "fetch", "store"]
    assert [(s.attributes or {}).get("pypgflow.attempt") for s in steps] == [1, 2, 1]
    for step in steps:
        assert step.parent is not None
        assert step.parent.span_id == start.context.span_id
        attributes = step.attributes or {}
        assert attributes["pypgflow.run_id"] == run.id
        assert attributes["pypgflow.workflow"] == "traced"
        assert attributes["pypgflow.queue"] == "default"
        assert attributes["pypgflow.instance_id"] == worker.instance_id
    failed, retried, stored = steps
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["pypgflow.outcome"] == "retried"
    (exception,) = [e for e in failed.events if e.name == "exception"]
    assert (exception.attributes or {})["exception.type"] == "ValueError"
    assert (exception.attributes or {})["exception.message"] == "the first try fails"
    assert retried.status.status_code is StatusCode.UNSET
    assert (stored.attributes or {})["pypgflow.outcome"] == "completed"

    # the steps' own spans, in a sync step's thread and an async step's task, nest under theirs
    fetches = by_name(finished, "fetch.http")
    assert sorted(s.parent.span_id for s in fetches if s.parent) == sorted(
        s.context.span_id for s in (failed, retried)
    )
    (store_db,) = by_name(finished, "store.db")
    assert store_db.parent is not None
    assert store_db.parent.span_id == stored.context.span_id

    (run_span,) = by_name(finished, "pypgflow.run")
    assert run_span.parent is not None
    assert run_span.parent.span_id == start.context.span_id
    assert (run_span.attributes or {})["pypgflow.status"] == "completed"
    assert run_span.start_time is not None
    assert start.start_time is not None
    assert run_span.start_time <= start.end_time  # from the run's creation, to its finish
    assert run_span.end_time is not None
    assert stored.end_time is not None
    assert run_span.end_time >= stored.end_time


def test_every_run_of_a_batch_joins_the_trace_it_was_started_in(
    make_app: Callable[..., App], spans: InMemorySpanExporter
) -> None:
    app = make_app(traced)
    tracing = otel.instrument(app)
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        runs = app.start_many(traced, [{"n": n} for n in range(100)])
    with running_worker(app):
        assert [r.result() for r in runs] == [2 * n for n in range(100)]
        wait_for_spans(spans, "pypgflow.run", 100)
    tracing.close()
    finished = spans.get_finished_spans()
    (start,) = by_name(finished, "pypgflow.start")
    assert start.parent is not None
    assert start.parent.span_id == request.get_span_context().span_id
    steps = by_name(finished, "pypgflow.step")
    assert len(steps) == 200
    assert {s.context.trace_id for s in steps} == {request.get_span_context().trace_id}
    assert {s.parent.span_id for s in steps if s.parent} == {start.context.span_id}
    assert len({(s.attributes or {})["pypgflow.run_id"] for s in steps}) == 100


def test_runs_started_without_tracing_run_as_before(
    make_app: Callable[..., App], spans: InMemorySpanExporter
) -> None:
    app = make_app(traced)
    run = app.start(traced, {"n": 1})  # not instrumented yet: no trace context stored
    tracing = otel.instrument(app)
    with running_worker(app):
        assert run.result() == 2
    tracing.close()
    steps = by_name(spans.get_finished_spans(), "pypgflow.step")
    assert len(steps) == 2
    assert all(s.parent is None for s in steps)  # each the root of a trace of its own
    assert not by_name(spans.get_finished_spans(), "pypgflow.run")


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "not json",
        "[1, 2]",
        '{"traceparent": 7}',
        '{"traceparent": "00-zz-zz-01"}',
        '{"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"}',
        json.dumps({"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "x": "y" * 2000}),
    ],
)
def test_a_stored_trace_context_that_is_not_one_is_ignored(stored: str | None) -> None:
    assert otel.stored_context(stored) is None


def test_a_well_formed_stored_trace_context_is_read() -> None:
    carrier = json.dumps({"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    context = otel.stored_context(carrier)
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == (int("a" * 32, 16), int("b" * 16, 16))


def _command() -> list[str]:
    script = Path(sys.executable).parent / "pypgflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pypgflow.cli"]


def test_a_worker_in_another_process_joins_the_starting_process_trace(
    database_url: str, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    exported = tmp_path / "spans.jsonl"
    app = App(database_url, workflows=[traced])
    tracing = otel.instrument(app)
    try:
        with trace.get_tracer("tests").start_as_current_span("request") as request:
            run = app.start(traced, {"n": 5})
        process = subprocess.Popen(
            [
                *_command(), "worker", "tests.telemetry.traced_app:app", "--poll-interval",
                "0.2", "--instance-id", "traced-worker",
            ],
            cwd=ROOT,
            env={**os.environ, DATABASE_URL_ENV: database_url, "PYPGFLOW_TEST_SPANS": str(exported)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert run.result(timeout=30) == 10
            deadline = time.monotonic() + 10
            while '"pypgflow.run"' not in (exported.read_text() if exported.exists() else ""):
                assert time.monotonic() < deadline, "the worker exported no pypgflow.run span"
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
    finally:
        tracing.close()
        app.close()
    (start,) = by_name(spans.get_finished_spans(), "pypgflow.start")
    trace_id = f"{request.get_span_context().trace_id:032x}"
    start_id = f"{start.context.span_id:016x}"
    there: list[dict[str, Any]] = [json.loads(line) for line in exported.read_text().splitlines()]
    assert {s["trace_id"] for s in there} == {trace_id}
    steps = [s for s in there if s["name"] == "pypgflow.step"]
    assert sorted(s["attributes"]["pypgflow.step"] for s in steps) == ["fetch", "store"]
    assert {s["parent_id"] for s in steps} == {start_id}
    assert {s["attributes"]["pypgflow.instance_id"] for s in steps} == {"traced-worker"}
    assert {s["attributes"]["pypgflow.run_id"] for s in steps} == {run.id}
    step_ids = {s["attributes"]["pypgflow.step"]: s["span_id"] for s in steps}
    inner = {s["name"]: s["parent_id"] for s in there if s["name"] in ("fetch.http", "store.db")}
    assert inner == {"fetch.http": step_ids["fetch"], "store.db": step_ids["store"]}
    (run_span,) = [s for s in there if s["name"] == "pypgflow.run"]
    assert run_span["parent_id"] == start_id


def test_run_spans_can_be_left_out(
    make_app: Callable[..., App], spans: InMemorySpanExporter
) -> None:
    app = make_app(traced)
    tracing = otel.instrument(app, run_spans=False)
    run = app.start(traced, {"n": 2})
    with running_worker(app):
        assert run.result() == 4
    tracing.close()
    finished = spans.get_finished_spans()
    (start,) = by_name(finished, "pypgflow.start")
    steps = by_name(finished, "pypgflow.step")
    assert len(steps) == 2
    assert all(s.parent is not None and s.parent.span_id == start.context.span_id for s in steps)
    assert not by_name(finished, "pypgflow.run")
