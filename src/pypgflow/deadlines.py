"""The timeouts of the steps running on one event loop, kept on one loop timer (the worker's
and the in-process executor's alike: ``running_loop_deadlines``): ``async def`` steps, and the
sync steps the loop waits for in threads (invocation.ThreadHandoff).

Why not ``asyncio.timeout`` per step: it makes a timer handle for each call and pushes it on the
loop's heap, then cancels it when the step returns, which nearly every step does long before
its deadline. With steps that take microseconds that was about a tenth of a worker's time. Here a
step's deadline is an entry in a dict, and one timer waits for the nearest deadline. A step
that starts with a deadline later than the timer's (steps of one timeout start in deadline
order) leaves the timer as it is; when the timer fires it cancels the tasks whose deadline has
passed and waits for the nearest of the others, so it fires about once per timeout while steps
come and go, and each firing reads the entries of the steps running then.

A cancellation made for a deadline is told apart from any other as ``asyncio.timeout`` does:
by the task's count of pending cancellation requests (``Task.cancelling``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import Any


class DeadlinePassed(TimeoutError):
    """The call's deadline passed (a TimeoutError the function raised itself is not one)."""


class Deadlines:
    """Deadlines of tasks on one event loop; made on that loop, used from it only."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        #: token -> (deadline in loop time, task, its pending cancellations when it was watched)
        self._due: dict[int, tuple[float, asyncio.Task[Any], int]] = {}
        #: token -> (task, its pending cancellations when it was watched): cancelled for its
        #: deadline, not yet told (expired) or unwatched
        self._cancelled: dict[int, tuple[asyncio.Task[Any], int]] = {}
        self._tokens = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def call(
        self, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any, seconds: float
    ) -> Any:
        """``await fn(*args, **kwargs)``, cancelled in ``seconds``: then DeadlinePassed."""
        token = self.watch(seconds)
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            if self.expired(token):
                raise DeadlinePassed from None
            raise
        finally:
            self.unwatch(token)

    def watch(self, seconds: float) -> int:
        """Cancel the current task in ``seconds`` unless :meth:`unwatch` comes first."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.watch needs to run in a task")
        at = self._loop.time() + seconds
        token = next(self._tokens)
        self._due[token] = (at, task, task.cancelling())
        if at < self._timer_at:
            self._arm(at)
        return token

    def expired(self, token: int) -> bool:
        """Whether the deadline of ``token`` cancelled its task, and no other cancellation is
        pending on it: then the CancelledError it raised is a timeout (the deadline's
        cancellation is withdrawn here)."""
        entry = self._cancelled.pop(token, None)
        if entry is None:
            return False
        task, cancelling = entry
        return task.uncancel() <= cancelling

    def unwatch(self, token: int) -> None:
        """The task is done with its deadline. If the deadline had cancelled it and the task
        went on regardless (it caught the CancelledError), the cancellation is withdrawn."""
        if self._due.pop(token, None) is None:
            entry = self._cancelled.pop(token, None)
            if entry is not None:
                entry[0].uncancel()

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._fire)
        self._timer_at = at

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._loop.time()
        nearest = math.inf
        for token, (at, task, cancelling) in list(self._due.items()):
            if at <= now:
                del self._due[token]
                if not task.done():
                    self._cancelled[token] = (task, cancelling)
                    task.cancel()
            elif at < nearest:
                nearest = at
        if nearest < math.inf:
            self._arm(nearest)


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


def running_loop_deadlines() -> Deadlines:
    """The running loop's Deadlines, made on first use (gone with the loop)."""
    loop = asyncio.get_running_loop()
    deadlines = _BY_LOOP.get(loop)
    if deadlines is None:
        deadlines = _BY_LOOP[loop] = Deadlines()
    return deadlines
