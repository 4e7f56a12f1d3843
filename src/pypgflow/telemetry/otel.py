"""OpenTelemetry traces of an app's starts and of its workers' steps, built on its lifecycle
events (:mod:`pypgflow.events`). Needs ``opentelemetry-api`` (``pip install pypgflow[otel]``);
the SDK, its exporters and the tracer provider are the application's.

``instrument(app)`` subscribes to the app's events; from then on, with a tracer provider
configured (the global one, or ``tracer_provider=``):

- ``pypgflow.start`` spans the writing of a start, in the starting process, a child of the span
  current there (a web request's). Its trace context (W3C ``traceparent``) is stored with the
  runs (``runs.trace_context``) and handed to the workers with each claimed task.
- ``pypgflow.step``, one per attempt, on whichever worker runs it: a child of the run's
  ``pypgflow.start`` span, so that one trace holds the request and the whole workflow, across
  processes. The span is current while the step function runs (async steps on the loop, sync
  steps in their thread): spans the step makes (an HTTP call) nest under it. A failed attempt
  records its error (an ``exception`` event, status ERROR).
- ``pypgflow.run``, emitted by the worker whose outcome finished the run: from the run's creation
  (its UUIDv7 id says when) to its finish, a child of ``pypgflow.start`` beside the step spans.
  A span cannot stay open across processes, so it is made, with its start time, when the run
  finishes; runs cancelled or failed by a rescue have none.

Every span carries ``pypgflow.run_id``, ``pypgflow.workflow`` and ``pypgflow.instance_id``;
step spans ``pypgflow.step``, ``pypgflow.attempt``, ``pypgflow.queue`` too. Runs started
without a trace context (by a process that does not trace) give each step span a trace of its
own. A stored trace context is untrusted: anything but a well-formed carrier is ignored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pypgflow.definitions import Definitions
from pypgflow.errors import AttemptError
from pypgflow.events import RunEvent, RunStarting, StartEnded, StepEvent

#: the instrumentation's name, as spans report it
TRACER_NAME = "pypgflow"
#: a stored carrier longer than this is ignored (a traceparent is 55 characters)
MAX_CARRIER = 1024
_W3C = TraceContextTextMapPropagator()
#: the attribute naming the outcome of a step span
_OUTCOMES = {
    "step_completed": "completed",
    "step_retried": "retried",
    "step_failed": "failed",
    "step_cancelled": "cancelled",
}


#: parsed stored trace contexts kept: a run's steps and its finish share one, and so do the runs
#: of one ``start_many`` (kept past a run's end; the cache is emptied when it is full)
_CACHED_CONTEXTS = 4096


class Tracing:
    """The spans of one app's events; :meth:`close` stops them (see :func:`instrument`)."""

    def __init__(
        self,
        app: Definitions,
        tracer_provider: TracerProvider | None = None,
        *,
        run_spans: bool = True,
    ) -> None:
        self.tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        #: stored trace context -> its context, for the runs in flight (parsed once per run)
        self._contexts: dict[str, otel_context.Context | None] = {}
        #: open pypgflow.start spans and the context tokens they were made current with
        self._starts: dict[int, tuple[Span, object]] = {}
        #: open pypgflow.step spans, by attempt
        self._steps: dict[tuple[str, str, int | None, int], tuple[Span, object]] = {}
        events = app.events
        self._unsubscribe: list[Callable[[], bool]] = [
            events.on("run_starting", self._run_starting),
            events.on("start_ended", self._start_ended),
            events.on("step_started", self._step_started),
            events.on("step_timed_out", self._step_timed_out),
            *(events.on(name, self._step_ended) for name in _OUTCOMES),
        ]
        if run_spans:
            self._unsubscribe += [
                events.on("run_completed", self._run_finished),
                events.on("run_failed", self._run_finished),
            ]

    def close(self) -> None:
        """Unsubscribe: no more spans."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    # -- starts -------------------------------------------------------------------------------

    def _run_starting(self, event: RunStarting) -> None:
        attributes: dict[str, Any] = {
            "pypgflow.workflow": event.workflow,
            "pypgflow.queue": event.queue,
            "pypgflow.run_count": event.count,
        }
        if event.count == 1:
            attributes["pypgflow.run_id"] = event.run_ids[0]
        if event.instance_id:
            attributes["pypgflow.instance_id"] = event.instance_id
        span = self.tracer.start_span(
            "pypgflow.start", kind=SpanKind.PRODUCER, attributes=attributes
        )
        context = trace.set_span_in_context(span)
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context=context)
        if carrier:
            event.trace_context = json.dumps(carrier, separators=(",", ":"))
        # Current while the start is written: a traced database driver's spans nest under it.
        self._starts[id(event)] = (span, otel_context.attach(context))

    def _start_ended(self, event: StartEnded) -> None:
        opened = self._starts.pop(id(event.starting), None)
        if opened is None:
            return
        span, token = opened
        otel_context.detach(token)  # type: ignore[arg-type]
        if event.error is not None:
            span.record_exception(event.error)
            span.set_status(Status(StatusCode.ERROR, f"{type(event.error).__name__}"))
        elif len(event.inserted) < len(event.run_ids):
            span.set_attribute("pypgflow.runs_existing", len(event.run_ids) - len(event.inserted))
        span.end()

    # -- steps --------------------------------------------------------------------------------

    def _step_started(self, event: StepEvent) -> None:
        attributes: dict[str, Any] = {
            "pypgflow.run_id": event.run_id,
            "pypgflow.workflow": event.workflow,
            "pypgflow.step": event.step,
            "pypgflow.attempt": event.attempt,
        }
        if event.queue is not None:
            attributes["pypgflow.queue"] = event.queue
        if event.instance_id is not None:
            attributes["pypgflow.instance_id"] = event.instance_id
        if event.task_index is not None:
            attributes["pypgflow.task_index"] = event.task_index
        span = self.tracer.start_span(
            "pypgflow.step",
            context=self._stored(event.trace_context),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        # Current for the rest of the step's task: the step function runs in it (a sync step
        # in a thread that runs with a copy of its context).
        token = otel_context.attach(trace.set_span_in_context(span))
        self._steps[_attempt(event)] = (span, token)

    def _step_timed_out(self, event: StepEvent) -> None:
        opened = self._steps.get(_attempt(event))
        if opened is not None:
            opened[0].set_attribute("pypgflow.timed_out", True)

    def _step_ended(self, event: StepEvent) -> None:
        opened = self._steps.pop(_attempt(event), None)
        if opened is None:
            return
        span, token = opened
        otel_context.detach(token)  # type: ignore[arg-type]
        span.set_attribute("pypgflow.outcome", _OUTCOMES[event.name])
        if event.retry_in is not None:
            span.set_attribute("pypgflow.retry_in", event.retry_in)
        if event.error is not None:
            _record_error(span, event.error)
        span.end()

    # -- runs ---------------------------------------------------------------------------------

    def _run_finished(self, event: RunEvent) -> None:
        parent = self._stored(event.trace_context)
        if parent is None:
            return
        end = time.time_ns()
        start = end if event.duration is None else end - int(event.duration * 1e9)
        attributes: dict[str, Any] = {
            "pypgflow.run_id": event.run_id,
            "pypgflow.status": event.name.removeprefix("run_"),
        }
        if event.workflow is not None:
            attributes["pypgflow.workflow"] = event.workflow
        if event.queue is not None:
            attributes["pypgflow.queue"] = event.queue
        if event.instance_id is not None:
            attributes["pypgflow.instance_id"] = event.instance_id
        span = self.tracer.start_span(
            "pypgflow.run", context=parent, attributes=attributes, start_time=start
        )
        if event.error is not None:
            _record_error(span, event.error)
        span.end(end_time=end)

    def _stored(self, text: str | None) -> otel_context.Context | None:
        """:func:`stored_context`, parsed once for all the steps of a run and its finish."""
        if text is None:
            return None
        try:
            return self._contexts[text]
        except KeyError:
            pass
        if len(self._contexts) >= _CACHED_CONTEXTS:
            self._contexts.clear()
        context = self._contexts[text] = stored_context(text)
        return context


def instrument(
    app: Definitions, *, tracer_provider: TracerProvider | None = None, run_spans: bool = True
) -> Tracing:
    """Trace ``app``'s starts and its workers' steps (see the module's docstring), with
    ``tracer_provider`` or the global one (``opentelemetry.trace.set_tracer_provider``).
    ``run_spans=False`` leaves out the ``pypgflow.run`` spans: one span fewer per run, where
    the cost of making spans counts (a one-step run then costs one span on its worker)."""
    return Tracing(app, tracer_provider, run_spans=run_spans)


def stored_context(text: str | None) -> otel_context.Context | None:
    """The context a stored trace context carrier gives (None if there is none, or if it is not
    a well-formed W3C carrier: stored data is untrusted)."""
    if not text or len(text) > MAX_CARRIER:
        return None
    try:
        carrier = json.loads(text)
    except ValueError:
        return None
    if not isinstance(carrier, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in carrier.items()
    ):
        return None
    context = _W3C.extract(carrier)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def _attempt(event: StepEvent) -> tuple[str, str, int | None, int]:
    return (event.run_id, event.step, event.task_index, event.attempt)


def _record_error(span: Span, error: AttemptError) -> None:
    """A failed attempt's error on its span, as OpenTelemetry's exception event says."""
    span.add_event(
        "exception",
        {
            "exception.type": error.type,
            "exception.message": error.message,
            "exception.stacktrace": error.traceback or "",
        },
    )
    span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
