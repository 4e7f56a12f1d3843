"""Logging: standard logging, run/step/attempt context on every record, nothing printed."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from pypgflow import Backoff, StepContext, Workflow, WorkflowFailed, execute
from pypgflow.context import RECORD_CONTEXT

NO_WAIT = Backoff(base=0.0)


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pypgflow")]


def _flaky_flow() -> Workflow:
    flow = Workflow("logged")
    calls: list[int] = []

    @flow.step
    def prepare(input: int) -> int:
        return input

    @flow.step
    def flaky(value: int, ctx: StepContext) -> int:
        ctx.logger.info("working on %s", value, extra={"custom": "kept"})
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first call fails")
        return value

    return flow


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_every_record_carries_the_run_context(caplog: pytest.LogCaptureFixture, retry: str) -> None:
    caplog.set_level(logging.DEBUG, logger="pypgflow")
    assert execute(_flaky_flow(), 5, retry=retry, backoff=NO_WAIT) == 5  # type: ignore[arg-type]
    records = _records(caplog)
    assert records
    run_ids = set()
    for record in records:
        for attribute in RECORD_CONTEXT:
            assert hasattr(record, attribute), (attribute, record.getMessage())
        assert record.workflow == "logged"  # type: ignore[attr-defined]
        run_ids.add(record.run_id)  # type: ignore[attr-defined]
    assert len(run_ids) == 1
    step_records = [r for r in records if r.step is not None]  # type: ignore[attr-defined]
    assert step_records
    assert all(isinstance(r.attempt, int) for r in step_records)  # type: ignore[attr-defined]


def test_step_events_in_step_retry_mode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pypgflow")
    execute(_flaky_flow(), 5, retry="step", backoff=NO_WAIT)
    events = [
        (r.event, r.step, r.attempt)  # type: ignore[attr-defined]
        for r in _records(caplog)
        if r.name == "pypgflow"
    ]
    assert events == [
        ("workflow.started", None, None),
        ("step.started", "prepare", 1),
        ("step.succeeded", "prepare", 1),
        ("step.started", "flaky", 1),
        ("step.failed", "flaky", 1),
        ("step.retrying", "flaky", 1),
        ("step.started", "flaky", 2),
        ("step.succeeded", "flaky", 2),
        ("workflow.succeeded", None, None),
    ]
    levels = {r.event: r.levelno for r in _records(caplog) if r.name == "pypgflow"}  # type: ignore[attr-defined]
    assert levels["step.failed"] == logging.WARNING
    assert levels["workflow.started"] == logging.INFO
    assert levels["step.started"] == logging.DEBUG
    succeeded = [r for r in _records(caplog) if getattr(r, "event", "") == "step.succeeded"]
    assert all(r.elapsed >= 0 for r in succeeded)  # type: ignore[attr-defined]


def test_workflow_retry_and_failure_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pypgflow")
    flow = Workflow("always-fails")

    @flow.step
    def broken(input: Any) -> None:
        raise RuntimeError("nope")

    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, max_attempts=2, backoff=NO_WAIT)
    records = _records(caplog)
    retrying = [r for r in records if getattr(r, "event", "") == "workflow.retrying"]
    assert len(retrying) == 1
    assert (retrying[0].step, retrying[0].attempt) == ("broken", 1)  # type: ignore[attr-defined]
    assert "retrying from the first step" in retrying[0].getMessage()
    failed = [r for r in records if getattr(r, "event", "") == "workflow.failed"]
    assert len(failed) == 1
    assert failed[0].levelno == logging.ERROR
    assert failed[0].run_id == info.value.run_id  # type: ignore[attr-defined]
    assert "failed at step 'broken' after 2 attempts" in failed[0].getMessage()


def test_ctx_logger_records_carry_the_step_context_and_caller_extras(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pypgflow.step")
    execute(_flaky_flow(), 7, retry="step", backoff=NO_WAIT)
    mine = [r for r in caplog.records if r.name == "pypgflow.step"]
    assert [r.getMessage() for r in mine] == ["working on 7", "working on 7"]
    assert [r.attempt for r in mine] == [1, 2]  # type: ignore[attr-defined]
    assert all(r.step == "flaky" for r in mine)  # type: ignore[attr-defined]
    assert all(r.workflow == "logged" for r in mine)  # type: ignore[attr-defined]
    assert all(r.custom == "kept" for r in mine)  # type: ignore[attr-defined]
    assert mine[0].run_id == mine[1].run_id  # type: ignore[attr-defined]


def test_a_formatter_can_use_the_context_on_every_record() -> None:
    stream: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.append(self.format(record))

    handler = ListHandler()
    handler.setFormatter(logging.Formatter("%(workflow)s %(step)s #%(attempt)s %(event)s"))
    logger = logging.getLogger("pypgflow")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        execute(_flaky_flow(), 1, retry="step", backoff=NO_WAIT)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    assert "logged None #None workflow.started" in stream
    assert "logged flaky #1 step.failed" in stream
    assert "logged flaky #2 step.succeeded" in stream


def test_the_library_prints_nothing() -> None:
    # A fresh interpreter with no logging configuration: warnings and errors must not reach
    # logging's last-resort handler (stderr), and nothing may be printed to stdout.
    code = textwrap.dedent(
        """
        from pypgflow import Backoff, Workflow, WorkflowFailed, execute

        flow = Workflow("quiet")

        @flow.step
        def broken(input):
            raise RuntimeError("nope")

        try:
            execute(flow, None, backoff=Backoff(base=0.0))
        except WorkflowFailed:
            pass
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    assert result.stderr == ""
