"""The run page's timeline: each failed attempt drawn where its worker ran it, with the backoff
after it; estimates only where an attempt has no times (lost with its worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from pypgflow.dashboard import timeline
from pypgflow.errors import AttemptError
from pypgflow.insight import TaskInfo
from pypgflow.status import TaskStatus

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def failure(
    attempt: int, began: float | None, ended: float | None, kind: str = "ValueError"
) -> AttemptError:
    return AttemptError(
        step="charge",
        attempt=attempt,
        type=kind,
        message="no",
        traceback="",
        started_at=None if began is None else at(began).isoformat(),
        finished_at=None if ended is None else at(ended).isoformat(),
    )


def task(
    status: TaskStatus, attempt: int, run_at: float, finished: float | None, *errors: AttemptError
) -> TaskInfo:
    return TaskInfo(
        id=1, step="charge", task_index=None, status=status, attempt=attempt, max_attempts=5,
        rescues=0, instance_id="w1", created_at=at(0), run_at=at(run_at), started_at=at(1),
        finished_at=None if finished is None else at(finished), errors=errors,
    )  # fmt: skip


def drawn(one: TaskInfo, now: float = 100.0) -> list[tuple[str, float, float]]:
    """(kind, start, end) of each segment, in seconds from T0 (the chart spans 0 to 100 s)."""
    run: Any = SimpleNamespace(created_at=at(0), finished_at=at(100))
    (row,) = timeline.waterfall(run, [one], at(now)).rows
    scale = 100 / timeline.CHART_WIDTH

    def seconds(x: float) -> float:
        return round((x - timeline.LABEL_WIDTH) * scale, 1)

    return [(s.kind, seconds(s.x), seconds(s.x + s.width)) for s in row.segments]


def test_failed_attempts_are_drawn_where_they_ran_with_their_backoff() -> None:
    # attempt 1 ran 1-3 s, attempt 2 ran 10-12 s, attempt 3 was due at 30 s and completed at 40 s
    done = task(TaskStatus.COMPLETED, 3, 30, 40, failure(1, 1, 3), failure(2, 10, 12))
    assert drawn(done) == [
        ("wait", 0.0, 1.0),
        ("failed", 1.0, 3.0),
        ("backoff", 3.0, 10.0),
        ("failed", 10.0, 12.0),
        ("backoff", 12.0, 30.0),
        ("completed", 30.0, 40.0),
    ]


def test_a_task_waiting_for_its_retry_shows_the_backoff_ahead() -> None:
    waiting = task(TaskStatus.QUEUED, 1, 60, None, failure(1, 1, 5))
    assert drawn(waiting, now=20) == [
        ("wait", 0.0, 1.0),
        ("failed", 1.0, 5.0),
        ("backoff", 5.0, 60.0),
    ]


def test_a_task_failed_for_good_ends_with_its_last_attempt() -> None:
    failed = task(TaskStatus.FAILED, 2, 20, 25, failure(1, 1, 4), failure(2, 20, 25))
    assert drawn(failed) == [
        ("wait", 0.0, 1.0),
        ("failed", 1.0, 4.0),
        ("backoff", 4.0, 20.0),
        ("failed", 20.0, 25.0),
    ]


def test_an_attempt_lost_with_its_worker_leaves_the_earlier_ones_estimated() -> None:
    lost = failure(1, None, None, kind="WorkerLost")
    rescued = task(TaskStatus.COMPLETED, 2, 35, 45, lost)
    assert drawn(rescued) == [
        ("wait", 0.0, 1.0),
        ("earlier", 1.0, 35.0),
        ("completed", 35.0, 45.0),
    ]
