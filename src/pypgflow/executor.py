"""The in-process executor: run a workflow now, in this process, and return its result.

Nothing is stored: this is the seed's ``Pgflow.Executor``, grown to DAGs. Independent branches run
concurrently (async steps on the event loop, sync steps in a bounded pool of daemon threads,
process-isolated steps in child processes, a few at a time), each step under its timeout, failures
retried with exponential backoff. A step starts as soon as its own dependencies are done.

Options resolve most specific first: the step's own, then the call's, then the workflow's, then the
defaults (3 attempts, 30 s, ``Backoff()``).

Two retry modes:

- ``retry="workflow"`` (the seed's choice): any failure re-runs the whole workflow from its first
  step, up to ``max_attempts`` times, waiting ``backoff`` between passes. Steps' own
  ``max_attempts``/``backoff`` are not used in this mode; their timeouts are.
- ``retry="step"``: only the failed step is retried, with its own ``max_attempts`` and ``backoff``;
  completed outputs are kept. This is what the durable engines do.

Why one module: a pass over the graph, its retries and its timeouts share the pass's state (the
ready set, the outputs, the attempts); calling one step lives in :mod:`pypgflow.invocation`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Literal, TypeVar

from pypgflow import orchestration
from pypgflow.backoff import DEFAULT_BACKOFF, Backoff
from pypgflow.context import StepContext, context_logger
from pypgflow.defaults import DEFAULT_MAX_ATTEMPTS
from pypgflow.errors import (
    AttemptError,
    ChildRunFailed,
    InvalidArgument,
    MapInputError,
    NotSupported,
    RetryAfter,
    StepTimeout,
    WorkflowFailed,
    WorkflowTimedOut,
)
from pypgflow.invocation import (
    StepThreadPool,
    ThreadHandoff,
    alarm_deadlines,
    call_step,
    inline_sync_possible,
)
from pypgflow.workflow import ArgSource, Step, StepOptions, Workflow, resolve_options

RetryMode = Literal["workflow", "step"]
Sleep = Callable[[float], Awaitable[None]]

_MISSING: Any = object()


_shared_pool: StepThreadPool | None = None
_shared_pool_lock = threading.Lock()


def _default_pool() -> StepThreadPool:
    """One thread pool for sync steps, shared by every execution in this process."""
    global _shared_pool
    with _shared_pool_lock:
        if _shared_pool is None:
            _shared_pool = StepThreadPool(min(32, (os.cpu_count() or 1) + 4))
            atexit.register(_shared_pool.shutdown, wait=False, cancel_futures=True)
        return _shared_pool


_main_loop: asyncio.AbstractEventLoop | None = None


def _run_on_main_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on an event loop kept for the main thread: a new loop per call would cost
    more than running a short workflow. The loop is never set as the thread's current loop."""
    global _main_loop
    if _main_loop is None or _main_loop.is_closed():
        _main_loop = asyncio.new_event_loop()
        atexit.register(_main_loop.close)
    task = _main_loop.create_task(coro)
    try:
        return _main_loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                _main_loop.run_until_complete(task)
        raise


class _StepFailed(Exception):
    """A step failed for good in this pass; carries what WorkflowFailed needs."""

    def __init__(
        self,
        step: str,
        attempts: int,
        cause: BaseException,
        retryable: bool = True,
        *,
        delay: float | None = None,
        task_index: int | None = None,
    ):
        super().__init__(step)
        self.step = step
        self.task_index = task_index
        self.attempts = attempts
        self.cause = cause
        self.retryable = retryable
        #: the delay the step asked for before the next pass (RetryAfter), if any
        self.delay = delay

    @property
    def where(self) -> str:
        return self.step if self.task_index is None else f"{self.step}[{self.task_index}]"


def _check_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")


def execute(
    workflow: Workflow,
    input: Any = None,
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    retry: RetryMode = "workflow",
    backoff: Backoff | None = None,
    max_workers: int | None = None,
    sleep: Sleep | None = None,
) -> Any:
    """Run ``workflow`` on ``input`` now and return its result.

    Raises :class:`~pypgflow.WorkflowFailed` after the last attempt (a
    :class:`~pypgflow.WorkflowTimedOut`, also a :class:`~pypgflow.StepTimeout`, when that attempt
    timed out). Inside a running event loop, use :func:`execute_async`; called there anyway, the
    workflow runs on a helper thread while the caller blocks. ``max_workers`` bounds the sync and
    process-isolated steps running at once (default: a pool shared by every execution).
    ``sleep`` replaces ``asyncio.sleep`` between attempts (for tests).

    On the main thread, a sync step that is the only thing able to run is called directly and
    interrupted by ``SIGALRM`` at its deadline (when the program does not use ``SIGALRM`` itself).
    """
    execution = _Execution(
        workflow,
        input,
        max_attempts=max_attempts,
        timeout=timeout,
        retry=retry,
        backoff=backoff,
        max_workers=max_workers,
        sleep=sleep,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="pypgflow-execute") as helper:
            return helper.submit(asyncio.run, execution.run()).result()
    if not inline_sync_possible():
        return asyncio.run(execution.run())
    with alarm_deadlines():
        execution.inline = True
        return _run_on_main_loop(execution.run())


async def execute_async(
    workflow: Workflow,
    input: Any = None,
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    retry: RetryMode = "workflow",
    backoff: Backoff | None = None,
    max_workers: int | None = None,
    sleep: Sleep | None = None,
) -> Any:
    """:func:`execute` for asyncio code: sync steps run in the thread pool, never on your loop."""
    execution = _Execution(
        workflow,
        input,
        max_attempts=max_attempts,
        timeout=timeout,
        retry=retry,
        backoff=backoff,
        max_workers=max_workers,
        sleep=sleep,
    )
    return await execution.run()


class _Execution:
    """The state of one in-process execution."""

    def __init__(
        self,
        workflow: Workflow,
        input: Any,
        *,
        max_attempts: int | None,
        timeout: float | None,
        retry: RetryMode,
        backoff: Backoff | None,
        max_workers: int | None,
        sleep: Sleep | None,
    ) -> None:
        if not isinstance(workflow, Workflow):
            raise InvalidArgument(f"execute() takes a Workflow, got {type(workflow).__name__}")
        if retry not in ("workflow", "step"):
            raise InvalidArgument(f"retry must be 'workflow' or 'step', got {retry!r}")
        _check_int("max_attempts", max_attempts)
        _check_int("max_workers", max_workers)
        if timeout is not None and (
            isinstance(timeout, bool) or not (isinstance(timeout, int | float) and timeout > 0)
        ):
            raise InvalidArgument(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise InvalidArgument(f"backoff must be a pypgflow.Backoff, got {backoff!r}")
        if sleep is not None and not callable(sleep):
            raise InvalidArgument(f"sleep must be an async callable, got {sleep!r}")
        self.workflow = workflow.validate()
        waits = [step.name for step in workflow if step.signal is not None]
        if waits:
            raise NotSupported(
                f"workflow {workflow.name!r} waits for signals (steps {', '.join(waits)}): a "
                "signal is sent to a stored run, so it runs durably only (App.start)"
            )
        self.input = input
        self.retry = retry
        self.max_attempts = max_attempts or workflow.max_attempts or DEFAULT_MAX_ATTEMPTS
        self.backoff = backoff or workflow.backoff or DEFAULT_BACKOFF
        self.options: dict[str, StepOptions] = {
            step.name: resolve_options(
                workflow, step, max_attempts=max_attempts, timeout=timeout, backoff=backoff
            )
            for step in workflow
        }
        self.max_workers = max_workers
        self.pool: Executor | None = None
        self.handoff: ThreadHandoff | None = None
        self.process_slots: asyncio.Semaphore | None = None
        self.sleep: Sleep = sleep or asyncio.sleep
        self.inline = False
        self.run_id = uuid.uuid4().hex
        self.errors: list[AttemptError] = []
        #: the steps of the current pass whose condition was false
        self.skipped: set[str] = set()
        self.log = context_logger(run_id=self.run_id, workflow=workflow.name)
        self.debug = False
        self.dependents = workflow.dependents()

    async def run(self) -> Any:
        own_pool = StepThreadPool(self.max_workers) if self.max_workers else None
        self.pool = own_pool or _default_pool()
        self.handoff = ThreadHandoff()
        # Child processes are costly: process-isolated steps (and map elements) take turns.
        self.process_slots = asyncio.Semaphore(self.max_workers or max(2, os.cpu_count() or 1))
        self.debug = self.log.isEnabledFor(logging.DEBUG)
        started = time.perf_counter()
        self.log.info(
            "workflow %s started (run %s)",
            self.workflow.name,
            self.run_id,
            extra={"event": "workflow.started"},
        )
        try:
            if self.retry == "step":
                try:
                    result = await self._attempt_workflow(1, step_retries=True)
                except _StepFailed as failed:
                    raise self._failure(failed, attempts=failed.attempts) from failed.cause
            else:
                result = await self._run_with_workflow_retries()
        except WorkflowFailed as failure:
            self.log.error(
                "workflow %s failed: %s",
                self.workflow.name,
                failure.message,
                extra={
                    "event": "workflow.failed",
                    "step": failure.step,
                    "attempt": failure.attempts,
                    "elapsed": time.perf_counter() - started,
                },
            )
            raise
        finally:
            if own_pool is not None:
                own_pool.shutdown(wait=False, cancel_futures=True)
        elapsed = time.perf_counter() - started
        self.log.info(
            "workflow %s completed in %.3f s (run %s)",
            self.workflow.name,
            elapsed,
            self.run_id,
            extra={"event": "workflow.succeeded", "elapsed": elapsed},
        )
        return result

    async def _run_with_workflow_retries(self) -> Any:
        attempt = 1
        while True:
            try:
                return await self._attempt_workflow(attempt, step_retries=False)
            except _StepFailed as failed:
                if attempt >= self.max_attempts or not failed.retryable:
                    raise self._failure(failed, attempts=attempt) from failed.cause
                delay = self.backoff.delay(attempt) if failed.delay is None else failed.delay
                self.log.warning(
                    "workflow %s attempt %d failed at step %s; retrying from the first step in %.3g s",
                    self.workflow.name,
                    attempt,
                    failed.where,
                    delay,
                    extra={
                        "event": "workflow.retrying",
                        "step": failed.step,
                        "attempt": attempt,
                        "task_index": failed.task_index,
                        "delay": delay,
                    },
                )
                await self.sleep(delay)
                attempt += 1

    def _failure(self, failed: _StepFailed, *, attempts: int) -> WorkflowFailed:
        failure = WorkflowFailed(
            workflow=self.workflow.name,
            step=failed.step,
            attempts=attempts,
            errors=self.errors,
            run_id=self.run_id,
        )
        if isinstance(failed.cause, StepTimeout):
            return WorkflowTimedOut(failure, failed.cause)
        return failure

    async def _attempt_workflow(self, workflow_attempt: int, *, step_retries: bool) -> Any:
        """One pass over the graph: launch each step once its dependencies are done."""
        steps = self.workflow.steps
        outputs: dict[str, Any] = {}
        self.skipped.clear()
        remaining = {step.name: len(step.depends_on) for step in steps.values()}
        ready = deque(self.workflow.roots)
        running: dict[asyncio.Task[Any], str] = {}
        try:
            while ready or running:
                while ready:
                    name = ready.popleft()
                    step = steps[name]
                    if self._can_inline(step) and not ready and not running:
                        # Nothing else can run meanwhile: call it here, no task, no thread.
                        outputs[name] = await self._run_step(
                            step, outputs, workflow_attempt, step_retries, inline=True
                        )
                        self._release(name, remaining, ready)
                    else:
                        run = self._run_step(step, outputs, workflow_attempt, step_retries)
                        running[asyncio.ensure_future(run)] = name
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in _failed_first(done):
                    name = running.pop(task)
                    outputs[name] = task.result()
                    self._release(name, remaining, ready)
        finally:
            await _cancel_all(running)
        return self.workflow.result_from(outputs)

    def _release(self, name: str, remaining: dict[str, int], ready: deque[str]) -> None:
        for dependent in self.dependents[name]:
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                ready.append(dependent)

    def _can_inline(self, step: Step) -> bool:
        return self.inline and not step.is_async and not step.is_map and step.isolation == "thread"

    async def _run_step(
        self,
        step: Step,
        outputs: Mapping[str, Any],
        workflow_attempt: int,
        step_retries: bool,
        *,
        inline: bool = False,
    ) -> Any:
        if step.start_delay:
            await self.sleep(step.start_delay)
        if not step.is_map:
            return await self._run_attempts(
                step, outputs, workflow_attempt, step_retries, inline=inline
            )
        if step.map_over in self.skipped:
            items: Any = []  # nothing to map over
        else:
            items = self.input if step.map_over is None else outputs[step.map_over]
        if not isinstance(items, list):
            source = "the workflow input" if step.map_over is None else f"step {step.map_over!r}"
            error = MapInputError(
                f"map step {step.name!r} needs a list from {source}, got {type(items).__name__}"
            )
            self.errors.append(
                AttemptError.from_exception(error, step=step.name, attempt=workflow_attempt)
            )
            raise _StepFailed(step.name, workflow_attempt, error, retryable=False)
        tasks = [
            asyncio.ensure_future(
                self._run_attempts(
                    step, outputs, workflow_attempt, step_retries, index=index, item=item
                )
            )
            for index, item in enumerate(items)
        ]
        try:
            if tasks:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            # Raise the first element's failure; the elements still running are cancelled below.
            for task in _failed_first(tasks):
                if task.done():
                    task.result()
            return [task.result() for task in tasks]
        finally:
            await _cancel_all(tasks)

    async def _run_child(self, child: Workflow, child_input: Any) -> Any:
        """A subflow step's child, run here and now as its own execution (with its own
        options); its failure fails the step, and is not retried."""
        try:
            return await execute_async(child, child_input, max_workers=self.max_workers)
        except WorkflowFailed as exc:
            raise ChildRunFailed(f"child workflow {child.name!r} failed: {exc}") from exc

    async def _run_attempts(
        self,
        step: Step,
        outputs: Mapping[str, Any],
        workflow_attempt: int,
        step_retries: bool,
        *,
        index: int | None = None,
        item: Any = _MISSING,
        inline: bool = False,
    ) -> Any:
        options = self.options[step.name]
        attempt = 1 if step_retries else workflow_attempt
        where = step.name if index is None else f"{step.name}[{index}]"
        while True:
            ctx = (
                StepContext(self.run_id, self.workflow.name, step.name, attempt, index)
                if _wants_context(step)
                else None
            )
            started = 0.0
            if self.debug:
                started = time.perf_counter()
                self.log.debug(
                    "step %s attempt %d started",
                    where,
                    attempt,
                    extra=_extra("step.started", step, attempt, index),
                )
            try:
                if step.when is not None and not await step.should_run(
                    input=self.input, outputs=outputs, ctx=ctx
                ):
                    self.skipped.add(step.name)
                    self.log.info(
                        "step %s skipped: its condition is false",
                        where,
                        extra=_extra("step.skipped", step, attempt, index),
                    )
                    return None
                # in the attempt: a value that does not fit a parameter's type fails it
                args, kwargs = step.bind(input=self.input, outputs=outputs, ctx=ctx, item=item)
                if step.isolation == "process":
                    assert self.process_slots is not None  # noqa: S101  a type narrowing: set as the pass starts
                    async with self.process_slots:
                        result = await call_step(
                            step, args, kwargs, timeout=options.timeout, pool=None
                        )
                else:
                    result = await call_step(
                        step,
                        args,
                        kwargs,
                        timeout=options.timeout,
                        pool=self.pool,
                        inline=inline,
                        handoff=self.handoff,
                    )
                if step.child is not None:  # the function gave the child's input
                    result = await self._run_child(step.child, result)
            except asyncio.CancelledError:
                if ctx is not None:
                    ctx.cancel()  # tell a sync step still running in its thread to stop
                raise
            except Exception as exc:
                if ctx is not None and isinstance(exc, StepTimeout):
                    ctx.cancel()
                self.errors.append(
                    AttemptError.from_exception(
                        exc, step=step.name, attempt=attempt, task_index=index
                    )
                )
                # Under workflow retries the step has one attempt per pass: the pass's verdict
                # (retryable or not, after what delay) is taken from a budget of one more.
                verdict = orchestration.step_failed(
                    exc,
                    attempt=attempt if step_retries else 1,
                    options=options if step_retries else replace(options, max_attempts=2),
                )
                self.log.warning(
                    "step %s attempt %d failed: %s: %s",
                    where,
                    attempt,
                    type(exc).__name__,
                    exc,
                    extra=_extra("step.failed", step, attempt, index),
                )
                if not step_retries or isinstance(verdict, orchestration.GiveUp):
                    raise _StepFailed(
                        step.name,
                        attempt,
                        exc,
                        retryable=isinstance(verdict, orchestration.Retry),
                        delay=exc.delay if isinstance(exc, RetryAfter) else None,
                        task_index=index,
                    ) from exc
                delay = verdict.delay
                self.log.info(
                    "step %s will retry in %.3g s (attempt %d of %d)",
                    where,
                    delay,
                    attempt + 1,
                    options.max_attempts,
                    extra={**_extra("step.retrying", step, attempt, index), "delay": delay},
                )
                await self.sleep(delay)
                attempt += 1
            else:
                if self.debug:
                    elapsed = time.perf_counter() - started
                    self.log.debug(
                        "step %s attempt %d succeeded in %.3f s",
                        where,
                        attempt,
                        elapsed,
                        extra={
                            **_extra("step.succeeded", step, attempt, index),
                            "elapsed": elapsed,
                        },
                    )
                return result


def _extra(event: str, step: Step, attempt: int, index: int | None) -> dict[str, Any]:
    return {"event": event, "step": step.name, "attempt": attempt, "task_index": index}


def _wants_context(step: Step) -> bool:
    return any(p.source is ArgSource.CONTEXT for p in (*step.params, *step.when_params))


_F = TypeVar("_F", bound="asyncio.Future[Any]")


def _failed_first(tasks: Iterable[_F]) -> list[_F]:
    """Finished tasks that failed, then the others, each group in the given order."""
    ordered = list(tasks)
    failed = [t for t in ordered if t.done() and not t.cancelled() and t.exception() is not None]
    return failed + [t for t in ordered if t not in failed]


async def _cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel what still runs and wait for it; consume the failures nobody else will read."""
    tasks = list(tasks)
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # marks it retrieved: no "Task exception was never retrieved"


__all__ = ["RetryMode", "execute", "execute_async"]
