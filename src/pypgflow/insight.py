"""What the operators' reads return: the records behind the dashboard and its HTTP API.

They answer an on-call engineer's questions over a large database in bounded time: a page of
runs found by filters and a cursor, a run's tasks and their attempts, failures grouped by where
and why they happened, each workflow's recent health, throughput over time and the queues'
depth. Each record says when it is bounded (a scan window, a capped count, an estimate), so that
what shows it can say so too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pypgflow import defaults
from pypgflow.errors import AttemptError, InvalidArgument
from pypgflow.records import RunInfo
from pypgflow.serialization import check_text
from pypgflow.status import RunStatus, TaskStatus


@dataclass(frozen=True)
class RunFilter:
    """Which runs to find: every filter given must match (none given: every run)."""

    statuses: tuple[RunStatus, ...] = ()
    workflow: str | None = None
    queue: str | None = None
    #: text looked for in the input and the output (case-insensitive)
    search: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: the version of its workflow a run started on
    version: str | None = None

    def __post_init__(self) -> None:
        for name in ("workflow", "queue", "search", "version"):
            value = getattr(self, name)
            if value is not None:
                check_text(value, name)

    @property
    def scans(self) -> bool:
        """Whether a filter is checked on the runs read rather than by an index (queue, search,
        version): such a page reads a bounded window of runs, and may come back short."""
        return bool(self.queue or self.search or self.version)


def check_limit(limit: int) -> int:
    """``limit`` if it is a whole number of rows a listing may ask for, else InvalidArgument."""
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= defaults.MAX_LIST_LIMIT
    ):
        raise InvalidArgument(
            f"limit must be an integer from 1 to {defaults.MAX_LIST_LIMIT}, got {limit!r}"
        )
    return limit


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest first, and the cursor of the next page (None: no more).

    ``window_full``: the filters that no index serves were checked on a window of ``scanned``
    runs, and runs older than the window may match too: the cursor goes on from its end."""

    runs: list[RunInfo]
    next_cursor: str | None
    scanned: int = 0
    window_full: bool = False


@dataclass(frozen=True)
class TaskInfo:
    """One task of a run (a step, or one element of a map step) with every failed attempt's
    error. Tasks store the first claim (``started_at``), when the latest attempt was due
    (``run_at``: after a retry, the failure plus its backoff) and the last finish."""

    id: int
    step: str
    task_index: int | None
    status: TaskStatus
    attempt: int
    max_attempts: int
    rescues: int
    instance_id: str | None
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    errors: tuple[AttemptError, ...] = ()


@dataclass(frozen=True)
class FailureGroup:
    """Failed runs that failed the same way: same workflow, same step, same kind of error."""

    workflow: str
    step: str
    error_type: str
    count: int
    last_failed_at: datetime | None
    #: the latest failure's message and run
    message: str
    run_id: str


@dataclass(frozen=True)
class Failures:
    """The failure groups of the ``scanned`` most recent failed runs (``window_full``: there
    may be older ones)."""

    groups: list[FailureGroup]
    scanned: int
    window_full: bool


@dataclass(frozen=True)
class StepDurations:
    """How long a step took in a workflow's recent completed runs, in seconds."""

    step: str
    count: int
    p50: float
    p95: float


@dataclass(frozen=True)
class WorkflowStats:
    """A workflow's recent health: the outcomes of its ``finished`` newest finished runs, the
    durations of its steps over a sample of its newest completed runs, and its graph as its
    newest run stored it (``steps``: by name, with ``depends_on``, ``is_map``, ``task_count``)."""

    workflow: str
    completed: int
    failed: int
    cancelled: int
    durations: list[StepDurations] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def success_rate(self) -> float | None:
        """Completed among completed and failed (cancellations are no verdict), None if none."""
        judged = self.completed + self.failed
        return None if judged == 0 else self.completed / judged


@dataclass(frozen=True)
class ThroughputRow:
    """How many runs of one workflow and queue, created in one time bucket, are in a status."""

    bucket_start: datetime
    workflow: str
    queue: str
    status: RunStatus
    count: int


@dataclass(frozen=True)
class Throughput:
    """Runs created since ``since``, by bucket of ``bucket_seconds``; ``capped``: the window
    held more runs of some status than were read (the oldest are left out)."""

    since: datetime
    bucket_seconds: int
    rows: list[ThroughputRow]
    capped: bool


@dataclass(frozen=True)
class QueueDepth:
    """A queue's backlog: tasks queued and due (counted up to a cap), queued for later (a delay
    or a retry's backoff), running, and how long the oldest due task has waited (its lag)."""

    queue: str
    due: int
    delayed: int
    running: int
    lag: float | None
    capped: bool = False


@dataclass(frozen=True)
class FleetGauges:
    """What a metrics scrape shows of the whole database: every active queue's depth, and the
    registered instances by state (``online``, ``offline``)."""

    queues: list[QueueDepth]
    instances: dict[str, int]


@dataclass(frozen=True)
class RunCount:
    """How many runs are in a status: exact, at least ``value`` (``capped``), or ``estimated``
    from the database's statistics where counting would read them all."""

    value: int
    capped: bool = False
    estimated: bool = False
