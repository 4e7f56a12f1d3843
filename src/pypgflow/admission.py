"""Which fleet-wide limits a claimed task must pass before it runs (see pypgflow.limits), and
a worker's side of admitting it (:class:`Gatekeeper`).

The worker asks :func:`gates_for` for each task it claims; the tasks with gates wait, claimed,
until the engine admits them through their gates (``Engine.admit``), a batch at a time: a task
admitted runs; a task sent back is queued again by the engine itself, without its attempt
counted, waiting in the database for its gate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from pypgflow import orchestration
from pypgflow.context import ContextLogger
from pypgflow.engines.base import ClaimedTask, Outcome
from pypgflow.errors import ConfigurationError, DatabaseError
from pypgflow.limits import Admission, Gate, GateRequest, RateLimit, key_part, rate_margin
from pypgflow.slots import Slots
from pypgflow.workflow import Workflow

#: tasks claimed ahead of a gate this worker fills, in gate capacities: one batch on its way
#: through an admission while the next one's claim is on its way too
AHEAD_OF_GATE = 2


def gates_for(
    task: ClaimedTask,
    workflow: Workflow | None,
    *,
    queue_limits: Mapping[str, int],
    rate_limits: Mapping[str, RateLimit],
) -> tuple[Gate, ...]:
    """The gates of a claimed task: its queue's limit, its workflow's (whole runs), its step's
    concurrency and rate limits. A key function that raises, or returns something that is not
    JSON, raises (the task then fails)."""
    gates: list[Gate] = []
    capacity = queue_limits.get(task.queue)
    if capacity is not None:
        gates.append(Gate(f"queue:{task.queue}", "task", capacity))
    step = workflow.steps.get(task.step) if workflow is not None else None
    if workflow is not None and workflow.concurrency is not None:
        key = f"run:{workflow.name}"
        if workflow.concurrency_key is not None:
            key += ":" + key_part(workflow.concurrency_key(task.run_input))
        gates.append(Gate(key, "run", workflow.concurrency))
    if step is None:
        return tuple(gates)
    if step.concurrency is not None:
        key = f"step:{task.workflow}:{step.name}"
        if step.concurrency_key is not None:
            key += ":" + key_part(step.concurrency_key(task.run_input))
        gates.append(Gate(key, "task", step.concurrency))
    if step.rate_limit is not None:
        limit = rate_limits.get(step.rate_limit)
        if limit is None:
            raise ConfigurationError(
                f"step {step.name!r} of workflow {task.workflow!r} takes rate limit "
                f"{step.rate_limit!r}, which this app does not declare (app.rate_limit)"
            )
        key = f"rate:{limit.name}"
        if step.rate_limit_key is not None:
            key += ":" + key_part(step.rate_limit_key(task.run_input))
        gates.append(Gate(key, "rate", limit.limit, limit.per))
    return tuple(gates)


def request_of(task: ClaimedTask) -> GateRequest:
    """The admission request of a task whose gates are set."""
    return GateRequest(task.id, task.attempt, task.run_id, task.gates)


def token_stale(task: ClaimedTask, now: float) -> bool:
    """Whether a task's rate tokens were taken too long before its step is called (it waited
    for a slot, claimed ahead): it must be admitted again (see ``limits.RATE_MARGIN``)."""
    return any(
        gate.kind == "rate" and now - task.admitted_at > rate_margin(gate.per)
        for gate in task.gates
    )


def undeclared_rate_limits(
    workflows: Mapping[tuple[str, str], Workflow], rate_limits: Mapping[str, RateLimit]
) -> list[str]:
    """The rate limits the steps of these workflows take that the app does not declare."""
    return sorted(
        {
            f"{step.rate_limit!r} (step {step.name!r} of workflow {flow.name!r})"
            for flow in workflows.values()
            for step in flow.steps.values()
            if step.rate_limit is not None and step.rate_limit not in rate_limits
        }
    )


class Gatekeeper:
    """A worker's side of fleet-wide limits: which claimed tasks wait for their gates, how many
    to claim while a gate is full, and the admission loop that lets them through.

    A claimed task with gates waits *unadmitted* in the worker's slots (``Slots``) until the
    admission loop (:meth:`run`, beside the claim loop) has the engine admit it. Once a gate
    was found full, the worker counts its own room in it: its capacity less this worker's
    steps that hold it. While there is none, it claims up to AHEAD_OF_GATE times the
    capacity ahead, and the end of one of its steps (:meth:`step_ended`) admits the next ones
    at once: no claim's round trip lies between one step's end and the next one's start. An
    admission that sends tasks back shows that other workers hold the gate too: the rest
    claimed ahead go to the engine at once, to wait in the queue rather than here, and nothing
    more is claimed ahead of that gate until an admission lets all it was given through.

    ``admit(requests)`` is the engine's admission, off the loop; ``start(task, queue)`` runs an
    admitted task or keeps it for a free slot; ``on_room()`` wakes the claim loop;
    ``on_lost()`` says an admission failed, its tasks claimed and held by nobody (the claim
    loop hands them back); ``fail(outcome)`` records a task whose gates cannot be made.
    """

    def __init__(
        self,
        slots: Slots,
        *,
        queue_limits: Mapping[str, int],
        rate_limits: Mapping[str, RateLimit],
        workflow_of: Callable[[ClaimedTask], Workflow | None],
        failed: Callable[[ClaimedTask, Exception, orchestration.GiveUp], Outcome],
        running: Callable[[], Iterable[ClaimedTask]],
        admit: Callable[[list[GateRequest]], Awaitable[Admission]],
        start: Callable[[ClaimedTask, str], None],
        fail: Callable[[Outcome], None],
        on_room: Callable[[], None],
        on_lost: Callable[[], None],
        log: ContextLogger,
    ) -> None:
        self.slots = slots
        self.queue_limits = queue_limits
        self.rate_limits = rate_limits
        self._workflow_of = workflow_of
        self._failed = failed
        self._running = running
        self._admit_requests = admit
        self._start = start
        self._fail = fail
        self._on_room = on_room
        self._on_lost = on_lost
        self.log = log
        #: per queue, the capacity of the gate that last sent tasks back, and the queues whose
        #: last admission sent some back (other workers hold the gate too: no claims ahead)
        self.caps: dict[str, int] = {}
        self.crowded: set[str] = set()
        #: per queue, tasks claimed ahead on their way through an admission (and their ids)
        self._admitting = dict.fromkeys(slots.queues, 0)
        self.admitting_ids: set[int] = set()
        self._wake: asyncio.Event | None = None

    def claim_size(self, queue: str) -> int:
        """How many tasks of ``queue`` to claim: its slots' room, but no more than its last
        full gate may admit beside this worker's own holders, plus AHEAD_OF_GATE times its
        capacity claimed ahead (claiming more would only send the rest back, writing each task
        three times more). None (0) when this worker holds the whole gate and as many wait: an
        admission of those wakes the claim loop."""
        room = self.slots.room(queue) - self._admitting[queue]  # (being admitted: not room)
        room_in_gate = self.room(queue)  # (those being admitted count as holders already)
        if room_in_gate is None:
            return max(0, room)
        # while other workers hold the gate too, tasks claimed ahead would only go back
        extra = 0 if queue in self.crowded else AHEAD_OF_GATE * self.caps[queue]
        return min(room, max(0, room_in_gate + extra - self.slots.unadmitted(queue)))

    def room(self, queue: str) -> int | None:
        """How many more tasks of ``queue`` its last full gate may admit beside those of this
        worker that hold it (running, admitted and claimed ahead, being admitted); None if no
        gate of the queue was full."""
        cap = self.caps.get(queue)
        if cap is None:
            return None
        holding = sum(1 for task in self._running() if task.gates)
        holding += sum(1 for task in self.slots.admitted_ahead(queue) if task.gates)
        return max(0, cap - holding - self._admitting[queue])

    def gated(self, queue: str, tasks: Sequence[ClaimedTask]) -> list[ClaimedTask]:
        """Of the claimed tasks, those without fleet-wide limits, to run now, in claim order.
        Those with some are kept unadmitted for the admission loop; a task whose gates cannot
        be worked out fails."""
        free: list[ClaimedTask] = []
        for task in tasks:
            try:
                gates = gates_for(
                    task,
                    self._workflow_of(task),
                    queue_limits=self.queue_limits,
                    rate_limits=self.rate_limits,
                )
            except Exception as exc:
                verdict = orchestration.GiveUp("its fleet-wide limit's key could not be made")
                self._fail(self._failed(task, exc, verdict))
                continue
            if gates:
                self.slots.hold_unadmitted(queue, task.gated(gates))
            else:
                free.append(task)
        if free:
            self.caps.pop(queue, None)  # tasks without gates too: claim what room allows
        if self.slots.unadmitted(queue):
            self.wake()
        return free

    def step_ended(self, task: ClaimedTask, queue: str) -> None:
        """A step of this worker ended: if it held a gate, room for the tasks claimed ahead."""
        if task.gates and self.slots.unadmitted(queue):
            self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self, stopping: Callable[[], bool]) -> None:
        """The admission loop: admit the tasks claimed ahead of their gates as soon as a gate
        has room for them, until ``stopping()``."""
        wake = self._wake = asyncio.Event()
        failures = 0
        while not stopping():
            wake.clear()
            try:
                for queue in self.slots.queues:
                    if self.slots.unadmitted(queue) and self.room(queue) != 0:
                        sent_back = await self.admit_unadmitted(queue)
                        if sent_back and self.slots.unadmitted(queue):
                            # others hold the gate too: what waits here would wait for their
                            # ends unseen, so it waits in the queue instead (see GateVerbs)
                            await self.admit_unadmitted(queue, every=True)
                failures = 0
            except Exception as exc:  # the loop must go on: what it took is handed back
                failures += 1
                pause = min(0.2 * 2**failures, 5.0)
                if not isinstance(exc, DatabaseError):
                    self.log.exception("admitting claimed work failed; retrying in %.1f s", pause)
                elif failures == 1 or failures % 10 == 0:
                    self.log.warning(
                        "cannot admit claimed work (%s); retrying in %.1f s", exc, pause
                    )
                await asyncio.sleep(pause)
                continue
            await wake.wait()

    async def admit_unadmitted(self, queue: str, *, every: bool = False) -> bool:
        """Admit the tasks claimed ahead of a full gate, as many as it has room for (``every``:
        all of them), and start them. True if the engine sent some back to the queue: the gate
        was fuller than this worker's own steps make it."""
        room = None if every else self.room(queue)
        waiting = self.slots.take_unadmitted(
            queue, self.slots.unadmitted(queue) if room is None else room
        )
        self._admitting[queue] += len(waiting)
        self.admitting_ids.update(t.id for t in waiting)
        try:
            admitted = await self.admit(queue, waiting)
        finally:
            self._admitting[queue] -= len(waiting)
            self.admitting_ids.difference_update(t.id for t in waiting)
        for task in admitted:
            self._start(task, queue)
        self._on_room()  # room to claim ahead again
        return len(admitted) < len(waiting)

    async def admit(self, queue: str, tasks: list[ClaimedTask]) -> list[ClaimedTask]:
        """The engine's admission of these tasks with gates: those admitted, in order (the
        others it sent back to their queue); the capacity of a gate found full is learnt."""
        if not tasks:
            return []
        try:
            admission = await self._admit_requests([request_of(t) for t in tasks])
        except Exception:
            # their claim stands: the claim loop hands back what runs for this worker and is
            # not held
            self._on_lost()
            raise
        if admission.deferred:
            self.crowded.add(queue)
        else:
            self.crowded.discard(queue)
        full = {d.gate for d in admission.deferred.values()}
        capacities = [
            g.capacity for t in tasks for g in t.gates if g.key in full and g.kind != "rate"
        ]
        if capacities:
            self.caps[queue] = min(capacities)
        now = time.monotonic()
        return [t.gated(admitted_at=now) for t in tasks if t.id in admission.admitted]
