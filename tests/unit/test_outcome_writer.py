"""The outcome writer keeps every outcome until a write of it returned: through outages, and
through the stop of the worker in the middle of a write."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from pypgflow.context import context_logger
from pypgflow.engines.base import ClaimedTask, Completed, FinishResult, Outcome
from pypgflow.errors import DatabaseUnavailable
from pypgflow.outcomes import OutcomeWriter


class Recorder:
    """Stands in for an engine's finish_tasks: records each batch, can block or fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.outages = 0

    def finish_tasks(self, outcomes: Sequence[Outcome]) -> FinishResult:
        self.entered.set()
        self.release.wait(5)
        if self.outages:
            self.outages -= 1
            raise DatabaseUnavailable("cannot reach the database (test)")
        self.batches.append([o.task.id for o in outcomes])
        return FinishResult(accepted=len(outcomes))


def completed(task_id: int) -> Completed:
    task = ClaimedTask(task_id, "r", "s", None, "w", 1, 3, None, None, {})
    return Completed(task, "1")


def writer(recorder: Recorder, recorded: list[FinishResult], **options: Any) -> OutcomeWriter:
    async def call(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return OutcomeWriter(
        recorder,  # type: ignore[arg-type]
        call=call,
        on_recorded=recorded.append,
        replacement=lambda outcome, exc: None,
        log=context_logger("pypgflow.test"),
        **options,
    )


def test_outcomes_that_finish_together_are_written_in_one_batch() -> None:
    recorder, recorded = Recorder(), []

    async def scenario() -> None:
        outcomes = writer(recorder, recorded)
        for task_id in (1, 2, 3):
            outcomes.add(completed(task_id))
        assert outcomes.pending_task_ids == {1, 2, 3}
        await outcomes.flush()
        assert len(outcomes) == 0

    asyncio.run(scenario())
    assert recorder.batches == [[1, 2, 3]]
    assert [r.accepted for r in recorded] == [3]


def test_a_batch_is_kept_through_an_outage_and_written_when_it_ends() -> None:
    recorder, recorded = Recorder(), []
    recorder.outages = 2

    async def scenario() -> None:
        outcomes = writer(recorder, recorded)
        outcomes.add(completed(7))
        await outcomes.flush()

    asyncio.run(scenario())
    assert recorder.batches == [[7]]


def test_a_stop_in_the_middle_of_a_write_loses_no_outcome() -> None:
    recorder, recorded = Recorder(), []
    recorder.release.clear()

    async def scenario() -> None:
        outcomes = writer(recorder, recorded)
        loop = asyncio.create_task(outcomes.run())
        outcomes.add(completed(9))
        assert await asyncio.to_thread(recorder.entered.wait, 5)
        loop.cancel()  # the worker stops while the batch is being written
        await asyncio.gather(loop, return_exceptions=True)
        assert outcomes.pending_task_ids == {9}  # kept: that write may not have committed
        recorder.release.set()
        await outcomes.flush_remaining(timeout=5)
        assert len(outcomes) == 0

    asyncio.run(scenario())
    # written by the interrupted call and again at shutdown: recording an outcome twice
    # changes nothing (the engine's updates are guarded by the running attempt)
    assert recorder.batches == [[9], [9]]


def test_the_tasks_of_the_batch_being_written_are_still_owned() -> None:
    # A hand-back keeps what the worker owns: a task whose outcome is on its way must stay
    # running, or its outcome would find it queued again and be dropped.
    recorder, recorded = Recorder(), []
    recorder.release.clear()

    async def scenario() -> None:
        outcomes = writer(recorder, recorded)
        outcomes.add(completed(1))
        flushing = asyncio.create_task(outcomes.flush())
        await asyncio.to_thread(recorder.entered.wait, 5)
        outcomes.add(completed(2))  # buffered behind the batch being written
        assert outcomes.pending_task_ids == {1, 2}
        recorder.release.set()
        await flushing
        assert outcomes.pending_task_ids == set()

    asyncio.run(scenario())
    assert recorder.batches == [[1], [2]]


def test_the_writer_is_full_at_its_limit_until_a_batch_takes_the_outcomes() -> None:
    recorder, recorded = Recorder(), []
    recorder.release.clear()
    rooms: list[int] = []

    async def scenario() -> None:
        outcomes = writer(recorder, recorded, limit=3, on_room=lambda: rooms.append(len(outcomes)))
        outcomes.add(completed(1))
        flushing = asyncio.create_task(outcomes.flush())
        await asyncio.to_thread(recorder.entered.wait, 5)
        assert rooms == []  # a batch below the limit: the writer was never full
        for task_id in (2, 3):
            outcomes.add(completed(task_id))
        assert not outcomes.full
        outcomes.add(completed(4))
        assert outcomes.full  # three wait behind the batch being written
        recorder.release.set()
        await flushing
        assert not outcomes.full

    asyncio.run(scenario())
    assert recorder.batches == [[1], [2, 3, 4]]
    assert rooms == [0]  # told once, as the full batch was taken (nothing waits behind it)
