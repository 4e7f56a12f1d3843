"""The storage interface every engine implements, in domain verbs.

An engine stores runs, steps and tasks and hands out claimable tasks; it does not decide what a
completion or a failure means: :mod:`pypgflow.orchestration` does, the same for every engine.
The App and the worker talk to engines only through this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pypgflow.orchestration import Changes, RunState
from pypgflow.records import InstanceInfo, RunInfo
from pypgflow.status import RunStatus


@dataclass(frozen=True)
class StartRequest:
    """A run ready to insert: its state built by orchestration, and when it may start."""

    run: RunState
    changes: Changes
    idempotency_key: str | None = None
    delay: float = 0.0
    run_at: datetime | None = None


@dataclass(frozen=True)
class ClaimedTask:
    """A task a worker now holds: everything needed to call the step function."""

    id: int
    run_id: str
    step: str
    task_index: int | None
    workflow: str
    attempt: int
    max_attempts: int
    input: Any  # the element, for a map step
    run_input: Any
    dependency_outputs: dict[str, Any]


@dataclass(frozen=True)
class Completed:
    task: ClaimedTask
    output: str  # JSON text


@dataclass(frozen=True)
class Failed:
    task: ClaimedTask
    error: dict[str, Any]  # one attempt's error, as stored
    retry_in: float | None  # seconds until the next attempt; None: that was the last one


Outcome = Completed | Failed


@dataclass
class FinishResult:
    """What a batch of outcomes changed, for the worker: which queues got new work."""

    accepted: int = 0
    queues_with_new_work: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RunResult:
    status: RunStatus
    output: Any
    error: dict[str, Any] | None


class Engine(abc.ABC):
    """Stores runs and hands out their tasks. One instance is shared by every thread of an App."""

    #: the engine can start a run inside a caller's own database transaction
    supports_transactional_start: bool = False
    #: the engine wakes workers in other processes when work arrives (else they poll)
    notifies_other_processes: bool = False

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Create or upgrade the schema; return the versions applied (none if up to date)."""

    @abc.abstractmethod
    def check_schema(self) -> None:
        """Raise SchemaNotMigrated unless the schema is installed and current."""

    @abc.abstractmethod
    def start_runs(self, requests: Sequence[StartRequest], connection: Any = None) -> list[str]:
        """Insert runs in one transaction; return each request's run id (an existing run's id
        where its idempotency key was already used)."""

    async def start_runs_async(
        self, requests: Sequence[StartRequest], connection: Any = None
    ) -> list[str]:
        import asyncio

        if connection is not None:
            return await self._start_runs_on_async_connection(requests, connection)
        return await asyncio.to_thread(self.start_runs, requests)

    async def _start_runs_on_async_connection(
        self, requests: Sequence[StartRequest], connection: Any
    ) -> list[str]:
        from pypgflow.errors import NotSupported

        raise NotSupported(f"{type(self).__name__} cannot start runs on a caller's connection")

    @abc.abstractmethod
    def claim_tasks(
        self, queue: str, limit: int, *, instance_id: str, workflows: Sequence[str]
    ) -> list[ClaimedTask]:
        """Claim up to ``limit`` due tasks of ``queue`` for ``workflows``: priority, due time, age.
        Runs whose first task this is are marked running."""

    @abc.abstractmethod
    def finish_tasks(self, outcomes: Sequence[Outcome]) -> FinishResult:
        """Record a batch of outcomes in one transaction, with everything they cause."""

    @abc.abstractmethod
    def release_tasks(self, task_ids: Sequence[int], *, instance_id: str) -> int:
        """Hand running tasks back to the queue without counting the interrupted attempt."""

    @abc.abstractmethod
    def still_running(self, task_ids: Sequence[int]) -> set[int]:
        """Of these tasks, the ones still running (the others were cancelled)."""

    @abc.abstractmethod
    def next_due_in(self, queues: Sequence[str], workflows: Sequence[str]) -> float | None:
        """Seconds until the next queued task of these queues is due (<= 0: now), None if none."""

    @abc.abstractmethod
    def unknown_workflows_waiting(
        self, queues: Sequence[str], workflows: Sequence[str]
    ) -> list[str]:
        """Workflows other than ``workflows`` whose tasks wait in these queues."""

    @abc.abstractmethod
    def cancel_run(self, run_id: str) -> bool:
        """Cancel an unfinished run; False if it had already finished."""

    @abc.abstractmethod
    def resume_run(self, run_id: str) -> bool:
        """Resume a failed or cancelled run from its unfinished steps; False if it was not."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunInfo | None:
        """A run with its steps, or None."""

    @abc.abstractmethod
    def list_runs(
        self, *, status: RunStatus | None, workflow: str | None, limit: int
    ) -> list[RunInfo]:
        """Runs, newest first, without their steps."""

    @abc.abstractmethod
    def run_result(self, run_id: str) -> RunResult | None:
        """A run's status, output and error, or None if there is no such run."""

    @abc.abstractmethod
    def register_instance(
        self, instance_id: str, *, hostname: str, pid: int, queues: dict[str, int]
    ) -> None: ...

    @abc.abstractmethod
    def heartbeat_instance(self, instance_id: str, *, load: int) -> None: ...

    @abc.abstractmethod
    def deregister_instance(self, instance_id: str) -> None: ...

    @abc.abstractmethod
    def list_instances(self, *, stale_after: float) -> list[InstanceInfo]: ...

    def listen(self, on_work: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``on_work(queue)`` when another process adds work; returns a stop function, or
        None when this engine cannot (workers then poll)."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""
