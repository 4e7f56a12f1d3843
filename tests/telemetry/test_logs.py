"""JSON log lines: the formatter's fields, with the trace of the current span; and `pypgflow
worker --log-format json --metrics-port` as a real process, its every stderr line a JSON
object and its metrics scraped over HTTP."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from pypgflow.app import App
from pypgflow.context import StepContext, context_logger
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.telemetry import otel
from pypgflow.telemetry.logs import JsonFormatter
from tests.telemetry.flows import traced

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def lines_of(log: Any) -> list[dict[str, Any]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.telemetry.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_becomes_one_json_object_with_its_run_context() -> None:
    ctx = StepContext(
        run_id="r-1", workflow="w", step="s", attempt=2, task_index=3, instance_id="i-1"
    )

    def log(logger: logging.Logger) -> None:
        step_logger = context_logger(logger.name, **ctx.to_dict())
        step_logger.info("hello %s", "there", extra={"order": 17, "odd": object()})
        try:
            raise ValueError("bad\nline")
        except ValueError:
            logger.exception("it broke")

    first, second = lines_of(log)
    assert first["message"] == "hello there"
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.telemetry.json"
    assert {k: first[k] for k in ("run_id", "workflow", "step", "attempt", "task_index")} == {
        "run_id": "r-1",
        "workflow": "w",
        "step": "s",
        "attempt": 2,
        "task_index": 3,
    }
    assert first["instance_id"] == "i-1"
    assert first["order"] == 17
    assert "odd" not in first  # not a JSON value
    assert "trace_id" not in first  # no span is current
    assert first["time"].endswith("+00:00")
    assert second["message"] == "it broke"
    assert "ValueError: bad\nline" in second["exception"]
    assert "run_id" not in second


def test_a_line_logged_under_a_span_carries_its_trace(spans: InMemorySpanExporter) -> None:
    with trace.get_tracer("tests").start_as_current_span("work") as span:
        (line,) = lines_of(lambda logger: logger.warning("inside"))
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command() -> list[str]:
    script = Path(sys.executable).parent / "pypgflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pypgflow.cli"]


@pytest.mark.slow
def test_the_worker_command_logs_json_and_serves_metrics(
    pg_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    port = free_port()
    app = App(pg_url, workflows=[traced])
    tracing = otel.instrument(app)
    process = subprocess.Popen(
        [
            *_command(), "worker", "tests.telemetry.traced_app:app", "--poll-interval", "0.2",
            "--instance-id", "json-worker", "--log-format", "json", "--metrics-port", str(port),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            DATABASE_URL_ENV: pg_url,
            "PYPGFLOW_TEST_SPANS": str(tmp_path / "spans.jsonl"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        with trace.get_tracer("tests").start_as_current_span("request") as request:
            run = app.start(traced, {"n": 2, "fail_first": True})
        assert run.result(timeout=30) == 4
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the metrics endpoint never answered"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        tracing.close()
        app.close()
    assert process.returncode == 0, err
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    completed = (("outcome", "completed"), ("step", "store"), ("workflow", "traced"))
    assert samples[("pypgflow_steps_total", completed)] == 1
    assert samples[("pypgflow_instances", (("state", "online"),))] == 1

    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    started = [line for line in lines if "started: queues" in line["message"]]
    assert started
    assert started[0]["instance_id"] == "json-worker"
    (retried,) = [line for line in lines if "retrying in" in line["message"]]
    assert retried["run_id"] == run.id
    assert (retried["step"], retried["attempt"]) == ("fetch", 1)
    # logged while the attempt's span was current: the trace of the request that started it
    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert retried["trace_id"] == trace_id
    step_lines = [line for line in lines if line["logger"] == "pypgflow.step"]
    assert len(step_lines) == 2  # "fetching 2", at each attempt
    assert {line["instance_id"] for line in step_lines} == {"json-worker"}
    assert {line["trace_id"] for line in step_lines} == {trace_id}


@pytest.mark.slow
def test_the_demo_command_logs_json_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    done = subprocess.run(
        [*_command(), "demo", "--database-url", url, "--log-format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Summary: 5 of 5 runs completed" in done.stdout
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert any("started: queues" in line["message"] for line in lines)
    assert any(line.get("run_id") and line["logger"] == "pypgflow.step" for line in lines)
