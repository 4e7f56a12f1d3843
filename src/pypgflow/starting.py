"""Preparing a run to start: every argument checked, the run built by orchestration, nothing
written yet.

``App.start``/``start_many`` and the leader's cron ticks all go through :func:`prepare_starts`, so
a run is validated the same way wherever it comes from, and nothing reaches the database unless
everything about it is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pypgflow import defaults, orchestration
from pypgflow.engines.starts import StartRequest, UniformStarts
from pypgflow.errors import InvalidArgument, MapInputError
from pypgflow.ids import new_run_id, new_run_ids
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
) -> Sequence[StartRequest]:
    """A run of ``flow`` on ``input``, ready to insert, as the engines take it: for most
    workflows a batch of one from the workflow's template (see :func:`prepare_starts`), a
    request alone with an idempotency key. InvalidArgument (or SerializationError,
    MapInputError) naming the problem if anything is wrong; ``what`` names the input in errors."""
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
    starts = prepare_starts(
        flow,
        [input],
        queue=queue,
        priority=priority,
        delay=delay,
        run_at=run_at,
        what=lambda _: what,
    )
    if idempotency_key is None:
        return starts
    return [replace(starts[0], idempotency_key=idempotency_key)]


def prepare_starts(
    flow: Workflow,
    inputs: Iterable[Any],
    *,
    queue: str,
    priority: int,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    what: Callable[[int], str] = lambda index: f"input {index}",
) -> Sequence[StartRequest]:
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
    texts = [
        dumps(input, what=partial(_input_name, what, index, flow.name))
        for index, input in enumerate(inputs)
    ]
    if not texts:
        return []
    run_ids = new_run_ids(len(texts))
    # A run's state at start depends on its input only through a root map step: without one,
    # every run starts in the state of a template built by orchestration, and a batch (a single
    # start too) is that template, the runs' ids and their inputs. The workflow keeps the
    # template of starts due at once: their options are few (a queue, a priority), and a start
    # then builds no state of its own.
    if not flow.derived("root map step", partial(_has_root_map_step, flow)):
        build = partial(_new_start, flow, run_ids[0], texts[0], queue, priority, seconds, run_at)
        due_now = not seconds and run_at is None
        template = flow.derived(("start", queue, priority), build) if due_now else build()
        return UniformStarts(template, run_ids, texts)
    return [
        _new_start(flow, run_id, text, queue, priority, seconds, run_at)
        for run_id, text in zip(run_ids, texts, strict=True)
    ]


def _has_root_map_step(flow: Workflow) -> bool:
    return any(step.is_map and not step.depends_on for step in flow.steps.values())


def _new_start(
    flow: Workflow,
    run_id: str,
    input_json: str,
    queue: str,
    priority: int,
    delay: float,
    run_at: datetime | None,
) -> StartRequest:
    """The start of a run, built by orchestration; MapInputError for a root map step over an
    input that is not a list."""
    changes = orchestration.Changes()
    run = orchestration.new_run(
        flow,
        run_id=run_id,
        input_json=input_json,
        queue=queue,
        priority=priority,
        changes=changes,
    )
    if run.status is RunStatus.FAILED:
        message = run.error.message if run.error is not None else "invalid input"
        raise MapInputError(f"cannot start workflow {flow.name!r}: {message}")
    return StartRequest(run=run, changes=changes, delay=delay, run_at=run_at)


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
