"""What waiting for a durable run gives back: its output, or the exception that says why it has
none (``WorkflowFailed`` with every attempt's error, ``WorkflowTimedOut``, ``RunCancelled``), the
same exceptions the in-process executor raises; and how callers wait for it.

Waiting is woken, not polled: an App's :class:`ResultWaiters` listens for the runs its engine
announces as finished (``Engine.listen_finished``: on PostgreSQL a LISTEN connection of its own,
started on the first wait; on SQLite this process's commits, and ``PRAGMA data_version`` for other
processes), and wakes the callers waiting for those runs, who then read their run. Announcements
are hints: a waiter also reads its run when the listener (re)connects and at least every
``RESULT_RECHECK_INTERVAL``, so that a lost notification delays a result, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pypgflow import defaults
from pypgflow.engines.base import Engine
from pypgflow.errors import (
    AttemptError,
    ResultTimeout,
    RunCancelled,
    RunNotFound,
    StepTimeout,
    WorkflowFailed,
    WorkflowTimedOut,
)
from pypgflow.records import RunInfo
from pypgflow.status import RunStatus
from pypgflow.workflow import Workflow, resolve_options

logger = logging.getLogger("pypgflow.results")

#: the first and the longest pause between looks when the engine announces nothing (the pause
#: grows by half at each look)
_POLL_FIRST = 0.002
_POLL_LONGEST = 0.1


class ResultWaiters:
    """The callers of one App waiting for runs to finish, by run id, and the one listener that
    wakes them: started on the first wait that has to wait, stopped by :meth:`close`.

    Each waiter reads its run, waits to be woken (an announcement of its run, or of anything
    when the listener (re)connects: then the waited runs still going are read in one statement,
    and the waiters of the others woken), and reads again, at least every
    ``RESULT_RECHECK_INTERVAL`` seconds. A waiter registers before it reads: a finish committed
    after the read is announced to it, and one committed before is in what it read.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._waiting: dict[str, set[_Waiter]] = {}
        self._start_lock = threading.Lock()
        self._started = False
        self._listening = False
        self._stop: Callable[[], None] | None = None

    def wait(self, run_id: str, timeout: float | None, workflows: Mapping[str, Workflow]) -> Any:
        """The run's output once it finished, or the exception that says why it has none;
        ResultTimeout if it is still going after ``timeout`` seconds (None: for ever)."""
        deadline = _Deadline(run_id, timeout)
        outcome = outcome_of(self.engine, run_id, workflows)
        if outcome is not None:
            return outcome()
        deadline.pause(0.0)  # ResultTimeout now if no time is left (timeout=0)
        waiter = _ThreadWaiter()
        key = self._add(run_id, waiter)
        try:
            pause = self._first_pause()
            while True:
                outcome = outcome_of(self.engine, run_id, workflows)
                if outcome is not None:
                    return outcome()
                waiter.event.wait(deadline.pause(pause))
                waiter.event.clear()
                pause = self._next_pause(pause)
        finally:
            self._remove(key, waiter)

    async def wait_async(
        self, run_id: str, timeout: float | None, workflows: Mapping[str, Workflow]
    ) -> Any:
        """:meth:`wait` on an event loop: reads in a thread, waits on an asyncio event that the
        listener sets from its thread; the loop is never blocked."""
        deadline = _Deadline(run_id, timeout)
        outcome = await asyncio.to_thread(outcome_of, self.engine, run_id, workflows)
        if outcome is not None:
            return outcome()
        deadline.pause(0.0)
        waiter = _LoopWaiter(asyncio.get_running_loop())
        key = self._add(run_id, waiter)
        try:
            pause = self._first_pause()
            while True:
                outcome = await asyncio.to_thread(outcome_of, self.engine, run_id, workflows)
                if outcome is not None:
                    return outcome()
                wait = deadline.pause(pause)  # ResultTimeout (a TimeoutError) out of the loop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), wait)
                waiter.event.clear()
                pause = self._next_pause(pause)
        finally:
            self._remove(key, waiter)

    def close(self) -> None:
        """Stop the listener (a later wait starts another) and wake every waiter to look."""
        with self._start_lock:
            stop, self._stop = self._stop, None
            self._started = self._listening = False
        if stop is not None:
            stop()
        with self._lock:
            waiters = [w for ws in self._waiting.values() for w in ws]
        for waiter in waiters:
            waiter.wake()

    # -- waiters and the listener ----------------------------------------------------------------

    def _add(self, run_id: str, waiter: _Waiter) -> str:
        """Register a waiter for ``run_id`` (starting the listener if it is the first); its key."""
        key = _canonical(run_id)
        with self._lock:
            self._waiting.setdefault(key, set()).add(waiter)
        if not self._started:
            with self._start_lock:
                if not self._started:
                    self._stop = self.engine.listen_finished(self._on_finished)
                    self._listening = self._stop is not None
                    self._started = True
        return key

    def _remove(self, key: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiting.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiting[key]

    def _first_pause(self) -> float:
        return defaults.RESULT_RECHECK_INTERVAL if self._listening else _POLL_FIRST

    def _next_pause(self, pause: float) -> float:
        """The longest wait before the next look: the safety interval while the listener runs,
        else a poll growing from 2 ms to 100 ms (an engine that announces nothing)."""
        if self._listening:
            return defaults.RESULT_RECHECK_INTERVAL
        return min(pause * 1.5, _POLL_LONGEST)

    def _on_finished(self, run_id: str) -> None:
        """The listener's news, in its thread: a run finished, or ("") any may have."""
        try:
            if run_id:
                self._wake({run_id})
            else:
                self._recheck()
        except Exception:  # the listener must go on; waiters look again on their own anyway
            logger.exception("waking the waiters of finished runs failed")

    def _recheck(self) -> None:
        """Runs may have finished unannounced: read which of the waited runs are still going,
        in one statement, and wake the waiters of the others (all of them if it fails)."""
        with self._lock:
            keys = set(self._waiting)
        if not keys:
            return
        try:
            going = self.engine.runs_still_going(keys)
        except Exception as exc:  # each waiter's own look will say what is wrong
            logger.debug("re-checking waited runs failed (%s): waking every waiter", exc)
            going = set()
        self._wake(keys - going)

    def _wake(self, keys: set[str]) -> None:
        with self._lock:
            waiters = [w for key in keys for w in self._waiting.get(key, ())]
        for waiter in waiters:
            waiter.wake()


class _Waiter(Protocol):
    def wake(self) -> None:
        """Make the waiter look at its run again (from any thread)."""


class _ThreadWaiter:
    """A caller blocked in :meth:`ResultWaiters.wait`."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class _LoopWaiter:
    """A coroutine in :meth:`ResultWaiters.wait_async`, woken through its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.event.set)


class _Deadline:
    """When a wait for ``run_id`` gives up, ``timeout`` seconds from now (None: never)."""

    def __init__(self, run_id: str, timeout: float | None) -> None:
        self.run_id = run_id
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def pause(self, longest: float) -> float:
        """How long to wait before the next look: at most ``longest``, never past the deadline;
        ResultTimeout when the deadline has passed."""
        if self.at is None or self.timeout is None:
            return longest
        left = self.at - time.monotonic()
        if left <= 0:
            raise ResultTimeout(f"run {self.run_id} did not finish within {self.timeout:g} s")
        return min(longest, left)


def _canonical(run_id: str) -> str:
    """A run id as engines announce it (a UUID's canonical spelling)."""
    try:
        return str(uuid.UUID(str(run_id)))
    except ValueError:
        return str(run_id)


def outcome_of(
    engine: Engine, run_id: str, workflows: Mapping[str, Workflow]
) -> Callable[[], Any] | None:
    """None while the run is going; else a function that returns its output or raises why it
    has none. RunNotFound if there is no such run."""
    result = engine.run_result(run_id)
    if result is None:
        raise RunNotFound(f"no run with id {run_id}")
    if result.status is RunStatus.COMPLETED:
        output = result.output
        return lambda: output
    if result.status is RunStatus.CANCELLED:
        cancelled = RunCancelled(run_id=run_id)
        return lambda: _raise(cancelled)
    if result.status is RunStatus.FAILED:
        error = result.error or AttemptError(
            step="", attempt=0, type="Error", message="", traceback=""
        )
        failure = failure_of(engine.get_run(run_id), run_id, error, workflows)
        return lambda: _raise(failure)
    return None


def failure_of(
    info: RunInfo | None, run_id: str, error: AttemptError, workflows: Mapping[str, Workflow]
) -> WorkflowFailed:
    """The exception for a failed run: ``error`` says why it failed, ``info`` (the run with its
    steps) gives every attempt's error. A run that failed because its last attempt timed out
    raises WorkflowTimedOut, as the in-process executor does."""
    errors: list[AttemptError] = []
    if info is not None:
        for step_info in info.steps:
            errors.extend(step_info.errors)
    errors.sort(key=lambda e: (e.attempt, e.step))
    attempts = error.attempt
    workflow = info.workflow if info else ""
    message = (
        f"workflow {workflow or '?'!r} run {run_id} failed at step {error.step!r} "
        f"after {attempts} attempt{'s' if attempts != 1 else ''}: {error.type}: {error.message}"
    )
    failure = WorkflowFailed(
        message,
        workflow=workflow,
        step=error.step,
        attempts=attempts,
        errors=errors,
        run_id=run_id,
    )
    if error.type == StepTimeout.__qualname__:
        timeout = _timeout_of(workflows.get(workflow), error.step)
        return WorkflowTimedOut(failure, StepTimeout(step=error.step, timeout=timeout))
    return failure


def _timeout_of(flow: Workflow | None, step: str) -> float:
    """The step's timeout, if this process knows its workflow (0.0 if not)."""
    if flow is None or step not in flow.steps:
        return 0.0
    return resolve_options(flow, flow.steps[step]).timeout


def _raise(exc: BaseException) -> Any:
    raise exc
