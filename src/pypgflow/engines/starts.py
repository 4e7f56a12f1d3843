"""What an engine is given to start runs: a :class:`StartRequest` per run, or, for a batch whose
runs all start alike, :class:`UniformStarts`.

Why apart from the engine interface: a batch of starts is the one input of an engine that has
two shapes, and the second exists for speed alone. A workflow without a root map step starts
every run in the same state whatever its input (its root steps ready, nothing else), so a batch
of its runs is one template, the runs' ids and their inputs. Kept that way, a batch of 1,000
costs a tenth of building 1,000 requests, and PostgreSQL writes it as one row shape and two
arrays (insert_uniform_runs); an engine that reads it as requests gets them made on the way. A
single start is such a batch of one, its template kept by its workflow (see pypgflow.starting).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, overload

from pypgflow.orchestration import Changes, RunState


@dataclass(frozen=True)
class StartRequest:
    """A run ready to insert: its state built by orchestration, and when it may start."""

    run: RunState
    changes: Changes
    idempotency_key: str | None = None
    delay: float = 0.0
    run_at: datetime | None = None
    #: the trace context the run is started in (a W3C carrier as JSON text; see pypgflow.events)
    trace_context: str | None = None
    #: the run this one is forked from (App.fork)
    forked_from: str | None = None
    #: for a child run: its parent run, and the parent's task that waits for it
    parent_run_id: str | None = None
    parent_task_id: int | None = None
    #: what an engine derives from this request when it is given it again (a workflow's start
    #: template, see UniformStarts), by the engine's own keys; a copy starts with none
    memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)


class UniformStarts(Sequence[StartRequest]):
    """Runs that start as ``template`` does, each with its own id and input (JSON text): the
    template's own id and input are none of theirs. Plain starts only: no idempotency key (a
    batch has none), no fork nor parent, root tasks that are plain steps, possibly delayed (no
    map element, no output), which is what :func:`uniform` checks."""

    __slots__ = ("inputs", "run_ids", "template")

    def __init__(self, template: StartRequest, run_ids: list[str], inputs: list[str]) -> None:
        if not uniform(template) or len(run_ids) != len(inputs) or not run_ids:
            raise ValueError("not a template of uniform starts, or ids and inputs that differ")
        self.template = template
        self.run_ids = run_ids
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.run_ids)

    @overload
    def __getitem__(self, index: int) -> StartRequest: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StartRequest]: ...

    def __getitem__(self, index: int | slice) -> StartRequest | Sequence[StartRequest]:
        if isinstance(index, slice):
            return [self._request(i) for i in range(len(self.run_ids))[index]]
        return self._request(range(len(self.run_ids))[index])

    def __iter__(self) -> Iterator[StartRequest]:
        return (self._request(i) for i in range(len(self.run_ids)))

    def with_trace_context(self, trace_context: str) -> UniformStarts:
        """The same starts in ``trace_context``."""
        template = replace(self.template, trace_context=trace_context)
        return UniformStarts(template, self.run_ids, self.inputs)

    def _request(self, index: int) -> StartRequest:
        """The start of run ``index``: the template's state with the run's id and input. The
        runs share their step states (with every start of the template), which is safe since a
        start request is only read."""
        template = self.template
        run = template.run
        run_id = self.run_ids[index]
        return StartRequest(
            run=RunState(
                id=run_id,
                workflow=run.workflow,
                status=run.status,
                queue=run.queue,
                priority=run.priority,
                remaining_steps=run.remaining_steps,
                steps=run.steps,
                input=self.inputs[index],
                output=run.output,
                version=run.version,
            ),
            changes=Changes(new_tasks=[task.of_run(run_id) for task in template.changes.new_tasks]),
            delay=template.delay,
            run_at=template.run_at,
            trace_context=template.trace_context,
        )


def uniform(template: StartRequest) -> bool:
    """Whether ``template`` can stand for a batch of :class:`UniformStarts`."""
    return (
        template.idempotency_key is None
        and template.forked_from is None
        and template.parent_run_id is None
        and template.run.output is None
        and not template.run.status.finished
        and bool(template.changes.new_tasks)
        and all(t.task_index is None and t.output is None for t in template.changes.new_tasks)
    )
