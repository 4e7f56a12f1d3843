"""Lifecycle events: what the App and the worker tell whoever subscribed, as it happens.

One place where every process says what it does: runs started, completed, failed and cancelled;
step attempts started, completed, failed, retried, timed out, cancelled and rescued; batches
claimed; leadership gained and lost. ``app.on("step_failed", handler)`` subscribes; telemetry
(:mod:`pypgflow.telemetry`: traces, metrics) is built on these events and nothing else.

Why the rules below:

- **Handlers cannot break the worker.** An exception in one is logged (``pypgflow.events``) and
  ignored; the other handlers still run, and so does the worker.
- **Free when nobody listens.** :attr:`Events.active` is a plain attribute, False until someone
  subscribes: the hot path checks it before it builds any event.
- **Synchronous, where it happens.** A handler is called in the emitting thread and task, before
  the work goes on: a step's events in the task that runs the step (so that a tracer can make its
  span current for the step), a start's in the caller's. A handler must be quick; anything slow
  belongs on a queue of its own.
- **Per process.** Each process emits what it itself did: the worker that records the outcome
  finishing a run emits ``run_completed``; the process that calls ``app.cancel`` emits
  ``run_cancelled``; the rescuing instance emits ``step_rescued``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pypgflow.errors import AttemptError, InvalidArgument

logger = logging.getLogger("pypgflow.events")

#: every event's name, and what it says
EVENT_NAMES: dict[str, str] = {
    "run_starting": "a start is about to be written (RunStarting; may set its trace_context)",
    "run_started": "a run was written by a start of this process (RunEvent)",
    "start_ended": "a start was written, or failed (StartEnded)",
    "run_completed": "an outcome recorded by this worker completed its run (RunEvent)",
    "run_failed": "an outcome or a rescue of this worker failed its run (RunEvent)",
    "run_cancelled": "this process cancelled a run (RunEvent)",
    "step_started": "an attempt of a step began on this worker (StepEvent)",
    "step_completed": "an attempt completed (StepEvent)",
    "step_retried": "an attempt failed and the step will run again (StepEvent)",
    "step_failed": "an attempt failed and the step has no attempt left (StepEvent)",
    "step_timed_out": "an attempt ran past its timeout, before step_retried/step_failed",
    "step_cancelled": "an attempt was stopped without an outcome: cancelled, stopping, cut off",
    "step_rescued": "this worker rescued an attempt of a lost instance (StepEvent)",
    "claim_batch": "this worker claimed tasks (ClaimBatch)",
    "leadership_gained": "this instance became the leader (Leadership)",
    "leadership_lost": "this instance stopped leading (Leadership)",
}
#: subscribes to every event
ALL = "*"

Handler = Callable[[Any], object]


@dataclass(slots=True)
class RunStarting:
    """A start about to be written: ``count`` runs of ``workflow`` (prepared ``run_ids``).

    A handler may set ``trace_context`` (a W3C trace context carrier, as JSON text): it is stored
    with the runs, and every worker's step spans join that trace."""

    name: str
    workflow: str
    queue: str
    count: int
    run_ids: Sequence[str]
    instance_id: str | None
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class StartEnded:
    """A start written (``run_ids``: each run's id; ``inserted``: those it created, not found
    by their idempotency key) or failed (``error``), ``duration`` seconds after it began."""

    name: str
    starting: RunStarting
    duration: float
    run_ids: Sequence[str] = ()
    inserted: Sequence[str] = ()
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something that happened to a run. ``duration``: for ``run_started`` the start's write;
    for a finished run the seconds since it was created (None if its id does not say)."""

    name: str
    run_id: str
    workflow: str | None
    queue: str | None = None
    instance_id: str | None = None
    duration: float | None = None
    error: AttemptError | None = None
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class StepEvent:
    """Something that happened to one attempt of a step (``task_index``: a map element's).
    ``duration``: how long the attempt ran (None for ``step_started`` and ``step_rescued``);
    ``retry_in``: for ``step_retried``, seconds until the next attempt is due. For
    ``step_rescued``, ``lost_instance`` ran the attempt and ``instance_id`` rescued it, and
    ``error`` says what became of it (requeued, or ``failed`` for good)."""

    name: str
    run_id: str
    workflow: str
    step: str
    attempt: int
    queue: str | None
    instance_id: str | None
    task_index: int | None = None
    max_attempts: int | None = None
    duration: float | None = None
    error: AttemptError | None = None
    retry_in: float | None = None
    trace_context: str | None = None
    lost_instance: str | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    """A claim of ``claimed`` tasks (of ``requested`` asked for) from ``queue``, ``duration``
    seconds long."""

    name: str
    queue: str
    requested: int
    claimed: int
    duration: float
    instance_id: str | None


@dataclass(frozen=True, slots=True)
class Leadership:
    """This instance gained or lost the leader lease (``reason``: why it lost it)."""

    name: str
    instance_id: str
    reason: str = ""


@dataclass
class Events:
    """Subscribers by event name, and the emitting of events to them. Safe between threads:
    subscribing replaces a tuple, emitting reads it."""

    _handlers: dict[str, tuple[Handler, ...]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: someone listens to some event: the one check the hot path makes
    active: bool = False

    def on(self, name: str, handler: Handler) -> Callable[[], bool]:
        """Call ``handler(event)`` for each event ``name`` (``"*"``: every event); returns a
        function that unsubscribes it."""
        if name != ALL and name not in EVENT_NAMES:
            raise InvalidArgument(
                f"unknown event {name!r} (one of {', '.join(EVENT_NAMES)}, or '*' for all)"
            )
        if not callable(handler):
            raise InvalidArgument(f"an event handler must be callable, got {handler!r}")
        with self._lock:
            self._handlers[name] = (*self._handlers.get(name, ()), handler)
            self.active = True
        return lambda: self.off(name, handler)

    def off(self, name: str, handler: Handler) -> bool:
        """Unsubscribe ``handler`` from ``name``; False if it was not subscribed."""
        with self._lock:
            handlers = list(self._handlers.get(name, ()))
            if handler not in handlers:
                return False
            handlers.remove(handler)
            if handlers:
                self._handlers[name] = tuple(handlers)
            else:
                self._handlers.pop(name, None)
            self.active = bool(self._handlers)
            return True

    def wants(self, name: str) -> bool:
        """Whether anyone listens to ``name``: a caller may skip building the event if not."""
        handlers = self._handlers
        return name in handlers or ALL in handlers

    def emit(self, event: Any) -> None:
        """Call the handlers of ``event.name``, then those of every event; an exception in one
        is logged and ignored."""
        handlers = self._handlers
        for handler in (*handlers.get(event.name, ()), *handlers.get(ALL, ())):
            try:
                handler(event)
            except Exception:
                logger.exception("a handler of event %r raised: ignored", event.name)
