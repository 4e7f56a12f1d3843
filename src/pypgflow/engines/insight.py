"""InsightVerbs: the operators' reads, shared by the SQL engines (the dashboard's and its API's).

Every read here is bounded, whatever the size of the database: lists are read through an index
in their order and stop after a page (keyset pagination: the cursor is the position of the last
run shown, never an offset); a filter no index serves (queue, text search) is checked on a
window of the newest runs the indexes give; counts stop at a cap, and PostgreSQL estimates from
its statistics what it would have to read in full. The statements are in each engine's
``queries.sql`` (the section "operators' reads"), under the same names.

:class:`InsightVerbs` is a base class of :class:`pypgflow.engines.sql.SqlEngine`; instants
travel as each engine's timestamps (``_instant``), so that a cursor is exact.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pypgflow.engines.sqlbase import C, Row, SqlBase, canonical_run_id
from pypgflow.errors import AttemptError, InvalidArgument
from pypgflow.ids import prefix_bounds
from pypgflow.insight import (
    FailureGroup,
    Failures,
    FleetGauges,
    QueueDepth,
    RunCount,
    RunFilter,
    RunPage,
    StepDurations,
    TaskInfo,
    Throughput,
    ThroughputRow,
    WorkflowStats,
    check_limit,
)
from pypgflow.records import RunInfo, StepInfo
from pypgflow.status import RunStatus, TaskStatus

#: runs read to check the filters no index serves (queue, search), per page
SCAN_WINDOW = 2000
_NIL_ID = "00000000-0000-0000-0000-000000000000"
_MAX_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"
_STATUSES = tuple(s.value for s in RunStatus)


class InsightVerbs(SqlBase[C]):
    """Pages of runs, run ids by prefix, a run's tasks, failure groups, workflow health,
    throughput, queue depth."""

    # -- what each engine provides --------------------------------------------------------------

    #: the engine reads a page with a start of its time range by statements of their own
    #: (``find_runs_since``, ``find_runs_of_workflow_since``): PostgreSQL, whose backward scan
    #: would not stop at a row comparison's start; SQLite's statements stop there already
    _pages_since_apart: bool = False

    @abc.abstractmethod
    def _instant(self, moment: datetime) -> Any:
        """A moment as the engine's timestamp parameter (PostgreSQL: timestamptz; SQLite: epoch
        seconds)."""

    @abc.abstractmethod
    def _run_info(self, row: Row, steps: Sequence[StepInfo]) -> RunInfo:
        """A get_run-shaped row, as its record (SqlEngine's)."""

    def _estimated_run_counts(self, conn: C) -> dict[str, int]:
        """Runs by status as the database's statistics estimate them; none by default."""
        return {}

    def _bound(self, value: Any) -> Any:
        """A cursor's stored instant back as a parameter: an ISO string (PostgreSQL's
        timestamps, exact to the microsecond) or epoch seconds (SQLite's REAL, exact as a
        float)."""
        return datetime.fromisoformat(value) if isinstance(value, str) else float(value)

    # -- runs ---------------------------------------------------------------------------------

    def find_runs(self, where: RunFilter, *, limit: int, cursor: str | None = None) -> RunPage:
        """A page of runs matching ``where``, newest first, after ``cursor`` (a page's
        ``next_cursor``)."""
        check_limit(limit)
        infinity = datetime.max.replace(tzinfo=UTC)
        # [created_after, created_before): the start is in the range, the end is not
        hi_at: Any = self._instant(where.created_before or infinity)
        hi_id = _NIL_ID if where.created_before else _MAX_ID
        if cursor is not None:
            at, run_id = decode_cursor(cursor)
            at = self._bound(at)
            if where.created_before is None or at < hi_at:
                hi_at, hi_id = at, run_id
        lo_at = self._instant(where.created_after or datetime.min.replace(tzinfo=UTC))
        statuses = [s.value for s in where.statuses] or list(_STATUSES)
        scan = SCAN_WINDOW if where.scans else limit + 1
        with self._read() as conn:
            rows = self._fetch(
                conn,
                ("find_runs_of_workflow" if where.workflow else "find_runs")
                + ("_since" if where.created_after and self._pages_since_apart else ""),
                {
                    "statuses": self._ids(statuses),
                    "workflow": where.workflow,
                    "queue": where.queue,
                    "version": where.version,
                    "search": where.search.lower() if where.search else None,
                    "lo_at": lo_at,
                    "lo_id": _NIL_ID,
                    "hi_at": hi_at,
                    "hi_id": hi_id,
                    "scan": scan,
                    "limit": limit + 1,
                },
            )
        if not rows:
            return RunPage([], None)
        # the run's columns, then the scan's three, then the run's version
        runs = [self._run_info((*row[:13], row[16]), []) for row in rows if row[0] is not None]
        scanned, edge_at, edge_id = rows[0][13], rows[0][14], rows[0][15]
        if len(runs) > limit:
            last = runs[limit - 1]
            raw_last = next(row[9] for row in rows if row[0] == last.id)
            return RunPage(runs[:limit], encode_cursor(raw_last, last.id), scanned)
        if scanned >= scan:  # the window filled before the page did: go on from its end
            return RunPage(runs, encode_cursor(edge_at, edge_id), scanned, window_full=True)
        return RunPage(runs, None, scanned)

    def run_ids_with_prefix(self, prefix: str, *, limit: int) -> list[str]:
        """Up to ``limit`` run ids that start with ``prefix``, in order (one range of the primary
        key: see :func:`pypgflow.ids.prefix_bounds`)."""
        lo, hi = prefix_bounds(prefix)
        with self._read() as conn:
            rows = self._fetch(conn, "run_ids_by_prefix", {"lo": lo, "hi": hi, "limit": limit})
        return [str(row[0]) for row in rows]

    def run_tasks(self, run_id: str, *, limit: int = 1000) -> list[TaskInfo]:
        """A run's tasks, in the order they were made, with every attempt's error."""
        canonical = canonical_run_id(run_id)
        if canonical is None:
            return []
        with self._read() as conn:
            rows = self._fetch(conn, "run_tasks", {"id": canonical, "limit": limit})
        return [
            TaskInfo(
                id=row[0],
                step=row[1],
                task_index=row[2],
                status=TaskStatus(row[3]),
                attempt=row[4],
                max_attempts=row[5],
                rescues=row[6],
                instance_id=row[7],
                created_at=self._time(row[8]),
                run_at=self._time(row[9]),
                started_at=self._optional_time(row[10]),
                finished_at=self._optional_time(row[11]),
                errors=tuple(AttemptError.from_dict(e) for e in self._json(row[12]) or ()),
            )
            for row in rows
        ]

    def run_task_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """How many tasks of the run are in each state, by step: all of them, where
        ``run_tasks`` reads a page."""
        canonical = canonical_run_id(run_id)
        if canonical is None:
            return {}
        with self._read() as conn:
            rows = self._fetch(conn, "run_task_counts", {"id": canonical})
        counts: dict[str, dict[str, int]] = {}
        for step, status, count in rows:
            counts.setdefault(step, {})[status] = int(count)
        return counts

    # -- failures -------------------------------------------------------------------------------

    def failures(self, *, window: int = 2000) -> Failures:
        """The ``window`` most recent failed runs, grouped by workflow, step and error type."""
        with self._read() as conn:
            rows = self._fetch(conn, "failure_groups", {"window": window})
        groups = [
            FailureGroup(
                workflow=row[0],
                step=row[1] or "",
                error_type=row[2] or "",
                count=row[3],
                last_failed_at=self._optional_time(row[4]),
                message=row[5] or "",
                run_id=row[6],
            )
            for row in rows
        ]
        scanned = rows[0][7] if rows else 0
        return Failures(groups, scanned, window_full=scanned >= window)

    def failed_runs_in_group(
        self, workflow: str, step: str, error_type: str, *, window: int = 2000
    ) -> list[str]:
        """The ids of the failed runs of one failure group, among the ``window`` most recent."""
        with self._read() as conn:
            rows = self._fetch(
                conn,
                "failed_runs_in_group",
                {"workflow": workflow, "step": step, "type": error_type, "window": window},
            )
        return [row[0] for row in rows]

    # -- workflows ------------------------------------------------------------------------------

    def workflow_names(self) -> list[str]:
        """Every workflow that has runs (an index probe per workflow, not a scan)."""
        with self._read() as conn:
            return [row[0] for row in self._fetch(conn, "workflow_names")]

    def workflow_stats(
        self, workflow: str, *, recent: int = 200, sample: int = 50
    ) -> WorkflowStats:
        """The outcomes of the ``recent`` newest finished runs of ``workflow``, its steps'
        durations in its ``sample`` newest completed runs, and its graph as stored."""
        with self._read() as conn:
            outcomes: dict[str, int] = dict(
                self._fetch(conn, "workflow_outcomes", {"workflow": workflow, "recent": recent})
            )
            durations = self._fetch(
                conn, "workflow_step_durations", {"workflow": workflow, "sample": sample}
            )
            shape = self._fetch(conn, "workflow_shape", {"workflow": workflow})
        by_step: dict[str, list[float]] = {}
        for step, seconds in durations:
            if seconds is not None:
                by_step.setdefault(step, []).append(float(seconds))
        steps: dict[str, dict[str, Any]] = dict(self._json(shape[0][0])) if shape else {}
        order = {name: state.get("position", 0) for name, state in steps.items()}
        return WorkflowStats(
            workflow=workflow,
            completed=outcomes.get("completed", 0),
            failed=outcomes.get("failed", 0),
            cancelled=outcomes.get("cancelled", 0),
            durations=[
                StepDurations(name, len(values), percentile(values, 50), percentile(values, 95))
                for name, values in sorted(by_step.items(), key=lambda i: order.get(i[0], 0))
            ],
            steps=steps,
        )

    # -- the fleet's load -----------------------------------------------------------------------

    def throughput(self, *, since: datetime, bucket_seconds: int, cap: int = 5000) -> Throughput:
        """Runs created since ``since`` by bucket, workflow, queue and status (at most ``cap``
        of each status, the newest)."""
        with self._read() as conn:
            rows = self._fetch(
                conn,
                "throughput",
                {"since": self._instant(since), "bucket": bucket_seconds, "cap": cap},
            )
        return Throughput(
            since=since,
            bucket_seconds=bucket_seconds,
            rows=[
                ThroughputRow(
                    bucket_start=datetime.fromtimestamp(int(row[0]) * bucket_seconds, tz=UTC),
                    workflow=row[1],
                    queue=row[2],
                    status=RunStatus(row[3]),
                    count=row[4],
                )
                for row in rows
            ],
            capped=any(row[5] >= cap for row in rows),
        )

    def queue_depths(self, *, cap: int = 10_000) -> list[QueueDepth]:
        """Every queue with queued or running tasks: its backlog, counted up to ``cap``."""
        with self._read() as conn:
            rows = self._fetch(conn, "queue_depths", {"cap": cap})
        return _queue_depths(rows, cap)

    def fleet_gauges(self, *, stale_after: float, cap: int = 10_000) -> FleetGauges:
        """The queues' depths (as :meth:`queue_depths`) and the instances by state, offline
        once silent for ``stale_after`` seconds: two bounded statements sent together (one
        round trip on PostgreSQL), for a metrics scrape."""
        with self._read() as conn:
            with self._batched(conn):
                read_queues = self._submit(conn, "queue_depths", {"cap": cap})
                read_instances = self._submit(
                    conn, "instance_states", {"stale_after": float(stale_after)}
                )
            queues, instances = read_queues(), read_instances()
        states = {"online": 0, "offline": 0}
        states.update((state, int(count)) for state, count in instances)
        return FleetGauges(_queue_depths(queues, cap), states)

    def run_counts(self, *, cap: int = 10_000) -> dict[RunStatus, RunCount]:
        """Runs by status: exact up to ``cap``; beyond it estimated where the engine can."""
        with self._read() as conn:
            counted: dict[str, int] = dict(self._fetch(conn, "run_counts_capped", {"cap": cap}))
            estimates = (
                self._estimated_run_counts(conn) if any(v >= cap for v in counted.values()) else {}
            )
        counts: dict[RunStatus, RunCount] = {}
        for status in RunStatus:
            value = int(counted.get(status.value, 0))
            if value < cap:
                counts[status] = RunCount(value)
            elif status.value in estimates and estimates[status.value] > value:
                counts[status] = RunCount(estimates[status.value], estimated=True)
            else:
                counts[status] = RunCount(value, capped=True)
        return counts


def encode_cursor(created_at: Any, run_id: str) -> str:
    """A page's position as an opaque token: the last run's stored creation instant and id."""
    at = created_at.isoformat() if isinstance(created_at, datetime) else float(created_at)
    text = json.dumps([at, run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    """The position a cursor holds; InvalidArgument for anything :func:`encode_cursor` did not
    make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(at, str):
            datetime.fromisoformat(at)
        elif not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
            raise ValueError(at)
        canonical = canonical_run_id(run_id)
        if canonical is None:
            raise ValueError(run_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            f"invalid cursor {cursor[:40]!r}: pass the next_cursor of a page as it was given"
        ) from None
    return at, canonical


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (linear interpolation, as PostgreSQL's
    percentile_cont)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _queue_depths(rows: Sequence[Row], cap: int) -> list[QueueDepth]:
    """queue_depths' rows, as their records."""
    return [
        QueueDepth(
            queue=row[0],
            due=row[1],
            delayed=row[2],
            running=row[3],
            lag=None if row[4] is None else max(0.0, float(row[4])),
            capped=row[1] >= cap or row[2] >= cap,
        )
        for row in rows
    ]
