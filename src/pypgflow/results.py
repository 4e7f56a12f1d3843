"""What waiting for a durable run gives back: its output, or the exception that says why it has
none (``WorkflowFailed`` with every attempt's error, ``WorkflowTimedOut``, ``RunCancelled``), the
same exceptions the in-process executor raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pypgflow.engines.base import Engine
from pypgflow.errors import (
    AttemptError,
    RunCancelled,
    RunNotFound,
    StepTimeout,
    WorkflowFailed,
    WorkflowTimedOut,
)
from pypgflow.records import RunInfo
from pypgflow.status import RunStatus
from pypgflow.workflow import Workflow, resolve_options


def outcome_of(
    engine: Engine, run_id: str, workflows: Mapping[str, Workflow]
) -> Callable[[], Any] | None:
    """None while the run is going; else a function that returns its output or raises why it
    has none. RunNotFound if there is no such run."""
    result = engine.run_result(run_id)
    if result is None:
        raise RunNotFound(f"no run with id {run_id}")
    if result.status is RunStatus.COMPLETED:
        output = result.output
        return lambda: output
    if result.status is RunStatus.CANCELLED:
        cancelled = RunCancelled(run_id=run_id)
        return lambda: _raise(cancelled)
    if result.status is RunStatus.FAILED:
        error = result.error or AttemptError(
            step="", attempt=0, type="Error", message="", traceback=""
        )
        failure = failure_of(engine.get_run(run_id), run_id, error, workflows)
        return lambda: _raise(failure)
    return None


def failure_of(
    info: RunInfo | None, run_id: str, error: AttemptError, workflows: Mapping[str, Workflow]
) -> WorkflowFailed:
    """The exception for a failed run: ``error`` says why it failed, ``info`` (the run with its
    steps) gives every attempt's error. A run that failed because its last attempt timed out
    raises WorkflowTimedOut, as the in-process executor does."""
    errors: list[AttemptError] = []
    if info is not None:
        for step_info in info.steps:
            errors.extend(step_info.errors)
    errors.sort(key=lambda e: (e.attempt, e.step))
    attempts = error.attempt
    workflow = info.workflow if info else ""
    message = (
        f"workflow {workflow or '?'!r} run {run_id} failed at step {error.step!r} "
        f"after {attempts} attempt{'s' if attempts != 1 else ''}: {error.type}: {error.message}"
    )
    failure = WorkflowFailed(
        message,
        workflow=workflow,
        step=error.step,
        attempts=attempts,
        errors=errors,
        run_id=run_id,
    )
    if error.type == StepTimeout.__qualname__:
        timeout = _timeout_of(workflows.get(workflow), error.step)
        return WorkflowTimedOut(failure, StepTimeout(step=error.step, timeout=timeout))
    return failure


def _timeout_of(flow: Workflow | None, step: str) -> float:
    """The step's timeout, if this process knows its workflow (0.0 if not)."""
    if flow is None or step not in flow.steps:
        return 0.0
    return resolve_options(flow, flow.steps[step]).timeout


def _raise(exc: BaseException) -> Any:
    raise exc
