"""Every exception pypgflow raises, under one root: :class:`PypgflowError`.

Each class's docstring is its default message, so ``raise RunNotFound()`` still says something useful.
Driver errors are wrapped (``raise ... from exc``) so callers catch pypgflow's classes, never psycopg's
or sqlite3's.
"""

from __future__ import annotations

import traceback as traceback_module
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from pypgflow.defaults import MAX_DELAY


class PypgflowError(Exception):
    """pypgflow failed."""

    def __init__(self, message: str | None = None) -> None:
        if message is None:
            message = (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgument(PypgflowError, ValueError):
    """An argument passed to pypgflow is invalid."""


class WorkflowDefinitionError(PypgflowError):
    """The workflow definition is invalid."""


class SerializationError(PypgflowError, TypeError):
    """A value cannot be stored: step inputs and outputs must be JSON."""


class StepTimeout(PypgflowError, TimeoutError):
    """A step ran past its timeout.

    Also a ``TimeoutError``, so that ``retry_on=(TimeoutError,)`` retries a step's timeouts."""

    def __init__(self, message: str | None = None, *, step: str = "", timeout: float = 0.0) -> None:
        super().__init__(message)
        self.step = step
        self.timeout = timeout


class NonRetryable(PypgflowError):
    """The step failed, and no retry can change that: raise it (or a subclass of it) from a step
    to fail the step at once, whatever attempts remain (a card declined, a record that does not
    exist). Under ``execute(retry="workflow")`` it ends the workflow at once too."""


class SignalTimeout(NonRetryable, TimeoutError):
    """A wait step's timeout passed before its signal came (see ``Workflow.wait_for``): the step
    fails for good, and its dependents do not run."""


class ChildRunFailed(NonRetryable):
    """The child run of a subflow step (``Workflow.subflow``) failed or was cancelled: the step
    fails for good with it (resume the parent, ``App.retry``, to start a new child)."""


class RetryAfter(PypgflowError):
    """Retry this step after ``seconds`` rather than after the backoff's delay: raise it from a
    step, e.g. with the ``Retry-After`` of a rate-limited API's answer. The attempt counts
    against ``max_attempts`` as any failed attempt does."""

    def __init__(self, seconds: float | timedelta, message: str | None = None) -> None:
        delay = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay <= MAX_DELAY
        ):
            raise InvalidArgument(
                f"RetryAfter takes a number of seconds from 0 to {MAX_DELAY:.0f} (100 years) or "
                f"a timedelta, got {seconds!r}"
            )
        super().__init__(message or f"retry after {delay:g} s")
        self.delay = float(delay)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.delay, self.message))


@dataclass(frozen=True)
class AttemptError:
    """What went wrong in one attempt of one step: kept for every attempt, in order."""

    step: str
    attempt: int
    type: str
    message: str
    traceback: str
    task_index: int | None = None
    #: the worker instance that ran the attempt (durable runs only)
    instance_id: str | None = None
    #: a lost attempt (:class:`WorkerLost`): when its instance last heartbeated (ISO 8601; None
    #: if it was not registered), and how many workers this task has lost so far
    last_seen: str | None = None
    lost_workers: int | None = None
    #: when the attempt's step function was called and when it failed, by its worker's clock
    #: (ISO 8601; durable runs only, None for an attempt lost with its worker)
    started_at: str | None = None
    finished_at: str | None = None

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        step: str,
        attempt: int,
        task_index: int | None = None,
        instance_id: str | None = None,
        started_at: str | None = None,
        finished_at: str | None = None,
    ) -> AttemptError:
        return cls(
            step=step,
            attempt=attempt,
            type=type(exc).__qualname__,
            message=str(exc),
            traceback="".join(traceback_module.format_exception(exc)),
            task_index=task_index,
            instance_id=instance_id,
            started_at=started_at,
            finished_at=finished_at,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptError:
        """The record of a stored error (older rows named a run's final attempt ``attempts``)."""
        lost_workers = data.get("lost_workers")
        return cls(
            step=str(data.get("step", "")),
            attempt=int(data.get("attempt", data.get("attempts", 0)) or 0),
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
            task_index=data.get("task_index"),
            instance_id=data.get("instance_id"),
            last_seen=data.get("last_seen"),
            lost_workers=None if lost_workers is None else int(lost_workers),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form: JSON values, without the fields a kind of error does not use."""
        data = asdict(self)
        for optional in ("last_seen", "lost_workers", "started_at", "finished_at"):
            if data[optional] is None:
                del data[optional]
        return data

    @property
    def where(self) -> str:
        """The step, with the element index for a map step: ``resize[3]``."""
        return self.step if self.task_index is None else f"{self.step}[{self.task_index}]"


class WorkflowFailed(PypgflowError):
    """The workflow failed after its last attempt."""

    def __init__(
        self,
        message: str | None = None,
        *,
        workflow: str = "",
        step: str = "",
        attempts: int = 0,
        errors: list[AttemptError] | tuple[AttemptError, ...] = (),
        run_id: str | None = None,
    ) -> None:
        errors = tuple(errors)
        if message is None and errors:
            last = errors[-1]
            message = (
                f"workflow {workflow!r} failed at step {last.where!r} after {attempts} "
                f"attempt{'s' if attempts != 1 else ''}: {last.type}: {last.message}"
            )
        # First, so that StepTimeout.__init__ (next in WorkflowTimedOut's MRO) cannot reset `step`.
        super().__init__(message)
        self.workflow = workflow
        self.step = step
        self.attempts = attempts
        self.errors: tuple[AttemptError, ...] = errors
        self.run_id = run_id


class WorkflowTimedOut(WorkflowFailed, StepTimeout):
    """The workflow failed because its last attempt ran past a step's timeout.

    It is both a :class:`WorkflowFailed` (with every attempt's error) and a :class:`StepTimeout`,
    so callers may catch either.
    """

    def __init__(self, failure: WorkflowFailed, timeout: StepTimeout) -> None:
        WorkflowFailed.__init__(
            self,
            failure.message,
            workflow=failure.workflow,
            step=failure.step,
            attempts=failure.attempts,
            errors=failure.errors,
            run_id=failure.run_id,
        )
        self.timeout = timeout.timeout

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call WorkflowTimedOut(message) on unpickling, which needs two arguments.
        return (_restore_exception, (type(self), self.args, self.__dict__))


def _restore_exception(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class RunCancelled(PypgflowError):
    """The run was cancelled."""

    def __init__(self, message: str | None = None, *, run_id: str | None = None) -> None:
        super().__init__(message or (f"run {run_id} was cancelled" if run_id else None))
        self.run_id = run_id


class ResultTimeout(PypgflowError, TimeoutError):
    """The run did not finish in time."""


class IdempotencyConflict(PypgflowError):
    """The idempotency key is held by a run of the same workflow started with another input."""


class RunNotFound(PypgflowError, LookupError):
    """No run has that id."""


class RunFinished(PypgflowError):
    """The run has finished (completed, failed or cancelled): it takes no more signals."""


class AmbiguousRunId(InvalidArgument):
    """The start of a run id given for a run is the start of several."""


class UnknownWorkflow(PypgflowError, LookupError):
    """No workflow of that name is registered with this app."""


class ConfigurationError(PypgflowError):
    """pypgflow is not configured correctly."""


class DatabaseError(PypgflowError):
    """The database failed."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""


class SchemaNotMigrated(DatabaseError):
    """The pypgflow schema is missing or out of date: run `pypgflow migrate` (or app.migrate())."""


class NotSupported(PypgflowError):
    """This engine does not support that feature."""


# -- what a failed step's stored error can say, besides the step's own exception ---------------
# Their names are the ``type`` of the stored :class:`AttemptError`.


class MapInputError(PypgflowError, TypeError):
    """A map step was given something other than a list."""


class WorkerLost(PypgflowError):
    """The worker running the step was lost: killed, cut off from the database, or stopped
    without handing the step back."""


class PoisonPill(WorkerLost):
    """More than ``max_rescues`` workers were lost while running the step alone (nothing else
    lost with it): it fails for good rather than take down every worker in turn."""


# -- raised by the workflow templates (pypgflow.templates) -------------------------------------


class HTTPStatusError(PypgflowError):
    """An HTTP answer that is not a success, worth another attempt (a 5xx, a 408, a 429 that
    named no delay): retried with the step's backoff. ``status`` is the answer's code."""

    def __init__(self, message: str | None = None, *, status: int = 0) -> None:
        super().__init__(message or (f"HTTP {status}" if status else None))
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_exception, (type(self), self.args, self.__dict__))


class RequestRejected(HTTPStatusError, NonRetryable):
    """An HTTP answer that no retry can change (a 4xx other than 408 and 429: a bad request, a
    missing page, a refused credential): the step fails at once."""


class SagaFailed(NonRetryable):
    """A saga's action failed for good; the compensations of the actions it had completed ran,
    in reverse order. ``action`` names the action that failed, ``compensated`` the actions
    undone (in the order they were undone)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        action: str = "",
        compensated: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(message)
        self.action = action
        self.compensated = tuple(compensated)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_exception, (type(self), self.args, self.__dict__))
