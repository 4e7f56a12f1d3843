"""The worker: claims tasks from its queues, runs their steps, and hands their outcomes on.

One asyncio loop per worker process. Claims are sized to the free execution slots of each queue,
and take only the workflow versions its app registers. Sync steps run in a bounded thread pool,
async steps on the loop; what a failure means is orchestration's decision
(:func:`pypgflow.orchestration.step_failed`), taken here before the outcome is recorded. Beside
the claim loop run the worker's other parts, each in its module: the
:class:`~pypgflow.outcomes.OutcomeWriter` (batched outcomes), the
:class:`~pypgflow.registry.Registration` (heartbeat, lost contact, rescue) and the
:class:`~pypgflow.leader.Leader` (lease, cron, retention).

The worker never touches SQL: it speaks to the engine's domain verbs, through worker threads so
the loop never blocks on the database.

Why one module: the claim loop, the slots' hand-offs and the shutdown sequence are one state
machine over the same few fields; its other parts already live in modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pypgflow import defaults, observing, outcomes
from pypgflow.admission import Gatekeeper, request_of, token_stale, undeclared_rate_limits
from pypgflow.context import StepContext, context_logger
from pypgflow.definitions import Definitions
from pypgflow.engines.base import ClaimedTask, FinishResult
from pypgflow.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    InvalidArgument,
)
from pypgflow.execution import StepRunner
from pypgflow.leader import Leader
from pypgflow.outcomes import OutcomeWriter, StartNotes
from pypgflow.registry import Registration
from pypgflow.retention import DEFAULT_RETENTION, Retention
from pypgflow.slots import Slots, queue_slots

T = TypeVar("T")

logger = logging.getLogger("pypgflow.worker")
#: how long a stopping worker waits for cancelled sync steps' threads to return
_SYNC_STEP_GRACE = 5.0


@dataclass
class _Held:
    """A task this worker is executing."""

    task: ClaimedTask
    queue: str
    ctx: StepContext
    future: asyncio.Future[Any] | None = None


class Worker:
    """Runs the steps of registered workflows from the given queues until stopped.

    ``queues`` maps queue names to how many steps of that queue may run at once (a list of names
    gets 10 slots each). ``poll_interval`` bounds how long a missed notification can delay work;
    ``shutdown_timeout`` is how long running steps may finish after a stop request before they
    are handed back to the queue.

    Every ``heartbeat_interval`` the worker tells the database it is alive and rescues the steps
    of instances silent for longer than ``stale_after`` (default: the app's, 30 s); a step that
    lost more than ``max_rescues`` workers running it alone fails as a poison pill. A worker that
    cannot reach the database for longer than ``stale_after`` abandons its running steps (they
    may have been rescued elsewhere) until it is back; one whose claim failed on a lost
    connection hands back, once it is back, what that claim may have taken. See
    ARCHITECTURE.md, "Many instances".

    Every worker also competes for the leader lease (``lease_ttl`` seconds, renewed every third
    of it); the leader starts the app's cron schedules and prunes old runs per ``retention``
    (``None``: keep them). See :mod:`pypgflow.leader`.
    """

    def __init__(
        self,
        app: Definitions,
        queues: dict[str, int] | Sequence[str] | None = None,
        *,
        poll_interval: float = defaults.DEFAULT_POLL_INTERVAL,
        heartbeat_interval: float = defaults.DEFAULT_HEARTBEAT_INTERVAL,
        cancel_check_interval: float = defaults.DEFAULT_CANCEL_CHECK_INTERVAL,
        shutdown_timeout: float = defaults.DEFAULT_SHUTDOWN_TIMEOUT,
        install_signal_handlers: bool = True,
        stale_after: float | None = None,
        max_rescues: int = defaults.DEFAULT_MAX_RESCUES,
        lease_ttl: float = defaults.DEFAULT_LEASE_TTL,
        retention: Retention | None = DEFAULT_RETENTION,
    ) -> None:
        queues = queue_slots(queues)
        if not app.workflows:
            raise InvalidArgument(
                "this app has no registered workflows: a worker only runs registered workflows "
                "(app.register(flow) or App(url, workflows=[...]))"
            )
        self.app = app
        self.engine = app.engine
        self.instance_id = app.instance_id
        self.events = app.events  # lifecycle events (see pypgflow.events)
        self.queues = dict(queues)
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.cancel_check_interval = cancel_check_interval
        self.shutdown_timeout = shutdown_timeout
        self.install_signal_handlers = install_signal_handlers
        self.stale_after = app.stale_after if stale_after is None else stale_after
        self.max_rescues = max_rescues
        undeclared = undeclared_rate_limits(app.workflow_versions, app.rate_limits)
        if undeclared:
            raise ConfigurationError(
                "rate limits used by steps but not declared on the app (app.rate_limit): "
                + ", ".join(undeclared)
            )
        #: some claimed tasks may have fleet-wide limits to pass (see pypgflow.limits)
        self._limited = bool(app.queue_limits) or any(
            flow.concurrency is not None
            or any(s.concurrency is not None or s.rate_limit is not None for s in flow)
            for flow in app.workflow_versions.values()
        )
        #: whether the last claim left a queue alone because this worker fills its gate
        self._gate_blocked = False
        self.workflow_names = sorted(app.workflows)
        self.versions = sorted(f"{name}@{version}" for name, version in app.workflow_versions)
        self._held: dict[int, _Held] = {}
        self._abandoned: set[int] = set()
        #: slots, and tasks claimed ahead of them (see pypgflow.slots)
        self.slots = Slots(self.queues)
        self._stopping = False
        self._stopped_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._unknown_logged: set[str] = set()
        #: the last claim filled every free slot (a freed slot claims again at once)
        self._backlog = False
        #: a claim failed on a connection error: it may have committed, its answer lost
        self._unanswered = False
        self._interrupted: set[int] = set()
        self._db = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pypgflow-db")
        self.log = context_logger("pypgflow.worker", instance_id=self.instance_id)
        #: calls the steps of claimed tasks (see pypgflow.execution)
        self.runner = StepRunner(
            app.workflows,
            versions=app.workflow_versions,
            slots=sum(self.queues.values()),
            instance_id=self.instance_id,
            log=self.log,
        )
        #: heartbeats, lost contact and the rescue of lost instances (see pypgflow.registry)
        self.registration = Registration(
            self.engine,
            self.instance_id,
            self.queues,
            versions=self.versions,
            heartbeat_interval=heartbeat_interval,
            stale_after=self.stale_after,
            max_rescues=max_rescues,
            load=lambda: len(self._held),
            owned=lambda: (
                set(self._held)
                | self.slots.waiting_ids()
                | self.gates.admitting_ids
                | self.outcomes.pending_task_ids
            ),
            on_cut_off=self._abandon,
            on_contact_restored=self._abandoned.clear,
            on_work=self._on_work,
            log=self.log,
            events=self.events,
        )
        #: outcomes, written in batches (see pypgflow.outcomes)
        self.outcomes = OutcomeWriter(
            self.engine,
            call=self._db_call,
            on_recorded=self._on_recorded,
            replacement=self.runner.unrecordable,
            log=self.log,
            limit=max(outcomes.UNRECORDED_LIMIT, 2 * sum(self.queues.values())),
            on_room=self._wake_up,
        )
        #: pending runs whose step runs a while are marked running (see pypgflow.outcomes)
        self.start_notes = StartNotes(self.outcomes, running=self._held.__contains__)
        #: fleet-wide limits: the tasks claimed that wait for their gates, and their admission
        self.gates = Gatekeeper(
            self.slots,
            queue_limits=app.queue_limits,
            rate_limits=app.rate_limits,
            workflow_of=self.runner.workflow_of,
            failed=self.runner.failed,
            running=lambda: (held.task for held in self._held.values()),
            admit=lambda requests: self._db_call(
                self.engine.admit, requests, finished=self.outcomes.pending_task_ids
            ),
            start=self._start_or_keep,
            fail=self.outcomes.add,
            on_room=self._wake_up,
            on_lost=self._admission_lost,
            log=self.log,
        )
        #: leadership, and the leader's cron ticks and retention (see pypgflow.leader)
        self.leader = Leader(
            app, instance_id=self.instance_id, lease_ttl=lease_ttl, retention=retention
        )

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for: no more claims."""
        return self._stopping

    @property
    def is_leader(self) -> bool:
        """True while this worker's instance holds the leader lease (see pypgflow.leader)."""
        return self.leader.is_leader

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped; SIGTERM and SIGINT stop it gracefully."""
        asyncio.run(self.run_async())

    def stop(self) -> None:
        """Ask the worker to stop: no more claims; running steps get ``shutdown_timeout``."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._request_stop)
        else:
            self._stopping = True

    def _request_stop(self) -> None:
        if not self._stopping:
            self.log.info("worker %s stopping", self.instance_id)
        self._stopping = True
        if self._stopped_event is not None:
            self._stopped_event.set()
        if self._wake is not None:
            self._wake.set()
        self.gates.wake()

    async def _db_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the worker's database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, functools.partial(fn, *args, **kwargs))

    async def run_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopped_event = asyncio.Event()
        if self._stopping:
            self._stopped_event.set()
        handlers = self._install_signals()
        await self._db_call(self.engine.check_schema)
        await self._db_call(self.app.store_definitions)  # blueprints, for processes without code
        await self.registration.join()
        self.log.info(
            "worker %s started: queues %s, workflows %s",
            self.instance_id,
            ", ".join(f"{q}={n}" for q, n in self.queues.items()),
            ", ".join(self.workflow_names),
        )
        stop_listening = self.engine.listen(self._on_notification)
        registration = self.registration
        background = [
            asyncio.create_task(self.outcomes.run(), name="pypgflow-outcomes"),
            asyncio.create_task(self.start_notes.run(), name="pypgflow-start-notes"),
            asyncio.create_task(registration.heartbeat_loop(), name="pypgflow-heartbeat"),
            asyncio.create_task(self._cancel_check_loop(), name="pypgflow-cancel-check"),
            asyncio.create_task(registration.contact_watch_loop(), name="pypgflow-contact-watch"),
            asyncio.create_task(registration.rescue_loop(self._db_call), name="pypgflow-rescue"),
            asyncio.create_task(self.leader.run(self._stopped_event), name="pypgflow-leader"),
        ]
        admission = None
        if self._limited:
            admission = asyncio.create_task(
                self.gates.run(lambda: self._stopping), name="pypgflow-admission"
            )
            background.append(admission)
        try:
            await self._claim_loop()
            if admission is not None:  # an admission on its way ends first: what it admits
                await asyncio.wait([admission], timeout=self.shutdown_timeout)  # is held
            await self._drain()
        finally:
            if stop_listening is not None:
                await self._loop.run_in_executor(None, stop_listening)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.outcomes.flush_remaining(timeout=max(self.shutdown_timeout, 5.0))
            await registration.leave()
            for sig in handlers:
                self._loop.remove_signal_handler(sig)
            pool = self.runner.pool
            pool.shutdown(wait=False, cancel_futures=True)
            # Sync steps cancelled above see ctx.cancelled: give them a moment to return.
            if not await self._loop.run_in_executor(None, pool.join, _SYNC_STEP_GRACE):
                self.log.warning(
                    "sync steps still running %g s after the stop: exiting without them",
                    _SYNC_STEP_GRACE,
                )
            self._db.shutdown(wait=False)
            self.log.info("worker %s stopped", self.instance_id)

    def _install_signals(self) -> list[signal.Signals]:
        installed: list[signal.Signals] = []
        if (
            not self.install_signal_handlers
            or threading.current_thread() is not threading.main_thread()
        ):
            return installed
        assert self._loop is not None  # noqa: S101  a type narrowing: run() sets it first
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix loops
                pass
        return installed

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            self.log.warning("second %s: cancelling running steps now", sig.name)
            for held in self._held.values():
                held.ctx.cancel()
                if held.future is not None:
                    held.future.cancel()
            return
        self.log.info(
            "received %s: finishing running steps (up to %g s)", sig.name, self.shutdown_timeout
        )
        self._request_stop()

    # -- claiming ---------------------------------------------------------------------------

    def _on_notification(self, queue: str) -> None:
        """Called from the LISTEN thread."""
        if self._loop is not None and (not queue or queue in self.queues):
            self._loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        assert self._wake is not None  # noqa: S101  a type narrowing: run() makes it first
        self._wake.set()

    async def _claim_loop(self) -> None:
        assert self._wake is not None  # noqa: S101  a type narrowing: run() makes it first
        failures = 0
        idle_checks = 0
        while not self._stopping:
            self._wake.clear()
            if self.registration.cut_off:  # what it claims may be rescued elsewhere meanwhile
                await self._sleep_or_wake(self.poll_interval)
                continue
            if not self._may_claim():
                await self._sleep_or_wake(self.poll_interval)
                continue
            try:
                if self._unanswered:  # the last claim may have committed: hand back its tasks
                    await self.registration.release_unanswered_claim(self._db_call)
                    self._unanswered = False
                claimed_full = await self._claim_once()
                # a queue whose gate this worker fills waits for its steps to end, not for
                # their outcomes: each end claims again (see _execute)
                self._backlog = claimed_full or self._gate_blocked
                failures = 0
            except DatabaseError as exc:
                # a lost connection may have lost a committed claim's answer
                self._unanswered = self._unanswered or isinstance(exc, DatabaseUnavailable)
                failures += 1
                pause = min(0.2 * 2**failures, 5.0)
                if failures == 1 or failures % 10 == 0:
                    self.log.warning("cannot claim work (%s); retrying in %.1f s", exc, pause)
                await self._sleep_or_wake(pause)
                continue
            if claimed_full and self._may_claim():
                continue  # a backlog: claim again at once
            wait = self.poll_interval
            if not claimed_full and not self._gate_blocked:
                # (a gate full of this worker's own steps: its admissions wake it, see
                # Gatekeeper)
                idle_checks += 1
                wait = await self._idle_wait(check_unknown=idle_checks % 30 == 1)
            await self._sleep_or_wake(wait)

    def _may_claim(self) -> bool:
        """Whether to claim now: not while every slot is busy and as many tasks are claimed
        ahead, nor while the outcomes not yet recorded fill their limit (see pypgflow.outcomes);
        a freed slot or a batch taken wakes the claim loop."""
        return self.slots.has_room() and not self.outcomes.full

    async def _sleep_or_wake(self, seconds: float) -> None:
        assert self._wake is not None  # noqa: S101  a type narrowing: run() makes it first
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _claim_once(self) -> bool:
        """Claim for every queue with room; True if some queue filled all its room."""
        full = False
        self._gate_blocked = False
        for queue in self.queues:
            full = await self._claim_queue(queue) or full
        return full

    async def _claim_queue(self, queue: str) -> bool:
        """Claim for ``queue``; True if the claim filled all the room it had."""
        want = self.gates.claim_size(queue) if self._limited else self.slots.room(queue)
        if want <= 0 or self._stopping:
            self._gate_blocked = self._gate_blocked or (want <= 0 < self.slots.room(queue))
            return False
        began = time.monotonic()
        tasks: list[ClaimedTask] = await self._db_call(
            self.engine.claim_tasks,
            queue,
            want,
            instance_id=self.instance_id,
            workflows=self.workflow_names,
            versions=self.versions,
        )
        if tasks and self.events.active:
            observing.claimed(self.events, queue, want, len(tasks), began, self.instance_id)
        for task in self.gates.gated(queue, tasks) if self._limited else tasks:
            self._start_or_keep(task, queue)
        return len(tasks) == want

    def _admission_lost(self) -> None:
        """An admission failed: the tasks it took are claimed and held by nobody; the claim
        loop hands them back before its next claim."""
        self._unanswered = True
        self._wake_up()

    def _start_or_keep(self, task: ClaimedTask, queue: str) -> None:
        if self.slots.free(queue) and not self.stopping:
            self._start(task, queue)
        else:  # a task claimed ahead (or stopped meanwhile: handed back with the rest)
            self.slots.wait(queue, task)

    async def _idle_wait(self, *, check_unknown: bool) -> float:
        """How long to sleep when there was nothing (more) to claim."""
        queues = list(self.queues)
        wait = self.poll_interval
        try:
            due = await self._db_call(
                self.engine.next_due_in, queues, self.workflow_names, self.versions
            )
            if due is not None:
                wait = max(0.0, min(wait, due))
            if check_unknown:
                await self._log_unknown_workflows()
        except DatabaseError:
            pass
        return wait

    async def _log_unknown_workflows(self) -> None:
        names = await self._db_call(
            self.engine.unknown_workflows_waiting, list(self.queues), self.workflow_names
        )
        for name in names:
            if name not in self._unknown_logged:
                self._unknown_logged.add(name)
                self.log.warning(
                    "runs of workflow %r wait in queues %s, but this worker does not have it "
                    "registered: leaving them for a worker that does",
                    name,
                    ", ".join(self.queues),
                )

    # -- executing --------------------------------------------------------------------------

    def _start(self, task: ClaimedTask, queue: str) -> None:
        ctx = StepContext(
            run_id=task.run_id,
            workflow=task.workflow,
            step=task.step,
            attempt=task.attempt,
            task_index=task.task_index,
            instance_id=self.instance_id,
        )
        held = _Held(task, queue, ctx)
        self._held[task.id] = held
        self.slots.started(queue)
        held.future = asyncio.ensure_future(self._execute(held))
        self.start_notes.started(task)

    async def _execute(self, held: _Held) -> None:
        task = held.task
        started = time.monotonic()
        events = self.events if self.events.active else None
        if events is not None:  # in this task: a tracer's span is current for the step
            observing.step_started(events, task, held.queue, self.instance_id)
        try:
            if task.gates and token_stale(task, time.monotonic()):
                # claimed ahead: its rate token is too old for the call it would start now; a
                # fresh one is taken (the concurrency slots it holds, it keeps)
                tokens = tuple(g for g in task.gates if g.kind == "rate")
                request = replace(request_of(task), gates=tokens)
                admission = await self._db_call(self.engine.admit, [request])
                outcome = None
                if task.id in admission.admitted:
                    task = held.task = task.gated(admitted_at=time.monotonic())
                    outcome = await self.runner.run(task, held.ctx)
            else:
                outcome = await self.runner.run(task, held.ctx)
        except asyncio.CancelledError:
            outcome = None  # cancelled run, shutdown, or abandoned: nothing to record
            if self._stopping and task.id not in self._abandoned:
                self._interrupted.add(task.id)  # to hand back, its attempt not counted
        finally:
            queue = held.queue
            self._held.pop(task.id, None)
            following = self.slots.finished(queue, ran := time.monotonic() - started)
            if following is not None:
                if self._stopping or self.registration.cut_off:
                    self.slots.wait(queue, following)  # stays with the ones handed back
                else:
                    self._start(following, queue)
            if self._backlog and self.slots.room(queue) >= max(1, self.queues[queue] // 2):
                # The last claim filled its room: more work is likely waiting. Claim it now,
                # while this outcome is being recorded, rather than after; in batches of half
                # the slots at least, which leaves other workers their turn at the queue.
                self._wake_up()
            self.gates.step_ended(task, queue)
        if events is not None:
            observing.step_ended(events, task, held.queue, self.instance_id, outcome, ran)
        if outcome is not None:
            self.outcomes.add(outcome)

    def _on_recorded(self, result: FinishResult) -> None:
        """A batch of outcomes was recorded: claim again if it made work here or freed slots."""
        if result.queues_with_new_work & self.queues.keys() or self.slots.has_room():
            self._wake_up()
        if self.events.active:
            observing.runs_finished(self.events, result.finished_runs(), self.instance_id)

    def _on_work(self, queues: Collection[str]) -> None:
        """Work came back to these queues (a rescue, a hand-back): claim it if it is ours."""
        if any(queue in self.queues for queue in queues):
            self._wake_up()

    def _abandon(self, silent: float) -> int:
        """Cut off from the database (see pypgflow.registry): stop every held step, since other
        instances may rescue it, and record nothing of it. Returns how many were abandoned."""
        held = list(self._held.values())
        self.log.error(
            "no heartbeat has reached the database for %.1f s, more than stale_after=%g s: "
            "abandoning the %d steps this worker runs (other instances may rescue them), and "
            "claiming nothing until the database is back",
            silent, self.stale_after, len(held),
        )  # fmt: skip
        # claimed ahead, not started: given up with the rest
        self._abandoned.update(self.slots.clear_waiting())
        for held_task in held:
            task = held_task.task
            self.log.warning(
                "abandoning step %s of run %s (attempt %d)", task.step, task.run_id, task.attempt,
                extra={"run_id": task.run_id, "step": task.step, "attempt": task.attempt},
            )  # fmt: skip
            self._abandoned.add(task.id)
            held_task.ctx.cancel()  # a sync step's thread runs on: it should check ctx.cancelled
            if held_task.future is not None:
                held_task.future.cancel()  # its outcome, if any, is dropped
        return len(held)

    # -- stopping ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        """After a stop request: let running steps finish, then hand the rest back."""
        futures = [h.future for h in self._held.values() if h.future is not None]
        if futures:
            self.log.info(
                "waiting up to %g s for %d running steps", self.shutdown_timeout, len(futures)
            )
            await asyncio.wait(futures, timeout=self.shutdown_timeout)
        leftover = list(self._held.values())
        for held in leftover:
            held.ctx.cancel()
            if held.future is not None:
                held.future.cancel()
        if leftover:
            await asyncio.wait([h.future for h in leftover if h.future is not None], timeout=1.0)
        not_started = self.slots.clear_waiting()
        ids = sorted(self._interrupted | {h.task.id for h in leftover} | not_started)
        if ids:
            try:
                released = await self._db_call(
                    self.engine.release_tasks, ids, instance_id=self.instance_id
                )
                self.log.warning("handed %d unfinished steps back to their queues", released)
            except DatabaseError as exc:
                self.log.error("could not hand back %d steps: %s", len(ids), exc)
        if self._unanswered:  # what a claim took whose answer was lost
            with contextlib.suppress(DatabaseError):
                await self.registration.release_unanswered_claim(self._db_call)

    # -- cancellation -----------------------------------------------------------------------

    async def _cancel_check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cancel_check_interval)
            ids = list(self._held)
            waiting = self.slots.waiting_ids()
            if not ids and not waiting:
                continue
            try:
                alive = await self._db_call(self.engine.still_running, ids + sorted(waiting))
            except DatabaseError:
                continue
            # cancelled before they started; what was claimed during the query is not judged
            self.slots.drop_waiting(waiting - alive)
            for task_id in ids:
                held = self._held.get(task_id)
                if task_id not in alive and held is not None:
                    self.log.info(
                        "step %s of run %s was cancelled", held.task.step, held.task.run_id,
                        extra={"run_id": held.task.run_id, "step": held.task.step},
                    )  # fmt: skip
                    held.ctx.cancel()
                    if held.future is not None and self.runner.is_async(held.task):
                        held.future.cancel()
