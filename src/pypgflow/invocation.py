"""Calling one step function once, under its timeout: the part the executor and the worker share.

Three ways to run a function, chosen per step:

- ``async def`` steps run on the event loop and are cancelled at the deadline.
- ``def`` steps run in a bounded thread pool, through a :class:`ThreadHandoff`. A thread cannot be
  killed: at the deadline the caller gets :class:`StepTimeout` at once, while the thread runs on
  until the function returns (the executor sets ``ctx.cancelled`` so a cooperative step can stop).
  The in-process executor, when
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
import logging
import math
import multiprocessing
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from multiprocessing.connection import Connection
from typing import Any, ParamSpec, TypeVar

from pypgflow.deadlines import DeadlinePassed, running_loop_deadlines
from pypgflow.errors import PypgflowError, StepTimeout
from pypgflow.workflow import Step

_P = ParamSpec("_P")
_T = TypeVar("_T")
logger = logging.getLogger("pypgflow")


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
    handoff: ThreadHandoff | None = None,
) -> Any:
    """Run ``step.fn(*args, **kwargs)`` once and return its result, or raise at the deadline.

    A sync step runs in ``pool`` (``None``: the loop's default executor) through ``handoff``, or
    through a new :class:`ThreadHandoff` for this call alone: share one between the calls made on a
    loop, and their completions wake it once per burst. ``inline`` runs a sync step directly on
    this thread, interrupted by ``SIGALRM``: only for callers inside :func:`alarm_deadlines` that
    block nothing else by waiting. An ``async def`` step's deadline is kept by the running loop's
    :class:`~pypgflow.deadlines.Deadlines`.
    """
    limit = None if math.isinf(timeout) else timeout
    if step.isolation == "process":
        return await _call_in_process(step, args, kwargs, limit)
    if step.is_async:
        if limit is None:
            return await step.fn(*args, **kwargs)
        try:
            return await running_loop_deadlines().call(step.fn, args, kwargs, limit)
        except DeadlinePassed:
            raise _timeout(step, timeout) from None
    if inline:
        return _call_inline(step, args, kwargs, limit, timeout)
    if handoff is None:
        handoff = ThreadHandoff()
    return await handoff.call(step, args, kwargs, timeout=timeout, pool=pool)


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


# -- in a thread of a pool, handed back to the loop in bursts ---------------------------------------


class ThreadHandoff:
    """Runs sync steps in a thread pool and hands their outcomes back to one event loop, in bursts.

    Why it exists: ``loop.run_in_executor`` costs, per call, a concurrent Future chained to an
    asyncio Future, and a wake-up of the loop (``call_soon_threadsafe``: a write to its self-pipe)
    per completion; under ``asyncio.timeout`` besides. With a hundred sync branches ready at once,
    that was most of the executor's overhead per step (about 30 µs). Here:

    - each call is a :class:`_ThreadCall`, which records its own outcome in the thread; a
      :class:`StepThreadPool` queues it as it is, with no Future (any other executor gets it
      through ``submit``);
    - a finished call appends itself to ``_finished``, and only the call that finds that list
      empty wakes the loop: one wake-up per burst, however many calls end meanwhile;
    - the loop takes the whole list and resolves each caller's future in one go;
    - each call's deadline is kept by the loop's :class:`~pypgflow.deadlines.Deadlines`, as an
      ``async def`` step's (one timer for all). At the deadline the caller gets
      :class:`StepTimeout` at once; the call is marked abandoned, so that it does not start if
      it is still queued, while a thread already running it runs on to the end.

    One instance serves any number of calls on the loop it was created on (the running one).
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._finished: list[_ThreadCall] = []  # non-empty: the loop has been woken to drain it

    async def call(
        self,
        step: Step,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        timeout: float,
        pool: Executor | None,
    ) -> Any:
        """Run the sync ``step`` in ``pool`` and return its result; raise at the deadline."""
        loop = self._loop
        waiter = loop.create_future()
        call = _ThreadCall(self, waiter, step, args, kwargs)
        if isinstance(pool, StepThreadPool):
            pool.run_soon(call)
        else:
            # Another executor: it may drop the call unrun (shutdown(cancel_futures=True)).
            future = loop.run_in_executor(None, call) if pool is None else pool.submit(call)
            future.add_done_callback(call.pool_done)
        if math.isinf(timeout):
            try:
                return await waiter
            except BaseException:  # its error, or this task cancelled
                call.abandoned = True
                raise
        deadlines = running_loop_deadlines()
        token = deadlines.watch(timeout)
        try:
            return await waiter
        except asyncio.CancelledError:
            call.abandoned = True
            if deadlines.expired(token):
                raise _timeout(step, timeout) from None
            raise
        except BaseException:  # its error
            call.abandoned = True
            raise
        finally:
            deadlines.unwatch(token)

    def _finish(self, call: _ThreadCall) -> None:
        """Queue a finished call for the loop (from any thread); wake the loop once per burst."""
        with self._lock:
            self._finished.append(call)
            if len(self._finished) > 1:
                return  # the loop is already woken, and has not taken the list yet
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the call now
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop: resolve the futures of every call finished since the last drain."""
        with self._lock:
            finished, self._finished = self._finished, []
        for call in finished:
            if call.waiter.done():  # timed out, or its caller was cancelled
                continue
            if call.error is None:
                call.waiter.set_result(call.result)
            else:
                call.waiter.set_exception(call.error)


class _ThreadCall:
    """One call of a sync step, run by a pool thread and handed back through its ThreadHandoff."""

    __slots__ = (
        "abandoned",
        "args",
        "context",
        "error",
        "handoff",
        "kwargs",
        "result",
        "step",
        "waiter",
    )

    def __init__(
        self,
        handoff: ThreadHandoff,
        waiter: asyncio.Future[Any],
        step: Step,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        self.handoff = handoff
        self.waiter = waiter
        self.step = step
        self.args = args
        self.kwargs = kwargs
        self.context = contextvars.copy_context()  # the caller's context variables
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False  # timed out or cancelled: if not started yet, do not start

    def __call__(self) -> None:
        """In a pool thread: call the step, then hand the outcome back. Never raises."""
        if self.abandoned:
            return
        try:
            self.result = self.context.run(_call_sync, self.step, self.args, self.kwargs)
        except BaseException as exc:
            self.error = exc
        if not self.abandoned:
            self.handoff._finish(self)

    def pool_done(self, future: Future[Any] | asyncio.Future[Any]) -> None:
        """Done callback of the future another executor returned: report a call it dropped."""
        if future.cancelled() and not self.abandoned:
            self.error = asyncio.CancelledError()
            self.handoff._finish(self)


class StepThreadPool(Executor):
    """A bounded pool of daemon threads for sync steps.

    Like :class:`~concurrent.futures.ThreadPoolExecutor`, except that

    - its threads are daemons: a sync step abandoned at its timeout (a thread cannot be killed)
      must not keep the interpreter from exiting, which ThreadPoolExecutor's exit hook, joining
      every worker, would do;
    - :meth:`run_soon` queues a bare callable, without the Future that :meth:`submit` creates,
      completes and locks for every call: what :class:`ThreadHandoff` uses.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "pypgflow-step") -> None:
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[tuple[Future[Any] | None, Callable[[], Any]] | None]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work, as far as submitters know: guarded by _lock
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        self._put(future, functools.partial(fn, *args, **kwargs))
        return future

    def run_soon(self, job: Callable[[], object]) -> None:
        """Run ``job()`` in a pool thread. It gets no Future: it must report its own outcome, and
        not raise. ``shutdown(cancel_futures=True)`` drops it unrun, without telling it."""
        self._put(None, job)

    def _put(self, future: Future[Any] | None, job: Callable[[], Any]) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((future, job))
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)  # wake the next worker, which exits too
                return
            future, job = item
            del item
            if future is None:
                try:
                    job()
                except BaseException:  # a bug in the job: keep the thread
                    logger.exception("a job in the step thread pool raised")
            elif future.set_running_or_notify_cancel():
                try:
                    result = job()
                except BaseException as exc:
                    future.set_exception(exc)
                    del exc
                else:
                    future.set_result(result)
                    del result
            del future, job
            with self._lock:
                self._idle += 1

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds in all for the threads to finish what they run (after
        ``shutdown``); True if they all did. Cancelled sync steps get this long to notice."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None and item[0] is not None:
                        item[0].cancel()
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


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
            pickle.loads(payload)  # noqa: S301  our own child's exception, never stored
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
                error = pickle.loads(payload)  # noqa: S301  from our own child process, never stored
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
