"""Recording step outcomes: buffered, written in batches, never lost to an outage.

Everything that finished while the previous batch was being written goes in the next batch, one
transaction (:meth:`Engine.finish_tasks`), so the database sees a few statements per batch
rather than per step. With them go the notes of :class:`StartNotes`: the pending runs whose step
has been running a while, which are running now. On a database outage a batch is kept and retried with backoff: outcomes
are idempotent (a guarded update ignores a stale or duplicate one), so no state is lost or
written twice. A batch that fails for another reason is recorded outcome by outcome, so that one
bad outcome cannot hold the others back.

When steps end faster than the database records them, outcomes wait for the next batch: the
writer says it is :attr:`~OutcomeWriter.full` once ``limit`` of them wait, and the worker claims
no more until a batch takes them. Without that bound, a worker draining a backlog would pile up
thousands of outcomes (and their runs' completions) in memory, and hold their tasks all the while.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pypgflow.context import ContextLogger
from pypgflow.engines.base import (
    Began,
    ClaimedTask,
    Completed,
    Engine,
    Failed,
    FinishResult,
    Outcome,
)
from pypgflow.errors import DatabaseUnavailable

#: a step of a pending run that runs longer than this (seconds) has its run marked running at
#: once; a shorter one's outcome marks it (claims do not write runs)
MARK_RUNNING_AFTER = 0.05
#: the fewest outcomes waiting for the next batch that stop a worker's claims (a worker stops at
#: twice its slots if that is more): a batch this large amortizes its round trips and commit
UNRECORDED_LIMIT = 1000


class OutcomeWriter:
    """Buffers a worker's outcomes and writes them, batch after batch, on its database threads.

    ``call(fn, *args)`` runs a database call off the loop; ``on_recorded(result)`` is told what
    each batch changed (which queues got new work); ``replacement(outcome, exc)`` turns a
    completion the engine refused to store into a failed attempt (None: drop it). ``limit``:
    how many outcomes waiting make the writer :attr:`full`; ``on_room()`` is called when a batch
    takes them.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        call: Callable[..., Awaitable[Any]],
        on_recorded: Callable[[FinishResult], None],
        replacement: Callable[[Completed, Exception], Failed | None],
        log: ContextLogger,
        limit: int = UNRECORDED_LIMIT,
        on_room: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self._call = call
        self._on_recorded = on_recorded
        self._replacement = replacement
        self.log = log
        self._pending: list[Outcome] = []
        #: the batch being written: its tasks are still the worker's until it is recorded
        self._writing: Sequence[Outcome] = ()
        self._needed = asyncio.Event()
        self.limit = limit
        self._on_room = on_room

    def add(self, outcome: Outcome) -> None:
        """Buffer an outcome; the writer records it with the next batch."""
        self._pending.append(outcome)
        self._needed.set()

    @property
    def pending_task_ids(self) -> set[int]:
        """Tasks whose outcome is not recorded yet, buffered or being written: the worker still
        owns them (a hand-back must keep them)."""
        return {o.task.id for o in self._pending} | {o.task.id for o in self._writing}

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """Whether ``limit`` outcomes wait for the next batch: claims should wait for it."""
        return len(self._pending) >= self.limit

    async def run(self) -> None:
        """Write batches as outcomes arrive, until cancelled."""
        while True:
            await self._needed.wait()
            self._needed.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write every buffered outcome in one transaction; on a database outage keep them and
        retry (outcomes are idempotent: a stale one changes nothing)."""
        failures = 0
        while self._pending:
            batch, self._pending = self._pending, []
            self._writing = batch
            if len(batch) >= self.limit:
                self._on_room()  # claims may go on while this batch is written
            try:
                try:
                    result = await self._call(self.engine.finish_tasks, batch)
                except asyncio.CancelledError:
                    # The worker is stopping: the write may or may not commit on its thread. Keep
                    # the batch for flush_remaining, which writes it again (a recorded outcome
                    # written twice changes nothing), so that a stop never loses an outcome.
                    self._pending[:0] = batch
                    raise
                except DatabaseUnavailable as exc:
                    self._pending[:0] = batch
                    failures += 1
                    pause = min(0.2 * 2**failures, 5.0)
                    if failures == 1 or failures % 10 == 0:
                        self.log.warning(
                            "cannot record %d step outcomes (%s); retrying in %.1f s",
                            len(self._pending), exc, pause,
                        )  # fmt: skip
                    await asyncio.sleep(pause)
                    continue
                except Exception:
                    # Not an outage: something in the batch cannot be stored. Retrying the batch as
                    # it is would fail forever, dropping it would leave its tasks running forever:
                    # record its outcomes one by one, so that a bad one cannot hold the others back.
                    await self._record_one_by_one(batch)
                    continue
                self._on_recorded(result)
            finally:
                self._writing = ()

    async def flush_remaining(self, timeout: float) -> None:
        """At shutdown: write what is left, giving up after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.flush(), timeout=timeout)
        except TimeoutError:
            self.log.error("gave up recording %d step outcomes at shutdown", len(self._pending))

    async def _record_one_by_one(self, batch: Sequence[Outcome]) -> None:
        for outcome in batch:
            await self._record_alone(outcome)

    async def _record_alone(self, outcome: Outcome) -> None:
        """Record one outcome on its own; a completion that cannot be stored becomes a failed
        attempt (retried like any failure), so that its run does not hang."""
        refused: Exception | None = None
        for _ in range(2):
            try:
                result = await self._call(self.engine.finish_tasks, [outcome])
            except DatabaseUnavailable:
                self._pending.append(outcome)  # the next flush retries it after a pause
                return
            except Exception as exc:
                refused = exc
                replacement = (
                    self._replacement(outcome, exc) if isinstance(outcome, Completed) else None
                )
                if replacement is None:
                    break
                outcome = replacement
                continue
            self._on_recorded(result)
            return
        self.log.error(
            "cannot record the outcome of step %s of run %s; dropping it",
            outcome.task.step, outcome.task.run_id,
            exc_info=refused,
            extra={"run_id": outcome.task.run_id, "step": outcome.task.step},
        )  # fmt: skip


class StartNotes:
    """Marks running, through the outcome writer, the pending runs whose step has been running
    for ``after`` seconds: a claim does not write runs, and a shorter step's outcome marks its
    run itself. ``running(task_id)`` says whether the worker still runs a task."""

    def __init__(
        self,
        outcomes: OutcomeWriter,
        running: Callable[[int], bool],
        *,
        after: float = MARK_RUNNING_AFTER,
    ) -> None:
        self._outcomes = outcomes
        self._running = running
        self._after = after
        #: (when to say so, task), in the order the steps started: the first is due first
        self._due: collections.deque[tuple[float, ClaimedTask]] = collections.deque()
        self._added = asyncio.Event()

    def started(self, task: ClaimedTask) -> None:
        """A step began: say that its run is running if it still runs in ``after`` seconds."""
        if task.run_pending:
            self._due.append((time.monotonic() + self._after, task))
            if len(self._due) == 1:
                self._added.set()

    async def run(self) -> None:
        """Add a Began note for each such step still running when it is due, until cancelled."""
        due = self._due
        while True:
            if not due:
                self._added.clear()
                await self._added.wait()
                continue
            wait = due[0][0] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, task = due.popleft()
                if self._running(task.id):
                    self._outcomes.add(Began(task))
