"""The storage interface every engine implements, in domain verbs.

An engine stores runs, steps and tasks and hands out claimable tasks; it does not decide what a
completion or a failure means: :mod:`pypgflow.orchestration` does, the same for every engine.
The App and the worker talk to engines only through this interface.

Why one module: the interface is meant to be read in one sitting, every verb beside the records
it takes and gives (claimed tasks, outcomes, rescues), as one contract for every engine. What it
is given to start runs has two shapes, and a module of its own: :mod:`pypgflow.engines.starts`.
"""

from __future__ import annotations

import abc
import asyncio
import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pypgflow.cron import Schedule
from pypgflow.engines.starts import StartRequest
from pypgflow.errors import AttemptError, NotSupported
from pypgflow.insight import (
    Failures,
    FleetGauges,
    QueueDepth,
    RunCount,
    RunFilter,
    RunPage,
    TaskInfo,
    Throughput,
    WorkflowStats,
)
from pypgflow.limits import Admission, Gate, GateRequest
from pypgflow.orchestration import Verdict
from pypgflow.records import InstanceInfo, RunInfo, ScheduleInfo
from pypgflow.status import RunStatus

#: where a retention pass has got to, as its engine notes it (None: at the start). PostgreSQL
#: keeps, per status, the creation time of the newest run deleted, so that each batch reads on
#: from there instead of over the index entries of the runs deleted before it (dead until a
#: VACUUM): a pass costs what it deletes, not the square of it.
PrunePosition = Any


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
    #: the outputs of its step's dependencies, by step name
    dependency_outputs: Mapping[str, Any]
    #: the run was still pending when the task was claimed: its worker marks it running if
    #: the step runs long (see pypgflow.worker), else its outcome does
    run_pending: bool = False
    #: the workflow version its run started on (None for runs stored before versions)
    version: str | None = None
    #: the trace context its run was started in, as stored (untrusted: parsed with care)
    trace_context: str | None = None
    #: its run's priority (a child run of a subflow step gets it)
    priority: int = 0
    #: the child run a subflow task waited for, now finished (None: none started yet), and how
    #: it ended: ``{"status", "output", "error"}`` as stored
    child_run_id: str | None = None
    child: Any = None
    #: the queue it was claimed from
    queue: str = ""
    #: the fleet-wide limits it passed (set by the worker once admitted: see pypgflow.limits),
    #: and when (the worker's monotonic clock)
    gates: tuple[Gate, ...] = ()
    admitted_at: float = 0.0

    def gated(
        self, gates: tuple[Gate, ...] | None = None, admitted_at: float | None = None
    ) -> ClaimedTask:
        """This task with its gates, or the time they admitted it, set: a copy made without
        ``__init__`` (``dataclasses.replace`` costs twice as much, on the way from a gate's
        room to the next step's start)."""
        task = copy.copy(self)
        if gates is not None:
            object.__setattr__(task, "gates", gates)
        if admitted_at is not None:
            object.__setattr__(task, "admitted_at", admitted_at)
        return task


@dataclass(frozen=True)
class Completed:
    """A completed attempt and its output; ``skipped``: the step's ``when=`` was false (its
    output is then ``null``)."""

    task: ClaimedTask
    output: str  # JSON text
    skipped: bool = False


@dataclass(frozen=True)
class Failed:
    """A failed attempt, and what orchestration decided it means."""

    task: ClaimedTask
    error: AttemptError
    verdict: Verdict


@dataclass(frozen=True)
class Began:
    """A step that has been running for a while: its run, if still pending, is running now
    (the claim does not write runs; a step's outcome would say so only when it ends)."""

    task: ClaimedTask


@dataclass(frozen=True)
class ChildStarted:
    """A subflow step's function returned its child's input: the child run (``child``, built
    with the parent's ids) is started, and the task waits for it, holding no slot."""

    task: ClaimedTask
    child: StartRequest


Outcome = Completed | Failed | Began | ChildStarted


@dataclass(frozen=True)
class FinishedRun:
    """A run a transaction finished: completed, failed or cancelled (for events)."""

    run_id: str
    workflow: str
    queue: str
    status: RunStatus
    error: AttemptError | None = None
    #: the trace context its run was started in, where the outcome that finished it says
    trace_context: str | None = None


def _none_finished() -> list[FinishedRun]:
    return []


@dataclass
class FinishResult:
    """What a batch of outcomes changed, for the worker: which queues got new work, and (worked
    out only when asked, for events) which runs it finished."""

    accepted: int = 0
    queues_with_new_work: set[str] = field(default_factory=set)
    finished_runs: Callable[[], list[FinishedRun]] = _none_finished


@dataclass(frozen=True)
class RunResult:
    """What waiting for a run needs: its status, and its output or why it failed."""

    status: RunStatus
    output: Any
    error: AttemptError | None


@dataclass(frozen=True)
class RescuedTask:
    """An attempt of a lost instance rescued: queued again, or ``failed`` for good."""

    run_id: str
    workflow: str
    step: str
    task_index: int | None
    attempt: int
    queue: str
    lost_instance: str | None
    error: AttemptError
    failed: bool = False


@dataclass(frozen=True)
class RescueResult:
    """What a rescue changed: tasks of lost instances queued again, tasks failed for good (their
    runs failed), the runs touched, and the queues that got work back; each task rescued, and
    the runs it finished (for events)."""

    requeued: int = 0
    failed: int = 0
    runs: list[str] = field(default_factory=list)
    queues: frozenset[str] = frozenset()
    rescued: tuple[RescuedTask, ...] = ()
    finished: tuple[FinishedRun, ...] = ()


class Engine(abc.ABC):
    """Stores runs and hands out their tasks. One instance is shared by every thread of an App."""

    #: the engine can start a run inside a caller's own database transaction
    supports_transactional_start: bool = False

    @property
    def schema_ready(self) -> bool:
        """Whether this engine has already found its schema migrated (known without a round
        trip; False until it has looked)."""
        return False

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
        if connection is not None:
            return await self._start_runs_on_async_connection(requests, connection)
        return await asyncio.to_thread(self.start_runs, requests)

    async def _start_runs_on_async_connection(
        self, requests: Sequence[StartRequest], connection: Any
    ) -> list[str]:
        raise NotSupported(f"{type(self).__name__} cannot start runs on a caller's connection")

    @abc.abstractmethod
    def claim_tasks(
        self,
        queue: str,
        limit: int,
        *,
        instance_id: str,
        workflows: Sequence[str],
        versions: Sequence[str] | None = None,
    ) -> list[ClaimedTask]:
        """Claim up to ``limit`` due tasks of ``queue`` for ``workflows``: priority, due time, age.
        ``versions`` (``"name@version"``): the workflow versions the claimer has the code of; a
        task of another version stays queued (None: any version; runs stored before versions
        have none and go to any claimer of their workflow).
        Only the tasks are written: a pending run is marked running by its first outcome (a
        :class:`Began` note for a step that runs long)."""

    @abc.abstractmethod
    def finish_tasks(self, outcomes: Sequence[Outcome]) -> FinishResult:
        """Record a batch of outcomes in one transaction, with everything they cause."""

    @abc.abstractmethod
    def release_tasks(self, task_ids: Sequence[int], *, instance_id: str) -> int:
        """Hand running tasks back to the queue without counting the interrupted attempt."""

    @abc.abstractmethod
    def release_unheld_tasks(self, instance_id: str, *, keep: Sequence[int]) -> int:
        """After a claim of ``instance_id`` whose answer was lost (it may have committed): hand
        back, without counting their attempt, the tasks running for it but those in ``keep``
        (what it holds): that claim took them and nobody runs them. Returns how many."""

    @abc.abstractmethod
    def still_running(self, task_ids: Sequence[int]) -> set[int]:
        """Of these tasks, the ones still running (the others were cancelled)."""

    @abc.abstractmethod
    def next_due_in(
        self,
        queues: Sequence[str],
        workflows: Sequence[str],
        versions: Sequence[str] | None = None,
    ) -> float | None:
        """Seconds until the next queued task of these queues (of these workflows and versions,
        as claim_tasks takes them) is due (<= 0: now), None if none."""

    @abc.abstractmethod
    def store_definitions(self, blueprints: Sequence[Mapping[str, Any]]) -> None:
        """Store these workflow versions' blueprints (see pypgflow.blueprints), replacing the
        ones stored under the same name and version."""

    @abc.abstractmethod
    def stored_definitions(self, workflow: str | None = None) -> list[dict[str, Any]]:
        """The stored blueprints of ``workflow`` (None: of every workflow), the most recently
        stored first."""

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
    def admit(
        self, requests: Sequence[GateRequest], *, finished: Collection[int] = ()
    ) -> Admission:
        """Admit these claimed tasks through their gates, in order (see pypgflow.limits), in
        one transaction holding the gates' locks: those admitted hold their gates; the others
        are queued again, their attempt not counted, waiting for the gate that was full.
        ``finished``: tasks of the caller whose steps have returned, their outcomes not yet
        recorded; they still hold their gates for everyone else, not for this admission (a
        limit counts executions, and theirs are over)."""

    @abc.abstractmethod
    def prune_rate_tokens(self, windows: Mapping[str, float]) -> int:
        """Delete the tokens of these rate limits (by name) older than their window in seconds,
        whatever their key; how many (retention: keys no longer admitted keep none)."""

    @abc.abstractmethod
    def send_signal(self, run_id: str, name: str, data: str) -> str | None:
        """Send the signal ``name`` (``data``: JSON text) to an unfinished run: the wait step
        waiting for it completes with the data (its name is returned), or, if none waits for it
        yet, it is kept for the first that reaches it (None). RunNotFound, RunFinished."""

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

    def runs_still_going(self, run_ids: Collection[str]) -> set[str]:
        """Of these runs, those not finished yet (pending or running); a run that does not
        exist is not going. (A read per run here; SQL engines read them all in one statement.)"""
        going = set()
        for run_id in run_ids:
            result = self.run_result(run_id)
            if result is not None and not result.status.finished:
                going.add(run_id)
        return going

    @abc.abstractmethod
    def register_instance(
        self,
        instance_id: str,
        *,
        hostname: str,
        pid: int,
        queues: dict[str, int],
        versions: Sequence[str] = (),
    ) -> None:
        """Register (or register again) a worker instance: its queues and the workflow
        versions (``name@version``) it runs."""

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

    def listen_finished(self, on_finished: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``on_finished(run_id)`` when a run finishes (completed, failed or cancelled, by
        any process), and ``on_finished("")`` when runs may have finished unannounced (the
        listener just (re)connected, another process committed something): then whoever waits
        checks. Returns a stop function, or None when this engine cannot (waiters then poll).
        Announcements are hints, never the only way to learn of a finish: waiters re-check."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    # -- rescue ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def rescue_tasks(self, *, stale_after: float, max_rescues: int, rescuer: str) -> RescueResult:
        """Make the tasks held by lost instances claimable again, exactly once.

        A task is lost when it is running for an instance whose heartbeat is older than
        ``stale_after`` seconds, or that has no registration at all (``rescuer``'s own tasks
        are left to it: a live worker knows what it holds). It goes back to its queue
        (its attempt stays counted, ``rescues`` + 1, a ``WorkerLost`` entry in its errors), in
        its place (its due time kept), or fails for good, failing its run, when it has no
        attempts left or when it has now been running alone on more than ``max_rescues`` lost
        workers (``PoisonPill``; see :func:`pypgflow.orchestration.task_lost`). ``rescuer``
        names the instance that noticed."""

    @abc.abstractmethod
    def hand_back_lost_tasks(
        self,
        instance_id: str,
        *,
        keep: Sequence[int],
        max_rescues: int,
        reason: str,
        worker_died: bool = True,
    ) -> RescueResult:
        """Rescue, as :meth:`rescue_tasks` does, the tasks still running for ``instance_id``
        itself but for those in ``keep``: the ones it abandoned while cut off from the database,
        claimed by a claim whose answer it never got, or held by an earlier process of the same
        instance id. ``reason`` says what happened; ``worker_died=False`` when the instance
        gave them up alive (no loss is charged to their steps)."""

    @abc.abstractmethod
    def heartbeat_or_register(
        self,
        instance_id: str,
        *,
        hostname: str,
        pid: int,
        queues: dict[str, int],
        load: int,
        versions: Sequence[str] = (),
    ) -> bool:
        """Heartbeat; register the instance again if its row is gone. True if it had to."""

    # -- leadership, schedules, retention ---------------------------------------------------

    @abc.abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Hold the lease ``name`` for ``ttl`` seconds of database time from now: granted if nobody
        holds it, if its holder's lease expired (a takeover), or if ``holder`` holds it already
        (then extended). False while another holder's lease runs."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str) -> bool:
        """Give up the lease if ``holder`` holds it, so that another can take it at once."""

    @abc.abstractmethod
    def lease_holder(self, name: str) -> tuple[str, float] | None:
        """Who holds the lease and for how many more seconds; None if nobody (or it expired)."""

    @abc.abstractmethod
    def sync_schedules(self, schedules: Sequence[Schedule], next_ticks: Sequence[datetime]) -> None:
        """Insert or update these schedules' definitions, each with its next tick (stored when it
        is new or its cron or time zone changed); their last ticks are kept. ``defined_at``
        changes only when a definition does."""

    @abc.abstractmethod
    def schedule_states(self) -> dict[str, ScheduleState]:
        """Every stored schedule's state, by name."""

    @abc.abstractmethod
    def record_schedule_ticks(self, ticks: Sequence[ScheduleTicks]) -> None:
        """Record the latest tick turned into a run (never moving it back) and the next tick."""

    @abc.abstractmethod
    def list_schedules(self) -> list[ScheduleInfo]:
        """Every stored schedule, by name."""

    @abc.abstractmethod
    def delete_schedule(self, name: str) -> bool:
        """Delete a stored schedule; False if there was none of that name."""

    @abc.abstractmethod
    def prune_runs(
        self,
        *,
        completed_before: float,
        failed_before: float,
        batch: int,
        after: PrunePosition = None,
    ) -> tuple[int, PrunePosition]:
        """Delete, in one transaction, up to ``batch`` runs that finished more than
        ``completed_before`` seconds ago (completed or cancelled) or ``failed_before`` seconds ago
        (failed), with their tasks; return how many, and where the next batch of the same pass
        starts. Call again, passing that position as ``after``, until fewer than ``batch`` are
        deleted; a new pass starts with ``after=None``."""

    @abc.abstractmethod
    def prune_instances(self, *, offline_for: float) -> int:
        """Delete instances whose last heartbeat is more than ``offline_for`` seconds old."""

    # -- the operators' reads (the dashboard's; bounded whatever the number of runs) -----------
    # Not abstract: an engine without them still runs workflows; the SQL engines have them all
    # (pypgflow.engines.insight).

    def find_runs(self, where: RunFilter, *, limit: int, cursor: str | None = None) -> RunPage:
        """A page of runs matching ``where``, newest first, after ``cursor`` (keyset)."""
        raise NotSupported(f"{type(self).__name__} cannot find runs by filters")

    def run_ids_with_prefix(self, prefix: str, *, limit: int) -> list[str]:
        """Up to ``limit`` run ids starting with ``prefix`` (hex digits), in order."""
        raise NotSupported(f"{type(self).__name__} cannot find runs by the start of their id")

    def run_tasks(self, run_id: str, *, limit: int = 1000) -> list[TaskInfo]:
        """A run's tasks with every attempt's error, in the order they were made."""
        raise NotSupported(f"{type(self).__name__} cannot list a run's tasks")

    def run_task_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """How many of a run's tasks are in each state, by step (all of them)."""
        raise NotSupported(f"{type(self).__name__} cannot count a run's tasks")

    def failures(self, *, window: int = 2000) -> Failures:
        """The most recent failed runs grouped by workflow, step and error type."""
        raise NotSupported(f"{type(self).__name__} cannot group failures")

    def failed_runs_in_group(
        self, workflow: str, step: str, error_type: str, *, window: int = 2000
    ) -> list[str]:
        """The ids of one failure group's runs, among the most recent failed runs."""
        raise NotSupported(f"{type(self).__name__} cannot group failures")

    def workflow_names(self) -> list[str]:
        """Every workflow that has runs."""
        raise NotSupported(f"{type(self).__name__} cannot list workflows")

    def workflow_stats(
        self, workflow: str, *, recent: int = 200, sample: int = 50
    ) -> WorkflowStats:
        """A workflow's recent outcomes, step durations and stored graph."""
        raise NotSupported(f"{type(self).__name__} cannot summarize workflows")

    def throughput(self, *, since: datetime, bucket_seconds: int, cap: int = 5000) -> Throughput:
        """Runs created since ``since`` by time bucket, workflow, queue and status."""
        raise NotSupported(f"{type(self).__name__} cannot measure throughput")

    def queue_depths(self, *, cap: int = 10_000) -> list[QueueDepth]:
        """Every active queue's backlog, running tasks and lag."""
        raise NotSupported(f"{type(self).__name__} cannot measure queues")

    def fleet_gauges(self, *, stale_after: float, cap: int = 10_000) -> FleetGauges:
        """Every active queue's depth and the instances by state, in one round trip."""
        raise NotSupported(f"{type(self).__name__} cannot measure the fleet")

    def run_counts(self, *, cap: int = 10_000) -> dict[RunStatus, RunCount]:
        """Runs by status, exact up to ``cap``, estimated beyond where the engine can."""
        raise NotSupported(f"{type(self).__name__} cannot count runs")


@dataclass(frozen=True)
class ScheduleState:
    """What the leader needs of a stored schedule: its last tick turned into a run, the next tick
    it recorded, and when its definition was stored (ticks of a new schedule count from then)."""

    name: str
    last_tick_at: datetime | None
    next_tick_at: datetime | None
    defined_at: datetime


@dataclass(frozen=True)
class ScheduleTicks:
    """A schedule's progress to record: the latest tick just turned into a run (None if none)
    and the next tick due."""

    name: str
    last_tick_at: datetime | None
    next_tick_at: datetime
