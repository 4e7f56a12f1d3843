"""Cron schedules: when a workflow should be started, and the ticks between two instants.

A schedule is defined in code (``app.schedule(...)`` or ``@app.job(cron=...)``); the leader
instance turns its ticks into runs (see :mod:`pypgflow.leader`). Expressions are parsed by
croniter: five fields (minute resolution), or six with seconds as the sixth field
(``"* * * * * */10"`` = every ten seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from pypgflow.errors import InvalidArgument

#: due_ticks' default limit (the leader applies its own catch-up policy: see pypgflow.leader)
MAX_CATCH_UP = 1
#: where check_cron looks for a first tick (any fixed instant would do: a cron that ever fires
#: fires again within croniter's search window, a few decades)
_PROBE_FROM = datetime(2000, 1, 1, tzinfo=UTC)


def check_cron(expression: str) -> str:
    """``expression`` if croniter accepts it, else InvalidArgument naming the problem."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidArgument(f"a cron expression must be a non-empty string, got {expression!r}")
    fields = expression.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(expression):
        raise InvalidArgument(
            f"invalid cron expression {expression!r}: use five fields (minute hour day month "
            "weekday), or six with seconds last"
        )
    try:  # a date no month has ("0 0 31 2 *") parses, but would raise at every leader's pass
        croniter(expression, _PROBE_FROM).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidArgument(
            f"cron expression {expression!r} never fires: no date matches its day and month"
        ) from None
    return expression


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidArgument(
            f"unknown time zone {name!r} (use an IANA name like 'UTC' or 'Europe/Paris')"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """Start ``workflow`` with ``input`` at every tick of ``cron`` in ``timezone``."""

    name: str
    cron: str
    workflow: str
    input_json: str
    queue: str = "default"
    priority: int = 0
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 200:
            raise InvalidArgument(f"a schedule name must be 1 to 200 characters, got {self.name!r}")
        check_cron(self.cron)
        check_timezone(self.timezone)

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (an aware datetime), in UTC."""
        zone = check_timezone(self.timezone)
        start = after.astimezone(zone)
        tick: datetime = croniter(self.cron, start).get_next(datetime)
        return tick.astimezone(UTC)

    def due_ticks(
        self, last: datetime, now: datetime, *, limit: int = MAX_CATCH_UP
    ) -> list[datetime]:
        """Ticks in ``(last, now]``, oldest first: at most the latest ``limit`` of them, so that a
        long outage starts one catch-up run rather than a storm."""
        zone = check_timezone(self.timezone)
        cursor = croniter(self.cron, (now + timedelta(microseconds=1)).astimezone(zone))
        ticks: list[datetime] = []
        while len(ticks) < limit:
            tick: datetime = cursor.get_prev(datetime).astimezone(UTC)
            if tick <= last:
                break
            ticks.append(tick)
        return ticks[::-1]

    def idempotency_key(self, tick: datetime) -> str:
        """The key that makes a tick's run unique in the database, whoever starts it."""
        return f"pypgflow:cron:{self.name}:{tick.astimezone(UTC).isoformat()}"

    def to_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cron": self.cron,
            "workflow": self.workflow,
            "input": self.input_json,
            "queue": self.queue,
            "priority": self.priority,
            "timezone": self.timezone,
        }
