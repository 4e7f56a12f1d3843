"""The worker's log: every record about a step carries its run, step and attempt."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from tests.conftest import running_worker

logged = Workflow("logged")


@logged.step
def only(input: int) -> int:
    return input + 1


def test_step_starts_and_completions_are_logged_at_debug_with_their_context(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(logged)
    caplog.set_level(logging.DEBUG, logger="pypgflow.worker")
    run = app.start(logged, 1)
    with running_worker(app):
        assert run.result(timeout=10) == 2
    records = [
        r for r in caplog.records if r.name == "pypgflow.worker" and getattr(r, "step", None)
    ]
    messages = [r.getMessage() for r in records]
    assert any(m.startswith(f"step only of run {run.id} started (attempt 1)") for m in messages)
    assert any(m.startswith(f"step only of run {run.id} completed in") for m in messages)
    for record in records:
        assert record.run_id == run.id  # type: ignore[attr-defined]
        assert record.attempt == 1  # type: ignore[attr-defined]
        assert record.instance_id == app.instance_id  # type: ignore[attr-defined]
