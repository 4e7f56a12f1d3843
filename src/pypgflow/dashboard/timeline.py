"""A run's attempts as a waterfall: one row per task, time running left to right.

Tasks store when they were made, their first claim (``started_at``), when their latest attempt
was due (``run_at``: a retry's failure plus its backoff) and their last finish; each failed
attempt's error holds when its worker called the step and when it failed. So a row shows the
wait in the queue before the first claim, each failed attempt where it ran and the backoff after
it, and the latest attempt from its due time to its finish (or to now, while it runs); a task
queued for a retry shows its backoff ahead, to its due time. When an earlier attempt has no
times (lost with its worker, or stored before errors had them), the earlier attempts and their
backoff are drawn as one hatched stretch up to the latest attempt's due time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pypgflow.errors import AttemptError
from pypgflow.insight import TaskInfo
from pypgflow.records import RunInfo
from pypgflow.status import TaskStatus

LABEL_WIDTH = 170
CHART_WIDTH = 640
ROW_HEIGHT = 22
AXIS_HEIGHT = 22
#: tasks drawn at most (a map step may have thousands of elements)
MAX_ROWS = 60


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    #: a CSS class: wait, earlier, backoff, or the task's status
    kind: str
    title: str


@dataclass(frozen=True)
class Row:
    label: str
    y: int
    segments: list[Segment]
    attempts: int
    status: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Waterfall:
    width: int
    height: int
    rows: list[Row]
    ticks: list[Tick]
    hidden: int


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def waterfall(
    run: RunInfo, tasks: Sequence[TaskInfo], now: datetime, task_count: int | None = None
) -> Waterfall:
    """The rows of ``run``'s tasks, scaled from the run's creation to its end (or now);
    ``task_count``: how many tasks the run has, when ``tasks`` are only the first of them."""
    start = run.created_at
    end_candidates = [run.finished_at or now]
    for task in tasks:
        end_candidates += [m for m in (task.finished_at, task.run_at) if m is not None]
    end = max(end_candidates)
    total = max((end - start).total_seconds(), 0.001)

    def x(moment: datetime) -> float:
        seconds = (moment - start).total_seconds()
        return LABEL_WIDTH + max(0.0, min(1.0, seconds / total)) * CHART_WIDTH

    def segment(a: datetime, b: datetime, kind: str, title: str) -> Segment | None:
        if b <= a:
            return None
        left = x(a)
        return Segment(
            left, max(1.5, x(b) - left), kind, f"{title}: {_span((b - a).total_seconds())}"
        )

    rows = []
    for index, task in enumerate(tasks[:MAX_ROWS]):
        label = task.step if task.task_index is None else f"{task.step}[{task.task_index}]"
        first = task.started_at
        parts: list[Segment | None] = [segment(task.created_at, first or now, "wait", "queued")]
        finish = task.finished_at or (now if task.status is TaskStatus.RUNNING else None)
        timed = _timed_attempts(task)
        if first is not None and timed is not None:
            parts += _exact(task, timed, finish, now, segment)
        elif first is not None:
            parts += _estimated(task, first, finish, now, segment)
        rows.append(
            Row(
                label=label,
                y=AXIS_HEIGHT + index * ROW_HEIGHT,
                segments=[p for p in parts if p is not None],
                attempts=task.attempt,
                status=task.status.value,
            )
        )
    ticks = [Tick(LABEL_WIDTH + CHART_WIDTH * i / 4, "+" + _span(total * i / 4)) for i in range(5)]
    return Waterfall(
        width=LABEL_WIDTH + CHART_WIDTH + 40,
        height=AXIS_HEIGHT + len(rows) * ROW_HEIGHT + 6,
        rows=rows,
        ticks=ticks,
        hidden=max(0, max(task_count or 0, len(tasks)) - min(len(tasks), MAX_ROWS)),
    )


SegmentOf = Callable[[datetime, datetime, str, str], "Segment | None"]


def _timed_attempts(task: TaskInfo) -> list[tuple[AttemptError, datetime, datetime]] | None:
    """The task's failed attempts with the times their worker recorded, oldest first, if every
    one of them has both (None: an attempt lost with its worker, or stored before the times
    were, leaves the drawing to estimates)."""
    timed = []
    for error in sorted(task.errors, key=lambda e: e.attempt):
        if error.started_at is None or error.finished_at is None:
            return None
        timed.append(
            (
                error,
                datetime.fromisoformat(error.started_at),
                datetime.fromisoformat(error.finished_at),
            )
        )
    return timed


def _exact(
    task: TaskInfo,
    timed: list[tuple[AttemptError, datetime, datetime]],
    finish: datetime | None,
    now: datetime,
    segment: SegmentOf,
) -> list[Segment | None]:
    """Each failed attempt where it ran, the backoff after it, and the latest attempt from its
    due time (its queue wait is the only part not recorded)."""
    parts: list[Segment | None] = []
    for i, (error, began, ended) in enumerate(timed):
        parts.append(segment(began, ended, "failed", f"attempt {error.attempt}: {error.type}"))
        if i + 1 < len(timed):
            parts.append(segment(ended, timed[i + 1][1], "backoff", "backoff"))
    last_end = timed[-1][2] if timed else None
    if task.status is TaskStatus.QUEUED and last_end is not None:  # waiting for its retry
        parts.append(segment(last_end, task.run_at, "backoff", "backoff until the next attempt"))
    elif task.status is not TaskStatus.FAILED or not timed or timed[-1][0].attempt < task.attempt:
        latest = max(task.run_at, last_end) if last_end is not None else task.started_at or now
        if last_end is not None:
            parts.append(segment(last_end, latest, "backoff", "backoff"))
        if finish is not None:
            parts.append(segment(latest, finish, task.status.value, f"attempt {task.attempt}"))
    return parts


def _estimated(
    task: TaskInfo, first: datetime, finish: datetime | None, now: datetime, segment: SegmentOf
) -> list[Segment | None]:
    """Earlier attempts and their backoff as one stretch from the first claim, the latest
    attempt from its due time."""
    if task.status is TaskStatus.QUEUED:  # waiting for a retry (or handed back)
        return [
            segment(first, min(now, task.run_at), "earlier", "attempts so far"),
            segment(now, task.run_at, "backoff", "backoff until the next attempt"),
        ]
    parts: list[Segment | None] = []
    latest = task.run_at if task.attempt > 1 and task.run_at > first else first
    if latest > first:
        parts.append(
            segment(first, latest, "earlier", f"attempts 1-{task.attempt - 1} and backoff")
        )
    if finish is not None:
        parts.append(segment(latest, finish, task.status.value, f"attempt {task.attempt}"))
    return parts
