"""What queries return: plain, immutable snapshots of runs, steps, instances and schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pypgflow.errors import AttemptError
from pypgflow.limits import describe_gate
from pypgflow.status import RunStatus, StepStatus

#: a wait step without a timeout is due (to time out) thousands of years from now: a due time
#: from this year on means "no timeout"
NO_TIMEOUT_YEAR = 4000


@dataclass(frozen=True)
class StepInfo:
    """One step of a run. ``attempts`` counts attempts started (for a map step, the most any
    element took); ``errors`` holds every failed attempt's error, oldest first."""

    name: str
    status: StepStatus
    attempts: int
    output: Any
    error: AttemptError | None
    started_at: datetime | None
    finished_at: datetime | None
    instance_id: str | None
    depends_on: tuple[str, ...] = ()
    is_map: bool = False
    task_count: int | None = None
    errors: tuple[AttemptError, ...] = ()
    #: a wait step's signal (``Workflow.wait_for``); None for other steps
    signal: str | None = None
    #: when its queued task is due: a delayed step's start, a wait step's timeout (None: no
    #: task queued)
    due_at: datetime | None = None
    #: since when its task is queued (for a wait step: since when it waits for its signal)
    queued_since: datetime | None = None
    #: a subflow step's child runs (one per element for a map over a subflow), in order
    child_run_ids: tuple[str, ...] = ()
    #: the fleet-wide limit (its gate's key, see pypgflow.limits) its queued task waits for
    gate_wait: str | None = None

    @property
    def waiting_for(self) -> str | None:
        """What this step waits for, in words, while it waits: its signal, or its start delay
        (``None`` when it is not waiting)."""
        if self.status is not StepStatus.READY or self.due_at is None:
            return None
        if self.signal is not None:
            if self.due_at.year >= NO_TIMEOUT_YEAR:
                return f"signal {self.signal!r} (no timeout)"
            return f"signal {self.signal!r} (times out at {self.due_at.isoformat()})"
        if self.gate_wait is not None:
            return describe_gate(self.gate_wait)
        if self.child_run_ids and self.due_at.year >= NO_TIMEOUT_YEAR:
            if len(self.child_run_ids) == 1:
                return f"its child run {self.child_run_ids[0]}"
            return f"its {len(self.child_run_ids)} child runs"
        if self.due_at > datetime.now(UTC):
            what = "its retry" if self.attempts else "its start"
            return f"{what}, due at {self.due_at.isoformat()}"
        return None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class RunInfo:
    """A run as stored. ``steps`` is filled by ``App.get_run`` (empty in ``list_runs``)."""

    id: str
    workflow: str
    status: RunStatus
    input: Any
    output: Any
    #: why a failed run failed: the error of its step's last attempt (without the traceback,
    #: which stays with the step's attempts, ``steps[n].errors``)
    error: AttemptError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue: str = "default"
    priority: int = 0
    scheduled_at: datetime | None = None
    idempotency_key: str | None = None
    steps: tuple[StepInfo, ...] = field(default_factory=tuple)
    #: the version of its workflow the run started on (None for runs stored before versions)
    version: str | None = None
    #: unfinished, and no live worker runs its workflow's version: it waits for one (a deploy
    #: under way, or the workers of an old version gone). Set by App.get_run.
    waiting_for_version: bool = False
    #: the run this one was forked from (``App.fork``); set by get_run only
    forked_from: str | None = None
    #: a child run's parent (``Workflow.subflow``); set by get_run only
    parent_run_id: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class InstanceInfo:
    """A worker process, as registered. ``load`` is how many steps it is executing."""

    instance_id: str
    hostname: str
    pid: int
    status: str  # "online", or "offline" once its heartbeat is older than the stale threshold
    queues: dict[str, int]
    load: int
    started_at: datetime
    heartbeat_at: datetime
    leader: bool = False  # holds the leader lease (App.instances fills it in)
    #: the workflow versions it runs ("name@version")
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleInfo:
    """A cron schedule as stored: its definition (synced by the workers that define it), its last
    tick turned into a run and the next one due (maintained by the leader), in UTC."""

    name: str
    cron: str
    workflow: str
    queue: str
    priority: int
    timezone: str
    last_tick_at: datetime | None
    next_tick_at: datetime | None
    input: Any = None
