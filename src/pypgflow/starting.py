"""Preparing a run to start: every argument checked, the run built by orchestration, nothing
written yet.

``App.start``/``start_many`` and the leader's cron ticks all go through :func:`prepare_starts`, so
a run is validated the same way wherever it comes from, and nothing reaches the database unless
everything about it is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pypgflow import defaults, orchestration
from pypgflow.engines.base import StartRequest
from pypgflow.errors import InvalidArgument, MapInputError
from pypgflow.ids import new_run_id
from pypgflow.records import RunInfo
from pypgflow.serialization import check_text, dumps
from pypgflow.status import RunStatus, StepStatus
from pypgflow.workflow import Workflow

#: the longest queue name and idempotency key accepted
MAX_QUEUE_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 500


def prepare_start(
    flow: Workflow,
    input: Any,
    *,
    queue: str,
    priority: int,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    what: str = "the input",
) -> StartRequest:
    """A run of ``flow`` on ``input``, ready to insert; InvalidArgument (or SerializationError,
    MapInputError) naming the problem if anything is wrong. ``what`` names the input in errors."""
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
    ):
        raise InvalidArgument(
            f"idempotency_key must be a non-empty string of up to {MAX_IDEMPOTENCY_KEY_LENGTH} "
            "characters"
        )
    if idempotency_key is not None:
        check_text(idempotency_key, "idempotency_key")
    (request,) = prepare_starts(
        flow,
        [input],
        queue=queue,
        priority=priority,
        delay=delay,
        run_at=run_at,
        what=lambda _: what,
    )
    return replace(request, idempotency_key=idempotency_key)


def prepare_starts(
    flow: Workflow,
    inputs: Iterable[Any],
    *,
    queue: str,
    priority: int,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    what: Callable[[int], str] = lambda index: f"input {index}",
) -> list[StartRequest]:
    """A run of ``flow`` on each input, the options shared by all checked once; as
    :func:`prepare_start` (an idempotency key is one run's: none here). ``what(index)`` names an
    input in errors."""
    queue = check_queue(queue)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise InvalidArgument(f"priority must be an integer from 0 (first) to 9, got {priority!r}")
    seconds = delay_seconds(delay)
    if run_at is not None:
        if delay is not None:
            raise InvalidArgument("give delay= or run_at=, not both")
        if not isinstance(run_at, datetime) or run_at.tzinfo is None:
            raise InvalidArgument("run_at must be a timezone-aware datetime")
    requests = []
    # A run's state at start depends on its input only through a root map step: without one,
    # every run of the batch starts as the first one did, so the first is built by
    # orchestration and the others are made from it (a tenth of the cost of a large batch).
    template: StartRequest | None = None
    same_start = not any(step.is_map and not step.depends_on for step in flow.steps.values())
    for index, input in enumerate(inputs):
        input_json = dumps(input, what=partial(_input_name, what, index, flow.name))
        if template is not None:
            requests.append(_like(template, new_run_id(), input_json))
            continue
        changes = orchestration.Changes()
        run = orchestration.new_run(
            flow,
            run_id=new_run_id(),
            input_json=input_json,
            queue=queue,
            priority=priority,
            changes=changes,
        )
        if run.status is RunStatus.FAILED:  # a root map step over an input that is not a list
            message = run.error.message if run.error is not None else "invalid input"
            raise MapInputError(f"cannot start workflow {flow.name!r}: {message}")
        request = StartRequest(
            run=run, changes=changes, idempotency_key=None, delay=seconds, run_at=run_at
        )
        requests.append(request)
        if same_start:
            template = request
    return requests


def prepare_fork(
    flow: Workflow, source: RunInfo, from_step: str, input: Any = None
) -> StartRequest:
    """A new run of ``source``'s workflow version (``flow``) that keeps the outputs of the steps
    ``source`` completed (or skipped) before ``from_step`` and runs ``from_step`` and every step
    after it (its dependents, theirs, and so on) again, on ``input`` (None: ``source``'s)."""
    if not isinstance(from_step, str) or from_step not in flow.steps:
        known = ", ".join(flow.topological_order())
        raise InvalidArgument(
            f"workflow {flow.name!r} has no step {from_step!r} to fork from (its steps: {known})"
        )
    rerun = {from_step}
    dependents = flow.dependents()
    for name in flow.topological_order():  # a step's dependents come after it
        if name in rerun:
            rerun.update(dependents[name])
    kept: dict[str, orchestration.KeptStep] = {}
    for step in source.steps:
        if step.name in rerun or step.name not in flow.steps or not step.status.done:
            continue
        what = f"the output of step {step.name!r} of run {source.id}"
        if flow.steps[step.name].is_map and step.status is StepStatus.COMPLETED:
            elements = tuple(dumps(e, what=what) for e in step.output or [])
            kept[step.name] = orchestration.KeptStep(
                step.status, dumps(step.output, what=what), elements
            )
        else:
            kept[step.name] = orchestration.KeptStep(step.status, dumps(step.output, what=what))
    input_json = dumps(
        source.input if input is None else input,
        what=f"the input of workflow {flow.name!r}",
    )
    changes = orchestration.Changes()
    run = orchestration.forked_run(
        flow,
        run_id=new_run_id(),
        input_json=input_json,
        queue=source.queue,
        priority=source.priority,
        kept=kept,
        changes=changes,
    )
    if run.status is RunStatus.FAILED:  # a map step made ready over something not a list
        message = run.error.message if run.error is not None else "invalid input"
        raise MapInputError(f"cannot fork run {source.id}: {message}")
    return StartRequest(run=run, changes=changes, forked_from=source.id)


def _input_name(what: Callable[[int], str], index: int, workflow: str) -> str:
    return f"{what(index)} of workflow {workflow!r}"


def _like(template: StartRequest, run_id: str, input_json: str) -> StartRequest:
    """A start request as ``template`` for another run and input. The runs share their step
    states, which is safe since a start request is only read: engines insert it as it is."""
    run = template.run
    new_tasks = [replace(task, run_id=run_id) for task in template.changes.new_tasks]
    return StartRequest(
        run=orchestration.RunState(
            id=run_id,
            workflow=run.workflow,
            status=run.status,
            queue=run.queue,
            priority=run.priority,
            remaining_steps=run.remaining_steps,
            steps=run.steps,
            input=input_json,
            output=run.output,
            version=run.version,
        ),
        changes=orchestration.Changes(new_tasks=new_tasks),
        idempotency_key=None,
        delay=template.delay,
        run_at=template.run_at,
    )


def check_queue(queue: Any) -> str:
    """``queue`` if it is a valid queue name, else InvalidArgument."""
    if not isinstance(queue, str) or not queue or len(queue) > MAX_QUEUE_LENGTH:
        raise InvalidArgument(
            f"queue must be a non-empty name of up to {MAX_QUEUE_LENGTH} characters, got {queue!r}"
        )
    return check_text(queue, "queue")


def delay_seconds(delay: float | timedelta | None) -> float:
    """A delay as seconds from 0 to ``defaults.MAX_DELAY`` (None: 0), else InvalidArgument."""
    if delay is None:
        return 0.0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= defaults.MAX_DELAY  # (NaN compares false)
    ):
        raise InvalidArgument(
            f"delay must be a number of seconds from 0 to {defaults.MAX_DELAY:.0f} (100 years) "
            f"or a timedelta, got {delay!r}"
        )
    return float(seconds)
