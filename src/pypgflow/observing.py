"""What the worker, the leader and the App do, told as lifecycle events (:mod:`pypgflow.events`).

The worker, the registration, the leader and the App each call these at the moment something
happens, and only when someone listens (``events.active``: one attribute check on the hot path),
so that building events costs nothing when nobody subscribed. A start is told in three events
(:class:`ObservedStart`): ``run_starting`` before it is written, in the caller's thread and task,
where a tracer may give the trace context to store with the runs; ``run_started`` for each run
it created; ``start_ended`` after, whether it was written or failed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace

from pypgflow import orchestration
from pypgflow.engines.base import (
    ChildStarted,
    ClaimedTask,
    Completed,
    Failed,
    FinishedRun,
    Outcome,
    RescueResult,
)
from pypgflow.engines.starts import StartRequest, UniformStarts
from pypgflow.errors import AttemptError
from pypgflow.events import (
    ClaimBatch,
    Events,
    Leadership,
    RunEvent,
    RunStarting,
    StartEnded,
    StepEvent,
)
from pypgflow.ids import run_id_time
from pypgflow.status import RunStatus

#: the step_* event of a failed attempt, by verdict
_FAILED = {orchestration.Retry: "step_retried", orchestration.GiveUp: "step_failed"}
#: the run_* event of a finished run, by status
_FINISHED = {
    RunStatus.COMPLETED: "run_completed",
    RunStatus.FAILED: "run_failed",
    RunStatus.CANCELLED: "run_cancelled",
}
#: the type of the error of an attempt that ran past its timeout
TIMEOUT_ERROR = "StepTimeout"


def claimed(
    events: Events, queue: str, requested: int, count: int, began: float, instance_id: str
) -> None:
    """A claim begun at ``began`` (``time.monotonic()``) took ``count`` tasks of ``queue``."""
    duration = time.monotonic() - began
    events.emit(ClaimBatch("claim_batch", queue, requested, count, duration, instance_id))


def step_started(events: Events, task: ClaimedTask, queue: str, instance_id: str) -> None:
    """An attempt begins, in the task that runs it."""
    events.emit(_step("step_started", task, queue, instance_id))


def step_ended(
    events: Events,
    task: ClaimedTask,
    queue: str,
    instance_id: str,
    outcome: Outcome | None,
    duration: float,
) -> None:
    """An attempt ended, in the task that ran it: completed, failed (retried, or for good; timed
    out first, if it did) or, without an outcome, cancelled."""
    if isinstance(outcome, ChildStarted):
        return  # the step goes on in its child run: it ends when the child does
    if isinstance(outcome, Completed):
        events.emit(_step("step_completed", task, queue, instance_id, duration=duration))
    elif isinstance(outcome, Failed):
        verdict = outcome.verdict
        retry_in = verdict.delay if isinstance(verdict, orchestration.Retry) else None
        if outcome.error.type == TIMEOUT_ERROR:
            events.emit(
                _step(
                    "step_timed_out", task, queue, instance_id,
                    duration=duration, error=outcome.error, retry_in=retry_in,
                )
            )  # fmt: skip
        events.emit(
            _step(
                _FAILED[type(verdict)], task, queue, instance_id,
                duration=duration, error=outcome.error, retry_in=retry_in,
            )
        )  # fmt: skip
    else:
        events.emit(_step("step_cancelled", task, queue, instance_id, duration=duration))


def runs_finished(events: Events, finished: Iterable[FinishedRun], instance_id: str) -> None:
    """Runs finished by what this worker recorded, once it is committed."""
    now = time.time()
    for run in finished:
        name = _FINISHED.get(run.status)
        if name is None:
            continue
        created = run_id_time(run.run_id)
        events.emit(
            RunEvent(
                name,
                run.run_id,
                run.workflow,
                queue=run.queue,
                instance_id=instance_id,
                duration=None if created is None else max(0.0, now - created),
                error=run.error,
                trace_context=run.trace_context,
            )
        )


def rescued(events: Events, result: RescueResult, instance_id: str) -> None:
    """Attempts of lost instances this worker rescued, and the runs the rescue failed."""
    for task in result.rescued:
        events.emit(
            StepEvent(
                "step_rescued",
                task.run_id,
                task.workflow,
                task.step,
                task.attempt,
                task.queue,
                instance_id,
                task_index=task.task_index,
                error=task.error,
                lost_instance=task.lost_instance,
                failed=task.failed,
            )
        )
    runs_finished(events, result.finished, instance_id)


def leadership(events: Events, gained: bool, instance_id: str, reason: str = "") -> None:
    """This instance gained or lost the leader lease."""
    name = "leadership_gained" if gained else "leadership_lost"
    events.emit(Leadership(name, instance_id, reason))


def run_cancelled(events: Events, run_id: str, workflow: str | None, instance_id: str) -> None:
    """This process cancelled a run."""
    created = run_id_time(run_id)
    duration = None if created is None else max(0.0, time.time() - created)
    events.emit(
        RunEvent("run_cancelled", run_id, workflow, instance_id=instance_id, duration=duration)
    )


class ObservedStart:
    """A start told to subscribers: ``run_starting`` now (a handler may set the trace context,
    which :attr:`requests` then carry), then, by :meth:`ended`, ``run_started`` for each run
    created and ``start_ended``."""

    def __init__(
        self, events: Events, requests: Sequence[StartRequest], instance_id: str | None
    ) -> None:
        self.events = events
        workflows = sorted({r.run.workflow for r in requests})
        queues = sorted({r.run.queue for r in requests})
        self.starting = RunStarting(
            "run_starting",
            workflow=",".join(workflows),
            queue=",".join(queues),
            count=len(requests),
            run_ids=[r.run.id for r in requests],
            instance_id=instance_id,
        )
        self._began = time.monotonic()
        events.emit(self.starting)
        context = self.starting.trace_context
        #: the requests to write: with the trace context a handler gave, if any
        self.requests: Sequence[StartRequest]
        if context is None:
            self.requests = requests
        elif isinstance(requests, UniformStarts):
            self.requests = requests.with_trace_context(context)
        else:
            self.requests = [replace(r, trace_context=context) for r in requests]

    def ended(
        self, run_ids: Sequence[str] | None = None, error: BaseException | None = None
    ) -> None:
        """The start was written (each request's run id) or failed (``error``)."""
        duration = time.monotonic() - self._began
        inserted: list[str] = []
        if run_ids is not None:
            for request, run_id in zip(self.requests, run_ids, strict=False):
                if request.run.id != run_id:
                    continue  # its idempotency key's run, started before
                inserted.append(run_id)
                run = request.run
                self.events.emit(
                    RunEvent(
                        "run_started",
                        run_id,
                        run.workflow,
                        queue=run.queue,
                        instance_id=self.starting.instance_id,
                        duration=duration,
                        trace_context=request.trace_context,
                    )
                )
        self.events.emit(
            StartEnded(
                "start_ended",
                self.starting,
                duration,
                run_ids=list(run_ids or ()),
                inserted=inserted,
                error=error,
            )
        )


def start_runs(
    events: Events,
    requests: Sequence[StartRequest],
    instance_id: str | None,
    write: Callable[[Sequence[StartRequest]], list[str]],
) -> list[str]:
    """``write(requests)``, told to subscribers as :class:`ObservedStart` says (when anyone
    listens: else just the write)."""
    if not events.active or not requests:
        return write(requests)
    observed = ObservedStart(events, requests, instance_id)
    try:
        run_ids = write(observed.requests)
    except BaseException as exc:
        observed.ended(error=exc)
        raise
    observed.ended(run_ids)
    return run_ids


async def start_runs_async(
    events: Events,
    requests: Sequence[StartRequest],
    instance_id: str | None,
    write: Callable[[Sequence[StartRequest]], Awaitable[list[str]]],
) -> list[str]:
    """:func:`start_runs` for an async write, told in the caller's task."""
    if not events.active or not requests:
        return await write(requests)
    observed = ObservedStart(events, requests, instance_id)
    try:
        run_ids = await write(observed.requests)
    except BaseException as exc:
        observed.ended(error=exc)
        raise
    observed.ended(run_ids)
    return run_ids


def _step(
    name: str,
    task: ClaimedTask,
    queue: str,
    instance_id: str,
    *,
    duration: float | None = None,
    error: AttemptError | None = None,
    retry_in: float | None = None,
) -> StepEvent:
    return StepEvent(
        name,
        task.run_id,
        task.workflow,
        task.step,
        task.attempt,
        queue,
        instance_id,
        task_index=task.task_index,
        max_attempts=task.max_attempts,
        duration=duration,
        error=error,
        retry_in=retry_in,
        trace_context=task.trace_context,
    )
