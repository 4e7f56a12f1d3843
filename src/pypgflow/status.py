"""The states of runs, steps and tasks, as stored in the database."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is: ``pending`` until a worker claims its first step."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepStatus(StrEnum):
    """``waiting`` for dependencies, ``ready`` once its tasks exist, then a final state:
    ``skipped`` is a step whose ``when=`` condition was false (its dependents run, and receive
    None for it)."""

    WAITING = "waiting"
    READY = "ready"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """Completed or skipped: its dependents may run."""
        return self in (StepStatus.COMPLETED, StepStatus.SKIPPED)


class TaskStatus(StrEnum):
    """A claimable unit of work: one per step, or one per element of a map step."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
