"""Deadlines: one loop timer for the timeouts of every async step on a loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from pypgflow.deadlines import DeadlinePassed, Deadlines, running_loop_deadlines


async def nap(seconds: float, value: object = None) -> object:
    await asyncio.sleep(seconds)
    return value


def test_a_call_past_its_deadline_is_cancelled_and_says_so() -> None:
    async def main() -> None:
        deadlines = Deadlines()
        began = time.monotonic()
        with pytest.raises(DeadlinePassed):
            await deadlines.call(nap, (5.0,), {}, 0.05)
        assert 0.04 < time.monotonic() - began < 1.0
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0  # the deadline's cancellation was withdrawn

    asyncio.run(main())


def test_calls_in_time_return_and_leave_nothing_behind() -> None:
    async def main() -> None:
        deadlines = Deadlines()
        results = await asyncio.gather(
            *(deadlines.call(nap, (0.001, n), {}, 30.0) for n in range(200))
        )
        assert results == list(range(200))
        assert deadlines._due == {}
        assert deadlines._cancelled == {}

    asyncio.run(main())


def test_each_call_times_out_at_its_own_deadline() -> None:
    """A call with a nearer deadline than the timer's, started later, still ends at its own;
    the others run on."""

    async def main() -> dict[str, object]:
        deadlines = Deadlines()
        ended: dict[str, object] = {}

        async def one(name: str, sleep: float, limit: float) -> None:
            began = time.monotonic()
            try:
                ended[name] = await deadlines.call(nap, (sleep, name), {}, limit)
            except DeadlinePassed:
                ended[name] = f"timed out after {time.monotonic() - began:.1f}"

        await asyncio.gather(one("long", 0.3, 5.0), one("short", 5.0, 0.1), one("middle", 5.0, 0.2))
        return ended

    assert asyncio.run(main()) == {
        "short": "timed out after 0.1",
        "middle": "timed out after 0.2",
        "long": "long",
    }


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def main() -> None:
        deadlines = Deadlines()
        call = asyncio.ensure_future(deadlines.call(nap, (5.0,), {}, 30.0))
        await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())


def test_a_cancellation_from_outside_at_the_deadline_is_not_a_timeout() -> None:
    async def main() -> None:
        deadlines = Deadlines()
        call = asyncio.ensure_future(deadlines.call(nap, (5.0,), {}, 0.05))
        await asyncio.sleep(0.049)
        while not deadlines._cancelled:  # the deadline has cancelled it, not yet delivered
            await asyncio.sleep(0)
            if call.done():
                pytest.skip("the deadline was delivered before the outside cancellation")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())


def test_a_function_that_swallows_the_cancellation_returns_and_its_task_is_not_cancelled() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(5.0)
        except asyncio.CancelledError:
            return "kept going"
        return "slept"

    async def main() -> None:
        deadlines = Deadlines()
        assert await deadlines.call(stubborn, (), {}, 0.05) == "kept going"
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
        await asyncio.sleep(0.01)  # not cancelled later either

    asyncio.run(main())


def test_a_timeout_error_of_the_function_itself_is_not_the_deadline() -> None:
    async def raises() -> None:
        raise TimeoutError("upstream timed out")

    async def main() -> None:
        deadlines = Deadlines()
        with pytest.raises(TimeoutError, match="upstream") as caught:
            await deadlines.call(raises, (), {}, 30.0)
        assert not isinstance(caught.value, DeadlinePassed)

    asyncio.run(main())


def test_each_running_loop_has_its_own_deadlines() -> None:
    async def twice() -> tuple[Deadlines, Deadlines]:
        return running_loop_deadlines(), running_loop_deadlines()

    first, again = asyncio.run(twice())
    other, _ = asyncio.run(twice())
    assert first is again
    assert other is not first
