"""A run's attempts as a waterfall: one row per task, time running left to right.

Tasks store when they were made, their first claim (``started_at``), when their latest attempt
was due (``run_at``: a retry's failure plus its backoff) and their last finish, not every
attempt's own times. So a row shows what is known exactly: the wait in the queue before the
first claim, the earlier attempts and their backoff as one hatched stretch up to the latest
attempt's due time, and the latest attempt to its finish (or to now, while it runs); a task
queued for a retry shows its backoff ahead, to its due time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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
        parts: list[Segment | None] = []
        first = task.started_at
        parts.append(segment(task.created_at, first or now, "wait", "queued"))
        finish = task.finished_at or (now if task.status is TaskStatus.RUNNING else None)
        if first is not None:
            if task.status is TaskStatus.QUEUED:  # waiting for a retry (or handed back)
                parts.append(segment(first, min(now, task.run_at), "earlier", "attempts so far"))
                parts.append(segment(now, task.run_at, "backoff", "backoff until the next attempt"))
            else:
                latest = task.run_at if task.attempt > 1 and task.run_at > first else first
                if latest > first:
                    parts.append(
                        segment(
                            first, latest, "earlier", f"attempts 1-{task.attempt - 1} and backoff"
                        )
                    )
                if finish is not None:
                    parts.append(
                        segment(latest, finish, task.status.value, f"attempt {task.attempt}")
                    )
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
