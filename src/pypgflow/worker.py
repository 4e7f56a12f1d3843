"""The worker: claims tasks from its queues, runs their steps, and records the outcomes.

One asyncio loop per worker process. Claims are sized to the free execution slots of each queue;
outcomes are buffered and written in batches (one transaction for everything that finished
while the previous batch was being written), so the database sees a few statements per batch
rather than per step. Sync steps run in a bounded thread pool, async steps on the loop.

The worker never touches SQL: it speaks to the engine's domain verbs, through worker threads so
the loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pypgflow import orchestration
from pypgflow.context import StepContext, context_logger
from pypgflow.engines.base import ClaimedTask, Completed, Failed, Outcome
from pypgflow.errors import AttemptError, DatabaseError, DatabaseUnavailable, InvalidArgument
from pypgflow.invocation import StepThreadPool, ThreadHandoff, call_step
from pypgflow.scheduler import DEFAULT_LEASE_TTL, DEFAULT_RETENTION, Retention, Scheduler
from pypgflow.serialization import dumps
from pypgflow.workflow import resolve_options

if TYPE_CHECKING:
    from pypgflow.app import App

logger = logging.getLogger("pypgflow.worker")

_MISSING: Any = object()
#: how long a stopping worker waits for cancelled sync steps' threads to return
_SYNC_STEP_GRACE = 5.0

#: extra step threads, for sync steps that timed out but whose functions are still running
_TIMED_OUT_THREADS_ALLOWANCE = 32


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
    has lost more than ``max_rescues`` workers fails as a poison pill. A worker that cannot reach
    the database for longer than ``stale_after`` abandons its running steps (they may have been
    rescued elsewhere) until it is back. See ARCHITECTURE.md, "Many instances".

    Every worker also competes for the leader lease (``lease_ttl`` seconds, renewed every third
    of it); the leader starts the app's cron schedules and prunes old runs per ``retention``
    (``None``: keep them). See :mod:`pypgflow.scheduler`.
    """

    def __init__(
        self,
        app: App,
        queues: dict[str, int] | Sequence[str] | None = None,
        *,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        cancel_check_interval: float = 1.0,
        shutdown_timeout: float = 30.0,
        install_signal_handlers: bool = True,
        stale_after: float | None = None,
        max_rescues: int = 3,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        retention: Retention | None = DEFAULT_RETENTION,
    ) -> None:
        if queues is None:
            queues = {"default": 10}
        elif not isinstance(queues, dict):
            queues = {name: 10 for name in queues}
        for name, slots in queues.items():
            if not isinstance(name, str) or not name:
                raise InvalidArgument(f"queue names must be non-empty strings, got {name!r}")
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                raise InvalidArgument(
                    f"queue {name!r}: slots must be an integer >= 1, got {slots!r}"
                )
        if not app.workflows:
            raise InvalidArgument(
                "this app has no registered workflows: a worker only runs registered workflows "
                "(app.register(flow) or App(url, workflows=[...]))"
            )
        self.app = app
        self.engine = app.engine
        self.instance_id = app.instance_id
        self.queues = dict(queues)
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.cancel_check_interval = cancel_check_interval
        self.shutdown_timeout = shutdown_timeout
        self.install_signal_handlers = install_signal_handlers
        self.stale_after = app.stale_after if stale_after is None else stale_after
        self.max_rescues = max_rescues
        _check_rescue_options(self.heartbeat_interval, self.stale_after, self.max_rescues)
        #: when the last heartbeat that reached the database was sent (time.monotonic())
        self._last_contact = time.monotonic()
        #: no heartbeat for more than stale_after: held steps abandoned, nothing claimed
        self._cut_off = False
        self._abandoned: set[int] = set()
        self._heartbeat_failures = 0
        self.workflow_names = sorted(app.workflows)
        self._held: dict[int, _Held] = {}
        self._running = dict.fromkeys(self.queues, 0)
        self._outcomes: list[Outcome] = []
        self._stopping = False
        self._stopped_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._flush_needed: asyncio.Event | None = None
        self._slot_freed: asyncio.Event | None = None
        self._unknown_logged: set[str] = set()
        self._interrupted: set[int] = set()
        # Threads are made only when none is idle, so there are as many as steps running, plus
        # those still stuck in sync steps that timed out (a thread cannot be stopped): the
        # allowance keeps a step claimed after such a timeout from waiting for a free thread
        # while its own timeout runs out.
        # Daemon threads: a sync step stuck past its timeout must not keep the process alive.
        self._pool = StepThreadPool(
            sum(self.queues.values()) + _TIMED_OUT_THREADS_ALLOWANCE,
            thread_name_prefix="pypgflow-step",
        )
        self._handoff: ThreadHandoff | None = None
        self._db = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pypgflow-db")
        # Heartbeats have a thread of their own: never queued behind claims and outcomes.
        self._beat = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pypgflow-heartbeat")
        self.log = context_logger("pypgflow.worker", instance_id=self.instance_id)
        #: leadership, and the leader's cron ticks and retention (see pypgflow.scheduler)
        self.scheduler = Scheduler(
            app, instance_id=self.instance_id, lease_ttl=lease_ttl, retention=retention
        )

    @property
    def is_leader(self) -> bool:
        """True while this worker's instance holds the leader lease (see pypgflow.scheduler)."""
        return self.scheduler.is_leader

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

    async def _db_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._db, lambda: fn(*args, **kwargs))

    async def run_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._flush_needed = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopped_event = asyncio.Event()
        if self._stopping:
            self._stopped_event.set()
        handlers = self._install_signals()
        await self._db_call(self.engine.check_schema)
        self._last_contact = time.monotonic()
        await self._db_call(
            self.engine.register_instance,
            self.instance_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
        )
        await self._hand_back_earlier_life()
        self.log.info(
            "worker %s started: queues %s, workflows %s",
            self.instance_id,
            ", ".join(f"{q}={n}" for q, n in self.queues.items()),
            ", ".join(self.workflow_names),
        )
        stop_listening = self.engine.listen(self._on_notification)
        background = [
            asyncio.create_task(self._flush_loop(), name="pypgflow-flush"),
            asyncio.create_task(self._heartbeat_loop(), name="pypgflow-heartbeat"),
            asyncio.create_task(self._cancel_check_loop(), name="pypgflow-cancel-check"),
            asyncio.create_task(self._contact_watch_loop(), name="pypgflow-contact-watch"),
            asyncio.create_task(self._rescue_loop(), name="pypgflow-rescue"),
            asyncio.create_task(self.scheduler.run(self._stopped_event), name="pypgflow-scheduler"),
        ]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            if stop_listening is not None:
                await self._loop.run_in_executor(None, stop_listening)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._flush_remaining()
            try:
                await self._db_call(self.engine.deregister_instance, self.instance_id)
            except DatabaseError as exc:
                self.log.warning("could not deregister instance %s: %s", self.instance_id, exc)
            self._remove_signals(handlers)
            self._pool.shutdown(wait=False, cancel_futures=True)
            # Sync steps cancelled above see ctx.cancelled: give them a moment to return.
            if not await self._loop.run_in_executor(None, self._pool.join, _SYNC_STEP_GRACE):
                self.log.warning(
                    "sync steps still running %g s after the stop: exiting without them",
                    _SYNC_STEP_GRACE,
                )
            self._db.shutdown(wait=False)
            self._beat.shutdown(wait=False)
            self.log.info("worker %s stopped", self.instance_id)

    def _install_signals(self) -> list[signal.Signals]:
        installed: list[signal.Signals] = []
        if (
            not self.install_signal_handlers
            or threading.current_thread() is not threading.main_thread()
        ):
            return installed
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix loops
                pass
        return installed

    def _remove_signals(self, installed: list[signal.Signals]) -> None:
        assert self._loop is not None
        for sig in installed:
            self._loop.remove_signal_handler(sig)

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
        assert self._wake is not None
        self._wake.set()

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        failures = 0
        idle_checks = 0
        while not self._stopping:
            self._wake.clear()
            if self._cut_off:  # what it would claim may be rescued elsewhere meanwhile
                await self._sleep_or_wake(self.poll_interval)
                continue
            try:
                claimed_full = await self._claim_once()
                failures = 0
            except DatabaseError as exc:
                failures += 1
                pause = min(0.2 * 2**failures, 5.0)
                if failures == 1 or failures % 10 == 0:
                    self.log.warning("cannot claim work (%s); retrying in %.1f s", exc, pause)
                await self._sleep_or_wake(pause)
                continue
            if claimed_full and self._has_free_slots():
                continue  # a backlog: claim again at once
            wait = self.poll_interval
            if not claimed_full:
                idle_checks += 1
                wait = await self._idle_wait(check_unknown=idle_checks % 30 == 1)
            await self._sleep_or_wake(wait)

    async def _sleep_or_wake(self, seconds: float) -> None:
        assert self._wake is not None
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _has_free_slots(self) -> bool:
        return any(self._running[q] < n for q, n in self.queues.items())

    async def _claim_once(self) -> bool:
        """Claim for every queue with free slots; True if some queue filled all its free slots."""
        full = False
        for queue, slots in self.queues.items():
            free = slots - self._running[queue]
            if free <= 0 or self._stopping:
                continue
            tasks: list[ClaimedTask] = await self._db_call(
                self.engine.claim_tasks,
                queue,
                free,
                instance_id=self.instance_id,
                workflows=self.workflow_names,
            )
            if len(tasks) == free:
                full = True
            for task in tasks:
                self._start(task, queue)
        return full

    async def _idle_wait(self, *, check_unknown: bool) -> float:
        """How long to sleep when there was nothing (more) to claim."""
        queues = list(self.queues)
        wait = self.poll_interval
        try:
            due = await self._db_call(self.engine.next_due_in, queues, self.workflow_names)
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
        self._running[queue] += 1
        held.future = asyncio.ensure_future(self._execute(held))

    async def _execute(self, held: _Held) -> None:
        task = held.task
        try:
            outcome = await self._outcome(held)
        except asyncio.CancelledError:
            outcome = None  # cancelled run, shutdown, or abandoned: nothing to record
            if self._stopping and task.id not in self._abandoned:
                self._interrupted.add(task.id)  # to hand back, its attempt not counted
        finally:
            self._held.pop(task.id, None)
            self._running[held.queue] -= 1
        if outcome is not None:
            assert self._flush_needed is not None
            self._outcomes.append(outcome)
            self._flush_needed.set()

    async def _outcome(self, held: _Held) -> Outcome:
        task = held.task
        workflow = self.app.workflows[task.workflow]
        step = workflow.steps.get(task.step)
        if step is None:
            error = LookupError(
                f"workflow {task.workflow!r} has no step {task.step!r} in this worker's definition"
            )
            return self._failed(task, error, retry_in=None)
        options = resolve_options(workflow, step)
        try:
            args, kwargs = step.bind(
                input=task.run_input,
                outputs=task.dependency_outputs,
                ctx=held.ctx,
                item=task.input if step.is_map else _MISSING,
            )
            debug = self.log.isEnabledFor(logging.DEBUG)
            if debug:
                started = time.monotonic()
                self.log.debug(
                    "step %s of run %s started (attempt %d)", _where(task), task.run_id,
                    task.attempt, extra=_extra(task),
                )  # fmt: skip
            if self._handoff is None:
                self._handoff = ThreadHandoff()  # on the worker's loop: one wake-up per burst
            result = await call_step(
                step,
                args,
                kwargs,
                timeout=options.timeout,
                pool=self._pool,
                handoff=self._handoff,
            )
            output = dumps(result, what=f"the output of step {_where(task)!r}")
            if debug:
                self.log.debug(
                    "step %s of run %s completed in %.3f s", _where(task), task.run_id,
                    time.monotonic() - started, extra=_extra(task),
                )  # fmt: skip
            return Completed(task, output)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = orchestration.retry_delay(task.attempt, task.max_attempts, options.backoff)
            return self._failed(task, exc, retry_in=delay)

    def _failed(self, task: ClaimedTask, exc: BaseException, *, retry_in: float | None) -> Failed:
        error = AttemptError.from_exception(
            exc,
            step=task.step,
            attempt=task.attempt,
            task_index=task.task_index,
            instance_id=self.instance_id,
        )
        where = error.where
        if retry_in is None:
            self.log.error(
                "step %s of run %s failed for good (attempt %d of %d): %s: %s",
                where, task.run_id, task.attempt, task.max_attempts, error.type, error.message,
                extra={"run_id": task.run_id, "step": task.step, "attempt": task.attempt},
            )  # fmt: skip
        else:
            self.log.warning(
                "step %s of run %s failed (attempt %d of %d), retrying in %.3g s: %s: %s",
                where, task.run_id, task.attempt, task.max_attempts, retry_in, error.type,
                error.message,
                extra={"run_id": task.run_id, "step": task.step, "attempt": task.attempt},
            )  # fmt: skip
        return Failed(task, error.to_dict(), retry_in)

    # -- recording outcomes ---------------------------------------------------------------

    async def _flush_loop(self) -> None:
        assert self._flush_needed is not None
        while True:
            await self._flush_needed.wait()
            self._flush_needed.clear()
            await self._flush()

    async def _flush(self) -> None:
        """Write every buffered outcome in one transaction; on a database outage keep them and
        retry (outcomes are idempotent: a stale one changes nothing)."""
        failures = 0
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                result = await self._db_call(self.engine.finish_tasks, batch)
            except DatabaseUnavailable as exc:
                self._outcomes[:0] = batch
                failures += 1
                pause = min(0.2 * 2**failures, 5.0)
                if failures == 1 or failures % 10 == 0:
                    self.log.warning(
                        "cannot record %d step outcomes (%s); retrying in %.1f s",
                        len(self._outcomes), exc, pause,
                    )  # fmt: skip
                await asyncio.sleep(pause)
                continue
            except Exception:
                # Not an outage: something in the batch cannot be stored. Retrying the batch as
                # it is would fail forever, dropping it would leave its tasks running forever:
                # record its outcomes one by one, so that a bad one cannot hold the others back.
                for outcome in batch:
                    await self._finish_alone(outcome)
                continue
            if result.queues_with_new_work & self.queues.keys() or self._has_free_slots():
                self._wake_up()

    async def _finish_alone(self, outcome: Outcome) -> None:
        """Record one outcome on its own; a completion that cannot be stored becomes a failed
        attempt (retried like any failure), so that its run does not hang."""
        refused: Exception | None = None
        for _ in range(2):
            try:
                result = await self._db_call(self.engine.finish_tasks, [outcome])
            except DatabaseUnavailable:
                self._outcomes.append(outcome)  # the flush loop retries it after a pause
                return
            except Exception as exc:
                refused = exc
                replacement = self._unrecordable(outcome, exc)
                if replacement is None:
                    break
                outcome = replacement
                continue
            if result.queues_with_new_work & self.queues.keys() or self._has_free_slots():
                self._wake_up()
            return
        self.log.error(
            "cannot record the outcome of step %s of run %s; dropping it",
            outcome.task.step, outcome.task.run_id,
            exc_info=refused,
            extra={"run_id": outcome.task.run_id, "step": outcome.task.step},
        )  # fmt: skip

    def _unrecordable(self, outcome: Outcome, exc: Exception) -> Failed | None:
        """The failed attempt that replaces a completion the engine refused to store."""
        if not isinstance(outcome, Completed):
            return None
        task = outcome.task
        where = task.step if task.task_index is None else f"{task.step}[{task.task_index}]"
        error = DatabaseError(f"the output of step {where!r} could not be stored: {exc}")
        error.__cause__ = exc
        workflow = self.app.workflows.get(task.workflow)
        step = workflow.steps.get(task.step) if workflow is not None else None
        retry_in = None
        if workflow is not None and step is not None:
            backoff = resolve_options(workflow, step).backoff
            retry_in = orchestration.retry_delay(task.attempt, task.max_attempts, backoff)
        return self._failed(task, error, retry_in=retry_in)

    async def _flush_remaining(self) -> None:
        try:
            await asyncio.wait_for(self._flush(), timeout=max(self.shutdown_timeout, 5.0))
        except TimeoutError:
            self.log.error("gave up recording %d step outcomes at shutdown", len(self._outcomes))

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
        ids = sorted(self._interrupted | {h.task.id for h in leftover})
        if not ids:
            return
        try:
            released = await self._db_call(
                self.engine.release_tasks, ids, instance_id=self.instance_id
            )
            self.log.warning("handed %d unfinished steps back to their queues", released)
        except DatabaseError as exc:
            self.log.error("could not hand back %d steps: %s", len(ids), exc)

    # -- heartbeats and cancellation ------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._heartbeat()

    async def _cancel_check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cancel_check_interval)
            ids = list(self._held)
            if not ids:
                continue
            try:
                alive = await self._db_call(self.engine.still_running, ids)
            except DatabaseError:
                continue
            for task_id in ids:
                held = self._held.get(task_id)
                if task_id not in alive and held is not None:
                    self.log.info(
                        "step %s of run %s was cancelled", held.task.step, held.task.run_id,
                        extra={"run_id": held.task.run_id, "step": held.task.step},
                    )  # fmt: skip
                    held.ctx.cancel()
                    if (
                        held.future is not None
                        and self.app.workflows[held.task.workflow].steps[held.task.step].is_async
                    ):
                        held.future.cancel()

    # -- many instances: heartbeats, lost contact, rescue ---------------------------------------

    async def _beat_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A database call on the heartbeat's own thread."""
        assert self._loop is not None
        return await self._loop.run_in_executor(self._beat, lambda: fn(*args, **kwargs))

    async def _heartbeat(self) -> None:
        """Tell the database this instance is alive (registering it again if its row is gone);
        after a time cut off, hand back what it abandoned and register again first."""
        sent = time.monotonic()
        try:
            if self._cut_off:
                await self._recover()
            elif await self._beat_call(
                self.engine.heartbeat_or_register,
                self.instance_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                queues=self.queues,
                load=len(self._held),
            ):
                self.log.warning(
                    "instance %s was no longer registered (its row was removed): registered it "
                    "again",
                    self.instance_id,
                )
        except DatabaseError as exc:
            self._heartbeat_failures += 1
            if self._heartbeat_failures == 1 or self._heartbeat_failures % 10 == 0:
                self.log.warning(
                    "heartbeat failed (%.1f s since the last one that reached the database; "
                    "steps are abandoned after %g s): %s",
                    time.monotonic() - self._last_contact, self.stale_after, exc,
                )  # fmt: skip
            return
        self._heartbeat_failures = 0
        self._last_contact = sent

    async def _contact_watch_loop(self) -> None:
        """Abandon the held steps once no heartbeat has reached the database for longer than
        ``stale_after``: by then other instances may rescue them. Timed on the loop, so that a
        database call that hangs cannot delay it."""
        while True:
            silent = time.monotonic() - self._last_contact
            if silent <= self.stale_after:
                await asyncio.sleep(min(self.stale_after - silent, self.heartbeat_interval) + 0.01)
                continue
            if not self._cut_off:
                self._abandon(silent)
            await asyncio.sleep(self.heartbeat_interval)

    def _abandon(self, silent: float) -> None:
        self._cut_off = True
        held = list(self._held.values())
        self.log.error(
            "no heartbeat has reached the database for %.1f s, more than stale_after=%g s: "
            "abandoning the %d steps this worker runs (other instances may rescue them), and "
            "claiming nothing until the database is back",
            silent, self.stale_after, len(held),
        )  # fmt: skip
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

    async def _recover(self) -> None:
        """The database answers again: hand back the tasks still held for this instance there
        (those not rescued meanwhile), then register again and go on."""
        silent = time.monotonic() - self._last_contact
        keep = set(self._held) | {o.task.id for o in self._outcomes}  # outcomes still to record
        result = await self._beat_call(
            self.engine.hand_back_lost_tasks,
            self.instance_id,
            keep=sorted(keep),
            max_rescues=self.max_rescues,
            reason=(
                f"it was cut off from the database for more than stale_after={self.stale_after:g}"
                " s and abandoned the step"
            ),
        )
        await self._beat_call(
            self.engine.register_instance,
            self.instance_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
        )
        abandoned = len(self._abandoned)
        self._abandoned.clear()
        self._cut_off = False
        self.log.warning(
            "the database is reachable again after %.1f s: instance %s registered again; of the "
            "%d steps it abandoned, %d were handed back to their queues (%d failed for good), "
            "the others had been rescued or finished",
            silent, self.instance_id, abandoned, result.requeued, result.failed,
        )  # fmt: skip
        self._wake_up()

    async def _hand_back_earlier_life(self) -> None:
        """At start: tasks still running for this instance id belong to an earlier process of
        it that died without handing them back (this one holds nothing yet)."""
        result = await self._db_call(
            self.engine.hand_back_lost_tasks,
            self.instance_id,
            keep=[],
            max_rescues=self.max_rescues,
            reason="an earlier process with this instance id stopped without handing it back",
        )
        if result.requeued or result.failed:
            self.log.warning(
                "handed back %d steps an earlier process of instance %s held (%d failed for good)",
                result.requeued + result.failed, self.instance_id, result.failed,
            )  # fmt: skip

    async def _rescue_loop(self) -> None:
        """At every heartbeat: make the tasks of lost instances claimable again."""
        while True:
            if not self._cut_off:
                try:
                    result = await self._db_call(
                        self.engine.rescue_tasks,
                        stale_after=self.stale_after,
                        max_rescues=self.max_rescues,
                        rescuer=self.instance_id,
                    )
                except DatabaseError as exc:
                    self.log.debug("rescue failed: %s", exc)
                else:
                    if result.requeued or result.failed:
                        self.log.warning(
                            "rescued %d steps of lost instances: %d queued again, %d failed for "
                            "good (runs %s)",
                            result.requeued + result.failed, result.requeued, result.failed,
                            ", ".join(result.runs),
                        )  # fmt: skip
                        if result.queues & self.queues.keys():
                            self._wake_up()
            await asyncio.sleep(self.heartbeat_interval)


def _check_rescue_options(heartbeat_interval: float, stale_after: float, max_rescues: int) -> None:
    for name, value in (("heartbeat_interval", heartbeat_interval), ("stale_after", stale_after)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise InvalidArgument(f"{name} must be a number of seconds > 0, got {value!r}")
    if stale_after <= heartbeat_interval:
        raise InvalidArgument(
            f"stale_after ({stale_after:g} s) must be longer than heartbeat_interval "
            f"({heartbeat_interval:g} s), or live workers would be taken for lost ones "
            "(a few heartbeats: 30 s for the default 5 s)"
        )
    if isinstance(max_rescues, bool) or not isinstance(max_rescues, int) or max_rescues < 0:
        raise InvalidArgument(f"max_rescues must be an integer >= 0, got {max_rescues!r}")


def _where(task: ClaimedTask) -> str:
    """The step, with the element index for a map step: ``resize[3]``."""
    return task.step if task.task_index is None else f"{task.step}[{task.task_index}]"


def _extra(task: ClaimedTask) -> dict[str, Any]:
    return {
        "run_id": task.run_id,
        "workflow": task.workflow,
        "step": task.step,
        "attempt": task.attempt,
        "task_index": task.task_index,
    }
