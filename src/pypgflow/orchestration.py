"""The rules of a durable run, written once for every engine.

Every decision about a run's or a step's state is made here, as pure functions:

- what a failed attempt means (:func:`step_failed`, :func:`attempt_failed`: retry after a
  delay, or give up);
- what a lost attempt means (:func:`task_lost`: back to the queue, or failed for good, a
  ``WorkerLost`` or a ``PoisonPill``);
- what becomes runnable when a step completes, when a run is finished, what a step failing for
  good does to its run, how a run is cancelled or resumed (:func:`tasks_completed`,
  :func:`tasks_failed`, :func:`cancel_run`, :func:`resume_run`, :func:`new_run`).

Engines only store and claim: the worker asks this module what an outcome means before it hands
it to the engine, and the engine hands it the locked state of the runs a transaction touches
(:class:`RunState`) and writes back the :class:`Changes` it returns, in the same transaction.

This module never touches a database itself; it asks the engine's :class:`StateReader` for the
few values it may need (outputs of earlier steps, results of map elements).

Why one module: every rule in one place is the point; the functions are short and read together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pypgflow.backoff import DEFAULT_BACKOFF, Backoff
from pypgflow.errors import (
    AttemptError,
    MapInputError,
    NonRetryable,
    PoisonPill,
    RetryAfter,
    SerializationError,
    WorkerLost,
)
from pypgflow.serialization import dumps, join_array, join_object, loads
from pypgflow.status import RunStatus, StepStatus
from pypgflow.workflow import StepOptions, Workflow, resolve_options


@dataclass
class StepState:
    """One step of a run, as orchestration sees it (outputs are JSON text, loaded on demand)."""

    name: str
    position: int
    status: StepStatus
    depends_on: tuple[str, ...]
    remaining_deps: int
    max_attempts: int
    is_map: bool = False
    map_over: str | None = None
    remaining_tasks: int | None = None
    task_count: int | None = None
    output: str | None = None
    #: seconds from being released to being due (Step.start_delay)
    start_delay: float = 0.0
    #: a wait step's signal, and its timeout in seconds (None: none)
    signal: str | None = None
    signal_timeout: float | None = None


#: the delay of a wait step's task without a timeout: due (to time out) in some 3,000 years
NEVER = 1e11


@dataclass
class RunState:
    """A run locked for a transaction, with all its steps."""

    id: str
    workflow: str
    status: RunStatus
    queue: str
    priority: int
    remaining_steps: int
    steps: dict[str, StepState]
    input: str | None = None  # JSON text; loaded only when a root map step needs it
    output: str | None = None
    error: AttemptError | None = None
    changed: bool = False
    started: bool = False
    #: the workflow version it started on: set by new_run (a locked run's is not read: new
    #: tasks take their run's version in the database)
    version: str | None = None
    #: a child run's parent task, which waits for it to finish
    parent_task_id: int | None = None

    def dependents(self, name: str) -> list[StepState]:
        return [s for s in self.steps.values() if name in s.depends_on]

    @property
    def leaves(self) -> list[StepState]:
        depended = {dep for s in self.steps.values() for dep in s.depends_on}
        return sorted(
            (s for s in self.steps.values() if s.name not in depended), key=lambda s: s.position
        )

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.PENDING, RunStatus.RUNNING)


@dataclass(frozen=True)
class NewTask:
    run_id: str
    step: str
    task_index: int | None
    workflow: str
    queue: str
    priority: int
    max_attempts: int
    input: str | None  # JSON text of a map element
    #: seconds until it is due (a durable start delay; a wait step's timeout)
    delay: float = 0.0
    #: the output of a task made completed (a wait step whose signal was already there)
    output: str | None = None

    @property
    def plain(self) -> bool:
        """Due at once and to be run: what the engines' fast paths insert."""
        return self.delay == 0 and self.output is None and self.task_index is None

    def of_run(self, run_id: str) -> NewTask:
        """This task for another run (as ``dataclasses.replace`` would, at a tenth of its cost:
        a batch of starts makes one per run)."""
        return NewTask(
            run_id,
            self.step,
            self.task_index,
            self.workflow,
            self.queue,
            self.priority,
            self.max_attempts,
            self.input,
            self.delay,
            self.output,
        )


@dataclass
class Changes:
    """What one transaction must write, gathered across every run it touched."""

    runs: dict[str, RunState] = field(default_factory=dict)
    #: the steps to write, by (run id, step name): touched many times, written once
    steps: dict[tuple[str, str], StepState] = field(default_factory=dict)
    new_tasks: list[NewTask] = field(default_factory=list)
    #: runs whose queued and running tasks must be cancelled
    cancel_tasks_of: list[str] = field(default_factory=list)
    #: (run id, step, budget, delay) whose unfinished tasks go back to the queue with a fresh
    #: attempt budget, due in ``delay`` seconds
    requeue_tasks_of: list[tuple[str, str, int, float]] = field(default_factory=list)
    #: (signal id, run id, step): pending signals taken by the wait steps they completed
    consumed_signals: list[tuple[int, str, str]] = field(default_factory=list)

    def touch_run(self, run: RunState) -> None:
        run.changed = True
        self.runs[run.id] = run

    def touch_step(self, run: RunState, step: StepState) -> None:
        self.steps[run.id, step.name] = step
        self.touch_run(run)

    @property
    def queues_with_new_work(self) -> set[str]:
        queues = {t.queue for t in self.new_tasks}
        queues.update(self.runs[r].queue for r, _, _, _ in self.requeue_tasks_of)
        return queues


class StateReader(Protocol):
    """The reads orchestration may need, inside the engine's transaction."""

    def step_outputs(self, run_id: str, names: Sequence[str]) -> dict[str, str]:
        """JSON text outputs of completed plain (not map) steps."""
        ...

    def map_outputs(self, run_id: str, step: str) -> list[str]:
        """JSON text results of a map step's elements, by element index."""
        ...

    def run_input(self, run_id: str) -> str | None:
        """The run's input as JSON text."""
        ...

    def pending_signals(self, run_id: str, name: str) -> list[tuple[int, str]]:
        """The signals ``name`` sent to the run that no wait step took yet, oldest first:
        (id, data as JSON text)."""
        ...


@dataclass(frozen=True)
class TaskDone:
    """A task whose completion the engine accepted (it was still running that attempt)."""

    run_id: str
    step: str
    task_index: int | None
    output: str
    #: the step's condition was false: the step is skipped (its output is null)
    skipped: bool = False


@dataclass(frozen=True)
class TaskFailedForGood:
    """A task that failed for good (the engine already marked it failed): ``error`` is its last
    attempt's."""

    run_id: str
    step: str
    task_index: int | None
    error: AttemptError


# -- what a failure means ----------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """Run the step again: its task goes back to its queue, due ``delay`` seconds from now."""

    delay: float = 0.0


@dataclass(frozen=True)
class GiveUp:
    """The step fails for good, and its run with it; ``why`` says why when attempts remained
    (the failure cannot be retried)."""

    why: str | None = None


#: what happens to a task after a failed or lost attempt
Verdict = Retry | GiveUp


def attempt_failed(
    *,
    attempt: int,
    max_attempts: int,
    backoff: Backoff = DEFAULT_BACKOFF,
    retryable: bool = True,
    why: str | None = None,
) -> Verdict:
    """A step's attempt number ``attempt`` raised: retry after the backoff's delay for that
    attempt while attempts remain, else give up. A failure that no retry can cure
    (``retryable=False``, ``why`` saying why) gives up at once."""
    if not retryable:
        return GiveUp(why)
    if attempt >= max_attempts:
        return GiveUp()
    return Retry(delay=float(backoff.delay(attempt)))


def step_failed(exc: BaseException, *, attempt: int, options: StepOptions) -> Verdict:
    """What the exception ``exc`` raised by attempt ``attempt`` of a step means, by the step's
    options and the exception's kind, in this order:

    - :class:`NonRetryable` (or a subclass), or an output that is not JSON
      (:class:`SerializationError`): give up at once;
    - :class:`RetryAfter`: retry after its delay while attempts remain;
    - one of ``give_up_on``, or not one of ``retry_on`` when that is set: give up at once;
    - anything else: retry after the backoff's delay while attempts remain.
    """
    max_attempts = options.max_attempts
    if isinstance(exc, NonRetryable | SerializationError):
        return GiveUp(f"{type(exc).__name__} is not retried")
    if isinstance(exc, RetryAfter):
        return Retry(delay=exc.delay) if attempt < max_attempts else GiveUp()
    if options.give_up_on is not None and isinstance(exc, options.give_up_on):
        return GiveUp(f"{type(exc).__name__} is one of give_up_on")
    if options.retry_on is not None and not isinstance(exc, options.retry_on):
        return GiveUp(f"{type(exc).__name__} is not one of retry_on")
    return attempt_failed(attempt=attempt, max_attempts=max_attempts, backoff=options.backoff)


@dataclass(frozen=True)
class LostTask:
    """A task whose attempt was lost with its worker, as the engine found it."""

    id: int
    run_id: str
    step: str
    task_index: int | None
    attempt: int
    max_attempts: int
    #: how many workers this task had lost before this one
    rescues: int
    instance_id: str | None
    queue: str
    #: the lost instance's last heartbeat; None if it is not registered
    last_seen: datetime | None
    #: seconds between that heartbeat and the rescue
    silent_for: float | None
    #: of the workers lost before, how many were running this task alone (charged losses)
    lone_losses: int = 0
    #: how many tasks its instance lost at once, this one included
    together: int = 1
    #: False when the instance did not die but gave the task up itself, alive (cut off from
    #: the database, or a claim whose answer it never got): nothing was killed
    worker_died: bool = True


@dataclass(frozen=True)
class Loss:
    """What a lost attempt becomes: the error to record, the task's verdict, and whether the
    loss is charged to the step (it counts toward ``max_rescues``)."""

    error: AttemptError
    verdict: Verdict
    charged: bool


def task_lost(task: LostTask, *, how: str, max_rescues: int) -> Loss:
    """The error to record for a lost attempt (``how``: what happened, and who noticed), and
    what becomes of the task: back to its queue at once (its attempt stays counted), or failed
    for good when no attempt is left (``WorkerLost``) or when it has now been running alone on
    more than ``max_rescues`` lost workers (``PoisonPill``: it is what kills them).

    A loss is *charged* to the step only when its worker died running nothing else (no other
    task of that instance lost with it): a worker killed from outside (OOM killer, a deploy, a
    node lost) while it ran several steps says nothing about any one of them, and charging them
    all condemned healthy steps that were merely unlucky. A step that kills its worker while
    others run beside it is still bounded: each loss counts one of its attempts."""
    where = task.step if task.task_index is None else f"{task.step}[{task.task_index}]"
    lost = task.rescues + 1
    charged = task.worker_died and task.together <= 1
    lone = task.lone_losses + (1 if charged else 0)
    lost_what = (
        f"instance {task.instance_id!r} was lost while running step {where!r} "
        f"(attempt {task.attempt} of {task.max_attempts}): {how}"
    )
    verdict: Verdict
    if charged and lone > max_rescues:
        kind: type[WorkerLost] = PoisonPill
        message = (
            f"step {where!r} was running alone on {lone} workers that were lost, more than "
            f"max_rescues={max_rescues} ({lost} lost in all): it kills them; failed for good. "
            f"The last: {lost_what}"
        )
        verdict = GiveUp()
    elif task.attempt >= task.max_attempts:
        kind = WorkerLost
        message = f"{lost_what}; no attempts left: failed for good"
        verdict = GiveUp()
    else:
        kind = WorkerLost
        message = f"{lost_what}; queued again"
        verdict = Retry()
    error = AttemptError(
        step=task.step,
        attempt=task.attempt,
        type=kind.__name__,
        message=message,
        traceback="",
        task_index=task.task_index,
        instance_id=task.instance_id,
        last_seen=None if task.last_seen is None else task.last_seen.isoformat(),
        lost_workers=lost,
    )
    return Loss(error, verdict, charged)


# -- building a run ----------------------------------------------------------------------------


def new_run(
    workflow: Workflow,
    *,
    run_id: str,
    input_json: str,
    queue: str,
    priority: int,
    changes: Changes,
) -> RunState:
    """The state of a run about to be inserted, its root steps already made ready."""
    run = _fresh_run(workflow, run_id=run_id, input_json=input_json, queue=queue, priority=priority)
    _release_ready(run, changes, _NoReads())
    return run


@dataclass(frozen=True)
class KeptStep:
    """A step a forked run keeps from the run it is forked from: done already, with its output
    (JSON text; a skipped step's is null) or, for a map step, its elements' results."""

    status: StepStatus
    output: str
    elements: tuple[str, ...] | None = None


def forked_run(
    workflow: Workflow,
    *,
    run_id: str,
    input_json: str,
    queue: str,
    priority: int,
    kept: Mapping[str, KeptStep],
    changes: Changes,
) -> RunState:
    """A new run that keeps the ``kept`` steps as they were done (completed tasks with their
    outputs, nothing to run) and runs the others: those whose dependencies are all kept are
    made ready at once."""
    run = _fresh_run(workflow, run_id=run_id, input_json=input_json, queue=queue, priority=priority)
    for name in workflow.topological_order():
        done = kept.get(name)
        if done is None:
            continue
        step = run.steps[name]
        step.status = done.status
        step.output = done.output
        if done.elements is None:
            step.task_count = 1
            changes.new_tasks.append(_task(run, step, None, None, output=done.output))
        else:
            step.task_count = len(done.elements)
            for index, element in enumerate(done.elements):
                changes.new_tasks.append(_task(run, step, index, None, output=element))
        step.remaining_tasks = 0
        run.remaining_steps -= 1
        for dependent in run.dependents(name):
            dependent.remaining_deps -= 1
    _release_ready(run, changes, _NoReads())
    return run


def _fresh_run(
    workflow: Workflow, *, run_id: str, input_json: str, queue: str, priority: int
) -> RunState:
    """A run of ``workflow`` whose steps all wait, nothing made ready yet."""
    steps: dict[str, StepState] = {}
    for position, name in enumerate(workflow.topological_order()):
        step = workflow.steps[name]
        steps[name] = StepState(
            name=name,
            position=position,
            status=StepStatus.WAITING,
            depends_on=step.depends_on,
            remaining_deps=len(step.depends_on),
            max_attempts=resolve_options(workflow, step).max_attempts,
            is_map=step.is_map,
            map_over=step.map_over,
            start_delay=step.start_delay,
            signal=step.signal,
            signal_timeout=step.signal_timeout,
        )
    run = RunState(
        id=run_id,
        workflow=workflow.name,
        status=RunStatus.PENDING,
        queue=queue,
        priority=priority,
        remaining_steps=len(steps),
        steps=steps,
        input=input_json,
        version=workflow.version,
    )
    return run


def _release_ready(run: RunState, changes: Changes, reader: StateReader) -> None:
    """Make ready every waiting step whose dependencies are all done."""
    for step_state in list(run.steps.values()):
        if step_state.remaining_deps == 0 and step_state.status is StepStatus.WAITING:
            _make_ready(run, step_state, changes, reader)
            if not run.active:
                return


class _NoReads:
    """A new run has nothing stored yet: every value it needs is in memory."""

    def step_outputs(self, run_id: str, names: Sequence[str]) -> dict[str, str]:
        return {}

    def map_outputs(self, run_id: str, step: str) -> list[str]:
        return []

    def run_input(self, run_id: str) -> str | None:  # pragma: no cover - input is in memory
        return None

    def pending_signals(self, run_id: str, name: str) -> list[tuple[int, str]]:
        return []


# -- events ------------------------------------------------------------------------------------


def tasks_completed(
    runs: dict[str, RunState], done: Iterable[TaskDone], reader: StateReader, changes: Changes
) -> None:
    """Record completed tasks: finish their steps, release dependents, finish runs."""
    for task in done:
        run = runs[task.run_id]
        if not run.active:
            continue
        step = run.steps[task.step]
        if step.status is not StepStatus.READY:
            continue
        if step.is_map:
            assert step.remaining_tasks is not None  # noqa: S101  a type narrowing: map steps count tasks
            step.remaining_tasks -= 1
            changes.touch_step(run, step)
            if step.remaining_tasks == 0:
                _step_completed(
                    run, step, join_array(reader.map_outputs(run.id, step.name)), changes, reader
                )
        else:
            status = StepStatus.SKIPPED if task.skipped else StepStatus.COMPLETED
            _step_completed(run, step, task.output, changes, reader, status=status)


def tasks_failed(
    runs: dict[str, RunState], failed: Iterable[TaskFailedForGood], changes: Changes
) -> None:
    """A task failed its last attempt: its step and run fail, the run's other work is cancelled."""
    for task in failed:
        run = runs[task.run_id]
        if not run.active:
            continue
        step = run.steps[task.step]
        _run_failed(run, step, changes, error=dataclasses.replace(task.error, traceback=""))


def tasks_ran(runs: dict[str, RunState], run_ids: Iterable[str], changes: Changes) -> None:
    """A task of each of these runs ran, or has been running for a while: a run still pending
    is running (claims do not write runs)."""
    for run_id in run_ids:
        run = runs[run_id]
        if run.status is RunStatus.PENDING:
            run.status = RunStatus.RUNNING
            changes.touch_run(run)


def cancel_run(run: RunState, changes: Changes) -> bool:
    """Cancel an unfinished run: its unfinished steps and tasks are cancelled. False if finished."""
    if not run.active:
        return False
    run.status = RunStatus.CANCELLED
    _close_unfinished_steps(run, StepStatus.CANCELLED, changes)
    changes.cancel_tasks_of.append(run.id)
    changes.touch_run(run)
    return True


def resume_run(run: RunState, reader: StateReader, changes: Changes) -> bool:
    """Resume a failed or cancelled run from its unfinished steps; completed steps stay done.

    Each resumed step gets a fresh attempt budget. False if the run is not failed or cancelled.
    """
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        return False
    run.status = RunStatus.PENDING
    run.error = None
    changes.touch_run(run)
    for step in sorted(run.steps.values(), key=lambda s: s.position):
        if step.status.done:
            continue
        if step.remaining_deps > 0:
            step.status = StepStatus.WAITING
            changes.touch_step(run, step)
        elif step.task_count is None:
            step.status = StepStatus.WAITING
            _make_ready(run, step, changes, reader)
        else:
            step.status = StepStatus.READY
            changes.touch_step(run, step)
            # a wait step waits its whole timeout again; others are due at once
            delay = _wait_delay(step) if step.signal is not None else 0.0
            changes.requeue_tasks_of.append((run.id, step.name, step.max_attempts, delay))
    return True


# -- the transitions ---------------------------------------------------------------------------


def _make_ready(run: RunState, step: StepState, changes: Changes, reader: StateReader) -> None:
    """All of a step's dependencies completed: create its tasks (or finish an empty map)."""
    step.status = StepStatus.READY
    changes.touch_step(run, step)
    if step.signal is not None:
        _wait(run, step, step.signal, changes, reader)
        return
    if not step.is_map:
        step.task_count = 1
        step.remaining_tasks = 1
        changes.new_tasks.append(_task(run, step, None, None, delay=step.start_delay))
        return
    if step.map_over is None:
        if run.input is None:
            run.input = reader.run_input(run.id)
        source_text, source = run.input, "the workflow input"
    elif run.steps[step.map_over].status is StepStatus.SKIPPED:
        source_text, source = "[]", "a skipped step"  # nothing to map over
    else:
        over = run.steps[step.map_over]
        _load_outputs(run, [over], reader)
        source_text, source = over.output, f"step {over.name!r}"
    items = loads(source_text)
    if not isinstance(items, list):
        error = AttemptError(
            step=step.name,
            attempt=0,
            type=MapInputError.__name__,
            message=f"map step {step.name!r} needs a list from {source}, "
            f"got {type(items).__name__}",
            traceback="",
        )
        _run_failed(run, step, changes, error=error)
        return
    step.task_count = len(items)
    step.remaining_tasks = len(items)
    if not items:
        _step_completed(run, step, "[]", changes, reader)
        return
    for index, item in enumerate(items):
        item_json = dumps(item, what=f"element {index} of map step {step.name!r}")
        changes.new_tasks.append(_task(run, step, index, item_json, delay=step.start_delay))


def _wait(
    run: RunState, step: StepState, signal: str, changes: Changes, reader: StateReader
) -> None:
    """A wait step is reached: a signal it waits for that came already completes it now (the
    oldest not taken yet); else its task waits, due (to time out) when its timeout passes."""
    step.task_count = 1
    step.remaining_tasks = 1
    taken = {signal_id for signal_id, _, _ in changes.consumed_signals}
    for signal_id, data in reader.pending_signals(run.id, signal):
        if signal_id not in taken:
            changes.consumed_signals.append((signal_id, run.id, step.name))
            changes.new_tasks.append(_task(run, step, None, None, output=data))
            _step_completed(run, step, data, changes, reader)
            return
    changes.new_tasks.append(_task(run, step, None, None, delay=_wait_delay(step)))


def _wait_delay(step: StepState) -> float:
    return NEVER if step.signal_timeout is None else step.signal_timeout


def waiting_for_signal(run: RunState, name: str) -> StepState | None:
    """The step of an unfinished run that a signal ``name`` completes: the first (in the
    graph's order) of those waiting for it. None: none waits yet, the signal is kept."""
    if not run.active:
        return None
    waiting = [s for s in run.steps.values() if s.signal == name and s.status is StepStatus.READY]
    return min(waiting, key=lambda s: s.position) if waiting else None


def _task(
    run: RunState,
    step: StepState,
    index: int | None,
    item: str | None,
    *,
    delay: float = 0.0,
    output: str | None = None,
) -> NewTask:
    return NewTask(
        run_id=run.id,
        step=step.name,
        task_index=index,
        workflow=run.workflow,
        queue=run.queue,
        priority=run.priority,
        max_attempts=step.max_attempts,
        input=item,
        delay=delay,
        output=output,
    )


def _step_completed(
    run: RunState,
    step: StepState,
    output: str,
    changes: Changes,
    reader: StateReader,
    *,
    status: StepStatus = StepStatus.COMPLETED,
) -> None:
    step.status = status
    step.output = output
    step.remaining_tasks = 0
    changes.touch_step(run, step)
    run.remaining_steps -= 1
    changes.touch_run(run)
    for dependent in run.dependents(step.name):
        dependent.remaining_deps -= 1
        changes.touch_step(run, dependent)
        if dependent.remaining_deps == 0 and dependent.status is StepStatus.WAITING:
            _make_ready(run, dependent, changes, reader)
            if not run.active:
                return
    if run.remaining_steps == 0 and run.active:
        _run_completed(run, changes, reader)


def _load_outputs(run: RunState, steps: Sequence[StepState], reader: StateReader) -> None:
    """Fill in the outputs of these completed steps that this transaction has not seen: a plain
    step's is its task's, a map step's its elements' results in order ([] for none)."""
    plain = [s.name for s in steps if s.output is None and not s.is_map]
    if plain:
        for name, text in reader.step_outputs(run.id, plain).items():
            run.steps[name].output = text
    for step in steps:
        if step.output is None and step.is_map:
            step.output = join_array(reader.map_outputs(run.id, step.name))


def _run_completed(run: RunState, changes: Changes, reader: StateReader) -> None:
    leaves = run.leaves
    _load_outputs(run, leaves, reader)
    if len(leaves) == 1:
        run.output = leaves[0].output
    else:
        run.output = join_object({leaf.name: leaf.output or "null" for leaf in leaves})
    run.status = RunStatus.COMPLETED
    changes.touch_run(run)


def _run_failed(run: RunState, step: StepState, changes: Changes, *, error: AttemptError) -> None:
    step.status = StepStatus.FAILED
    changes.touch_step(run, step)
    run.status = RunStatus.FAILED
    run.error = error
    _close_unfinished_steps(run, StepStatus.CANCELLED, changes)
    changes.cancel_tasks_of.append(run.id)
    changes.touch_run(run)


def _close_unfinished_steps(run: RunState, status: StepStatus, changes: Changes) -> None:
    for other in run.steps.values():
        if other.status in (StepStatus.WAITING, StepStatus.READY):
            other.status = status
            changes.touch_step(run, other)


__all__ = [
    "Changes",
    "GiveUp",
    "KeptStep",
    "Loss",
    "LostTask",
    "NewTask",
    "Retry",
    "RunState",
    "StateReader",
    "StepState",
    "TaskDone",
    "TaskFailedForGood",
    "Verdict",
    "attempt_failed",
    "cancel_run",
    "forked_run",
    "new_run",
    "resume_run",
    "step_failed",
    "task_lost",
    "tasks_completed",
    "tasks_failed",
    "tasks_ran",
    "waiting_for_signal",
]
