"""Calling one step function once, under its timeout: the part the executor and the worker share.

Three ways to run a function, chosen per step:

- ``async def`` steps run on the event loop and are cancelled at the deadline.
- ``def`` steps run in a bounded thread pool. A thread cannot be killed: at the deadline the caller
  gets :class:`StepTimeout` at once, while the thread runs on until the function returns (the
  executor sets ``ctx.cancelled`` so a cooperative step can stop). The in-process executor, when
  it owns the main thread and nothing else is running, calls a sync step directly and interrupts
  it with ``SIGALRM`` instead: cheaper, and really stopped. The step then sees no running event
  loop, as it would in a thread, so it may call ``asyncio.run()`` itself.
- ``isolation="process"`` steps run in a child process (``spawn``) that is killed at the deadline.
  Their exceptions come back as themselves when they can be unpickled, else as
  :class:`StepProcessError`; a child that dies without an answer raises :class:`StepProcessDied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import math
import multiprocessing
import pickle
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from multiprocessing.connection import Connection
from typing import Any

from pypgflow.errors import PypgflowError, StepTimeout
from pypgflow.workflow import Step


class StepProcessDied(PypgflowError):
    """The child process running a step exited without returning a result."""


class StepProcessError(PypgflowError):
    """A process-isolated step raised an exception that cannot be sent back as itself."""

    def __init__(self, message: str | None = None, *, original_type: str = "") -> None:
        super().__init__(message)
        #: the qualified name of the exception's class in the child process
        self.original_type = original_type


async def call_step(
    step: Step,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    timeout: float,
    pool: Executor | None,
    inline: bool = False,
) -> Any:
    """Run ``step.fn(*args, **kwargs)`` once and return its result, or raise at the deadline.

    ``inline`` runs a sync step directly on this thread, interrupted by ``SIGALRM``: only for
    callers inside :func:`alarm_deadlines` that block nothing else by waiting.
    """
    limit = None if math.isinf(timeout) else timeout
    if step.isolation == "process":
        return await _call_in_process(step, args, kwargs, limit)
    if step.is_async:
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await step.fn(*args, **kwargs)
        except TimeoutError:
            if deadline.expired():
                raise _timeout(step, timeout) from None
            raise
    if inline:
        return _call_inline(step, args, kwargs, limit, timeout)
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, _call_sync, step, args, kwargs)
    future = loop.run_in_executor(pool, call)
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            return await future
    except TimeoutError:
        if deadline.expired():
            raise _timeout(step, timeout) from None
        raise


def _call_sync(step: Step, args: list[Any], kwargs: dict[str, Any]) -> Any:
    try:
        return step.fn(*args, **kwargs)
    except StopIteration as exc:
        # An asyncio future cannot hold a StopIteration: the caller would wait until the deadline.
        raise RuntimeError(f"step {step.name!r} raised StopIteration") from exc


def _timeout(step: Step, timeout: float) -> StepTimeout:
    return StepTimeout(
        f"step {step.name!r} timed out after {timeout:g} s", step=step.name, timeout=timeout
    )


# -- inline, interrupted by SIGALRM -------------------------------------------------------------


class _Deadline(BaseException):
    """Raised inside an inline step at its deadline; a BaseException so `except Exception` in
    step code does not swallow it."""


def inline_sync_possible() -> bool:
    """True when a sync step may run on this thread with a SIGALRM deadline."""
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )


def _on_alarm(signum: int, frame: object) -> None:
    raise _Deadline


@contextlib.contextmanager
def alarm_deadlines() -> Iterator[None]:
    """Install the SIGALRM handler that inline sync steps' deadlines rely on, for a whole execution."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_inline(
    step: Step, args: list[Any], kwargs: dict[str, Any], limit: float | None, timeout: float
) -> Any:
    # The step runs inside the executor's event loop, but must see what it would see in a worker
    # thread: no running loop, so that it may call asyncio.run() (or execute()) itself.
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        if limit is None:
            return _call_sync(step, args, kwargs)
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                return _call_sync(step, args, kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Deadline:
            raise _timeout(step, timeout) from None
    finally:
        asyncio._set_running_loop(loop)


# -- in a child process, killed at the deadline ---------------------------------------------------


def _child_main(
    conn: Connection, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> None:
    """Entry point of the child process: run the function, send back ("ok", result) or
    ("error", the pickled exception)."""
    try:
        result = fn(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        conn.send(("ok", result))
    except BaseException as exc:
        text = "".join(traceback.format_exception(exc))
        exc.add_note(f"(raised in the step's child process)\n{text}")
        try:
            if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: not the caller's
                raise TypeError("not an Exception")
            # An exception whose class cannot be rebuilt from its args (a custom __init__) pickles
            # fine and then fails to unpickle in the parent: check the round trip here.
            payload = pickle.dumps(exc)
            pickle.loads(payload)
        except Exception:  # the exception itself cannot be sent: send its description
            payload = pickle.dumps(
                StepProcessError(
                    f"{type(exc).__qualname__}: {exc}\n{text}",
                    original_type=type(exc).__qualname__,
                )
            )
        conn.send(("error", payload))
    finally:
        conn.close()


async def _call_in_process(
    step: Step, args: list[Any], kwargs: dict[str, Any], limit: float | None
) -> Any:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main,
        args=(sender, step.fn, args, kwargs),
        name=f"pypgflow-step-{step.name}",
        daemon=True,
    )
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    try:
        process.start()
        sender.close()
        loop.add_reader(receiver.fileno(), wake)
        loop.add_reader(process.sentinel, wake)
        try:
            deadline = asyncio.timeout(limit)
            async with deadline:
                await done
        except TimeoutError:
            raise _timeout(step, limit or math.inf) from None
        finally:
            loop.remove_reader(receiver.fileno())
            loop.remove_reader(process.sentinel)
        status: str = "died"
        payload: Any = None
        if receiver.poll():
            try:
                status, payload = receiver.recv()
            except EOFError:
                pass
            except Exception as exc:  # a result that cannot be unpickled here
                raise StepProcessError(
                    f"step {step.name!r}: its result could not be received: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        if status == "ok":
            return payload
        if status == "error":
            try:
                error = pickle.loads(payload)
            except Exception as exc:
                raise StepProcessError(
                    f"step {step.name!r}: its error could not be received: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            raise error
        process.join(1.0)
        raise StepProcessDied(
            f"step {step.name!r}: its process exited with code {process.exitcode} "
            "without returning a result"
        )
    finally:
        if process.is_alive():
            process.kill()
        if process.pid is not None:
            process.join(5.0)  # immediate: the child has exited or was just killed
            process.close()
        sender.close()
        receiver.close()
