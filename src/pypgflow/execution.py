"""Running one claimed task: its step bound and called under its timeout, its output encoded,
and a failure turned into the outcome orchestration decides (retry after a delay, or give up).

The worker owns the slots and the claim loop; the :class:`StepRunner` owns how a step is called:
the thread pool for sync steps, the loop hand-off, and the log lines of every attempt. Steps are
called through :func:`pypgflow.invocation.call_step`, the same path the in-process executor uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pypgflow import orchestration
from pypgflow.context import ContextLogger, StepContext
from pypgflow.defaults import DEFAULT_QUEUE
from pypgflow.engines.base import ChildStarted, ClaimedTask, Completed, Failed, Outcome
from pypgflow.errors import AttemptError, ChildRunFailed, DatabaseError
from pypgflow.invocation import StepThreadPool, ThreadHandoff, call_step
from pypgflow.serialization import dumps
from pypgflow.starting import prepare_start
from pypgflow.status import RunStatus
from pypgflow.workflow import Workflow, resolve_options

_MISSING: Any = object()

#: extra step threads, for sync steps that timed out but whose functions are still running
TIMED_OUT_THREADS_ALLOWANCE = 32


class StepRunner:
    """Calls the steps of ``workflows`` for one worker with ``slots`` execution slots in all."""

    def __init__(
        self,
        workflows: Mapping[str, Workflow],
        *,
        versions: Mapping[tuple[str, str], Workflow],
        slots: int,
        instance_id: str,
        log: ContextLogger,
    ) -> None:
        self.workflows = workflows
        self.versions = versions
        self.instance_id = instance_id
        self.log = log
        # Threads are made only when none is idle, so there are as many as steps running, plus
        # those still stuck in sync steps that timed out (a thread cannot be stopped): the
        # allowance keeps a step claimed after such a timeout from waiting for a free thread
        # while its own timeout runs out.
        # Daemon threads: a sync step stuck past its timeout must not keep the process alive.
        self.pool = StepThreadPool(
            slots + TIMED_OUT_THREADS_ALLOWANCE, thread_name_prefix="pypgflow-step"
        )
        self._handoff: ThreadHandoff | None = None

    def workflow_of(self, task: ClaimedTask) -> Workflow | None:
        """The definition the task runs with: its run's version (runs stored before versions
        have none: the newest registered)."""
        if task.version is None:
            return self.workflows.get(task.workflow)
        return self.versions.get((task.workflow, task.version))

    def is_async(self, task: ClaimedTask) -> bool:
        """Whether the task's step is an ``async def`` (cancelling its future stops it)."""
        workflow = self.workflow_of(task)
        step = workflow.steps.get(task.step) if workflow is not None else None
        return step is not None and step.is_async

    async def run(self, task: ClaimedTask, ctx: StepContext) -> Outcome:
        """Call the task's step once and say how it went; CancelledError propagates (the
        attempt was cancelled, abandoned or interrupted: it has no outcome)."""
        began = time.time()  # a failed attempt's error says when it ran
        workflow = self.workflow_of(task)
        step = workflow.steps.get(task.step) if workflow is not None else None
        if workflow is None or step is None:
            error = LookupError(
                f"workflow {task.workflow!r} has no step {task.step!r} in this worker's definition"
            )
            verdict = orchestration.attempt_failed(
                attempt=task.attempt, max_attempts=task.max_attempts, retryable=False
            )
            return self.failed(task, error, verdict, began=began)
        options = resolve_options(workflow, step)
        if step.child is not None and task.child_run_id is not None:
            return self.child_ended(task, step.child.name)
        try:
            if step.when is not None and not await step.should_run(
                input=task.run_input, outputs=task.dependency_outputs, ctx=ctx
            ):
                self.log.info(
                    "step %s of run %s skipped: its condition is false", _where(task),
                    task.run_id, extra=_extra(task),
                )  # fmt: skip
                return Completed(task, "null", skipped=True)
            args, kwargs = step.bind(
                input=task.run_input,
                outputs=task.dependency_outputs,
                ctx=ctx,
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
                pool=self.pool,
                handoff=self._handoff,
            )
            if step.child is not None:
                return self.child_started(task, step.child, result)
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
            # The stored budget rules: it was fixed when the task was made.
            budget = replace(options, max_attempts=task.max_attempts)
            verdict = orchestration.step_failed(exc, attempt=task.attempt, options=budget)
            return self.failed(task, exc, verdict, began=began)

    def child_started(self, task: ClaimedTask, child: Workflow, child_input: Any) -> ChildStarted:
        """A subflow step's function returned ``child_input``: the child run to start, on the
        parent's queue and priority, recorded with its parent (its task then waits for it)."""
        (request,) = prepare_start(
            child,
            child_input,
            queue=task.queue or DEFAULT_QUEUE,
            priority=task.priority,
            what=f"the child input that step {_where(task)!r} returned",
        )
        self.log.info(
            "step %s of run %s started child run %s of workflow %r", _where(task), task.run_id,
            request.run.id, child.name, extra=_extra(task),
        )  # fmt: skip
        return ChildStarted(
            task, replace(request, parent_run_id=task.run_id, parent_task_id=task.id)
        )

    def child_ended(self, task: ClaimedTask, child: str) -> Outcome:
        """A subflow task woken by its child's end: the step's outcome is the child's."""
        ended = task.child if isinstance(task.child, dict) else {}
        status = ended.get("status")
        if status == RunStatus.COMPLETED.value:
            return Completed(task, dumps(ended.get("output"), what="a child run's output"))
        error = ended.get("error") or {}
        why = f": {error.get('type')}: {error.get('message')}" if error.get("type") else ""
        failure = ChildRunFailed(
            f"child run {task.child_run_id} of workflow {child!r} is {status or 'gone'}{why}"
        )
        return self.failed(task, failure, orchestration.GiveUp("the child run did not complete"))

    def failed(
        self,
        task: ClaimedTask,
        exc: BaseException,
        verdict: orchestration.Verdict,
        *,
        began: float | None = None,
    ) -> Failed:
        """The failed attempt's outcome; ``began``: when its step was called (time.time())."""
        error = AttemptError.from_exception(
            exc,
            step=task.step,
            attempt=task.attempt,
            task_index=task.task_index,
            instance_id=self.instance_id,
            started_at=None if began is None else _iso(began),
            finished_at=_iso(time.time()),
        )
        where = error.where
        if isinstance(verdict, orchestration.GiveUp):
            why = "" if verdict.why is None else f"; {verdict.why}"
            self.log.error(
                "step %s of run %s failed for good (attempt %d of %d%s): %s: %s",
                where, task.run_id, task.attempt, task.max_attempts, why, error.type,
                error.message,
                extra={"run_id": task.run_id, "step": task.step, "attempt": task.attempt},
            )  # fmt: skip
        else:
            self.log.warning(
                "step %s of run %s failed (attempt %d of %d), retrying in %.3g s: %s: %s",
                where, task.run_id, task.attempt, task.max_attempts, verdict.delay, error.type,
                error.message,
                extra={"run_id": task.run_id, "step": task.step, "attempt": task.attempt},
            )  # fmt: skip
        return Failed(task, error, verdict)

    def unrecordable(self, outcome: Completed, exc: Exception) -> Failed:
        """The failed attempt that replaces a completion the engine refused to store."""
        task = outcome.task
        error = DatabaseError(f"the output of step {_where(task)!r} could not be stored: {exc}")
        error.__cause__ = exc
        workflow = self.workflow_of(task)
        step = workflow.steps.get(task.step) if workflow is not None else None
        if workflow is None or step is None:
            verdict = orchestration.attempt_failed(
                attempt=task.attempt, max_attempts=task.max_attempts, retryable=False
            )
        else:
            verdict = orchestration.attempt_failed(
                attempt=task.attempt,
                max_attempts=task.max_attempts,
                backoff=resolve_options(workflow, step).backoff,
            )
        return self.failed(task, error, verdict)


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


def _iso(moment: float) -> str:
    """A time.time() as an ISO 8601 instant in UTC."""
    return datetime.fromtimestamp(moment, UTC).isoformat()
