"""The verbs of a fleet of worker instances, shared by the SQL engines: instances registering
and heartbeating, the rescue of tasks whose instance was lost, the leader lease, cron schedules
and retention.

:class:`FleetVerbs` is a base class of :class:`pypgflow.engines.sql.SqlEngine`; like the rest
of it, it binds parameters to each engine's named statements and decodes their rows through the
engine's hooks (:class:`pypgflow.engines.sqlbase.SqlBase`). Instants travel as unix epoch
seconds (float8 / REAL), the same for every engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pypgflow import orchestration
from pypgflow.cron import Schedule
from pypgflow.engines.base import (
    PrunePosition,
    RescuedTask,
    RescueResult,
    ScheduleState,
    ScheduleTicks,
)
from pypgflow.engines.sqlbase import C, Row, SqlBase, finished_runs
from pypgflow.errors import AttemptError
from pypgflow.orchestration import Changes, RunState
from pypgflow.records import InstanceInfo, ScheduleInfo
from pypgflow.status import RunStatus

#: at most this many lost tasks are rescued per transaction (the next heartbeat takes the rest)
_RESCUE_BATCH = 500


class FleetVerbs(SqlBase[C]):
    """Instances, rescue, leadership, schedules and retention, over the engine's statements."""

    # -- instances ------------------------------------------------------------------------------

    def register_instance(
        self,
        instance_id: str,
        *,
        hostname: str,
        pid: int,
        queues: dict[str, int],
        versions: Sequence[str] = (),
    ) -> None:
        with self._write() as conn:
            self._execute(
                conn, "upsert_instance", _instance_row(instance_id, hostname, pid, queues, versions)
            )

    def heartbeat_instance(self, instance_id: str, *, load: int) -> None:
        with self._write() as conn:
            self._execute(conn, "heartbeat_instance", {"id": instance_id, "load": load})

    def deregister_instance(self, instance_id: str) -> None:
        with self._write() as conn:
            self._execute(conn, "delete_instance", {"id": instance_id})

    def list_instances(self, *, stale_after: float) -> list[InstanceInfo]:
        with self._read() as conn:
            rows = self._fetch(conn, "list_instances")
        return [
            InstanceInfo(
                instance_id=row[0],
                hostname=row[1],
                pid=row[2],
                status="offline" if float(row[7]) > stale_after else "online",
                queues=dict(self._json(row[3])),
                load=row[4],
                started_at=self._time(row[5]),
                heartbeat_at=self._time(row[6]),
                versions=tuple(self._json(row[8])),
            )
            for row in rows
        ]

    # -- rescue ---------------------------------------------------------------------------------

    def rescue_tasks(self, *, stale_after: float, max_rescues: int, rescuer: str) -> RescueResult:
        params: dict[str, Any] = {"stale_after": float(stale_after), "rescuer": rescuer}
        # A cheap read first: every instance calls this at every heartbeat, and there is
        # almost never anything to rescue (on SQLite, a write transaction would queue behind
        # every writer of the file).
        with self._read() as conn:
            rows = self._fetch(conn, "lost_tasks_exist", params)
        if not rows or not rows[0][0]:
            return RescueResult()
        with self._write() as conn:
            lost = [
                self._lost_task(row)
                for row in self._fetch(conn, "lost_tasks", {**params, "limit": _RESCUE_BATCH})
            ]
            result = self._rescue(
                conn,
                lost,
                max_rescues=max_rescues,
                stale_after=float(stale_after),
                how=lambda t: _lost_by_silence(t, stale_after, rescuer),
            )
        self._cancel_children({r.run_id for r in result.finished if r.status is RunStatus.FAILED})
        return result

    def hand_back_lost_tasks(
        self,
        instance_id: str,
        *,
        keep: Sequence[int],
        max_rescues: int,
        reason: str,
        worker_died: bool = True,
    ) -> RescueResult:
        with self._write() as conn:
            lost = [
                self._lost_task(row, worker_died=worker_died)
                for row in self._fetch(
                    conn,
                    "own_running_tasks",
                    {"instance_id": instance_id, "keep": self._ids(sorted(keep))},
                )
            ]
            result = self._rescue(
                conn,
                lost,
                max_rescues=max_rescues,
                stale_after=None,
                how=lambda t: f"{reason}; handed back by {instance_id!r} itself",
            )
        self._cancel_children({r.run_id for r in result.finished if r.status is RunStatus.FAILED})
        return result

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
        with self._write() as conn:
            if self._fetch(conn, "touch_instance", {"id": instance_id, "load": load}):
                return False
            self._execute(
                conn, "upsert_instance", _instance_row(instance_id, hostname, pid, queues, versions)
            )
            return True

    def _lost_task(self, row: Row, *, worker_died: bool = True) -> orchestration.LostTask:
        (task_id, run_id, step, index, attempt, max_attempts, rescues, instance_id, queue,
         heartbeat_at, silent_for, lone_losses, together) = row  # fmt: skip
        return orchestration.LostTask(
            id=task_id,
            run_id=run_id,
            step=step,
            task_index=index,
            attempt=attempt,
            max_attempts=max_attempts,
            rescues=rescues,
            instance_id=instance_id,
            queue=queue,
            last_seen=self._optional_time(heartbeat_at),
            silent_for=None if silent_for is None else float(silent_for),
            lone_losses=lone_losses,
            together=together,
            worker_died=worker_died,
        )

    def _rescue(
        self,
        conn: C,
        lost: list[orchestration.LostTask],
        *,
        max_rescues: int,
        stale_after: float | None,
        how: Callable[[orchestration.LostTask], str],
    ) -> RescueResult:
        """Store what orchestration decides of each lost task (queued again, or failed for
        good), under their runs' locks. Every update is guarded by the running attempt and
        instance seen, so that two rescuers racing (or a rescuer racing the instance's own
        outcome) change each task once."""
        if not lost:
            return RescueResult()
        runs = self._lock_runs(conn, {t.run_id for t in lost})
        requeue: list[dict[str, Any]] = []
        fail: list[dict[str, Any]] = []
        errors: dict[int, AttemptError] = {}
        for task in lost:
            loss = orchestration.task_lost(task, how=how(task), max_rescues=max_rescues)
            errors[task.id] = loss.error
            row = {
                "id": task.id,
                "attempt": task.attempt,
                "instance_id": task.instance_id,
                "error": self._error_text(loss.error),
                "charged": int(loss.charged),
            }
            (requeue if isinstance(loss.verdict, orchestration.Retry) else fail).append(row)
        guard = {"stale_after": stale_after}
        run_ids: set[str] = set()
        queues: set[str] = set()
        by_id = {task.id: task for task in lost}
        rescued: list[RescuedTask] = []
        requeued = 0
        if requeue:
            rows = self._fetch(conn, "requeue_lost_tasks", {**self._batch(requeue), **guard})
            requeued = len(rows)
            run_ids.update(row[1] for row in rows)
            queues.update(row[2] for row in rows)
            rescued += [_rescued(by_id[row[0]], runs, errors, failed=False) for row in rows]
        failed: list[orchestration.TaskFailedForGood] = []
        if fail:
            rows = self._fetch(conn, "fail_lost_tasks", {**self._batch(fail), **guard})
            failed = [
                orchestration.TaskFailedForGood(run_id, step, index, errors[task_id])
                for task_id, run_id, step, index, _attempt in rows
            ]
            run_ids.update(f.run_id for f in failed)
            rescued += [_rescued(by_id[row[0]], runs, errors, failed=True) for row in rows]
        changes = Changes()
        orchestration.tasks_failed(runs, failed, changes)
        self._apply(conn, changes)
        self._notify(conn, queues)
        return RescueResult(
            requeued=requeued,
            failed=len(failed),
            runs=sorted(run_ids),
            queues=frozenset(queues | changes.queues_with_new_work),
            rescued=tuple(rescued),
            finished=tuple(finished_runs(changes)),
        )

    # -- leadership, schedules, retention -------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        with self._write() as conn:
            rows = self._fetch(
                conn, "acquire_lease", {"name": name, "holder": holder, "ttl": float(ttl)}
            )
        return bool(rows)

    def release_lease(self, name: str, holder: str) -> bool:
        with self._write() as conn:
            rows = self._fetch(conn, "release_lease", {"name": name, "holder": holder})
        return bool(rows)

    def lease_holder(self, name: str) -> tuple[str, float] | None:
        with self._read() as conn:
            rows = self._fetch(conn, "lease_holder", {"name": name})
        if not rows:
            return None
        return str(rows[0][0]), float(rows[0][1])

    def sync_schedules(self, schedules: Sequence[Schedule], next_ticks: Sequence[datetime]) -> None:
        if not schedules:
            return
        rows = [
            {**s.to_row(), "next_tick_at": tick.timestamp()}
            for s, tick in sorted(zip(schedules, next_ticks, strict=True), key=lambda p: p[0].name)
        ]
        with self._write() as conn:
            self._execute(conn, "upsert_schedules", self._batch(rows))

    def schedule_states(self) -> dict[str, ScheduleState]:
        with self._read() as conn:
            rows = self._fetch(conn, "schedule_states")
        return {
            name: ScheduleState(
                name=name,
                last_tick_at=self._optional_time(last),
                next_tick_at=self._optional_time(next_tick),
                defined_at=self._time(defined),
            )
            for name, last, next_tick, defined in rows
        }

    def record_schedule_ticks(self, ticks: Sequence[ScheduleTicks]) -> None:
        if not ticks:
            return
        rows = [
            {
                "name": t.name,
                "last_tick_at": None if t.last_tick_at is None else t.last_tick_at.timestamp(),
                "next_tick_at": t.next_tick_at.timestamp(),
            }
            for t in sorted(ticks, key=lambda t: t.name)
        ]
        with self._write() as conn:
            self._execute(conn, "record_schedule_ticks", self._batch(rows))

    def list_schedules(self) -> list[ScheduleInfo]:
        with self._read() as conn:
            rows = self._fetch(conn, "list_schedules")
        return [
            ScheduleInfo(
                name=row[0],
                cron=row[1],
                workflow=row[2],
                queue=row[3],
                priority=row[4],
                timezone=row[5],
                last_tick_at=self._optional_time(row[6]),
                next_tick_at=self._optional_time(row[7]),
                input=self._json(row[8]),
            )
            for row in rows
        ]

    def delete_schedule(self, name: str) -> bool:
        with self._write() as conn:
            return bool(self._fetch(conn, "delete_schedule", {"name": name}))

    def prune_runs(
        self,
        *,
        completed_before: float,
        failed_before: float,
        batch: int,
        after: PrunePosition = None,
    ) -> tuple[int, PrunePosition]:
        position: dict[str, Any] = dict(after or {})
        with self._write() as conn:
            self._plan_prune(conn)
            rows = self._fetch(
                conn,
                "prune_runs",
                {
                    "completed_before": float(completed_before),
                    "failed_before": float(failed_before),
                    "batch": int(batch),
                    **{f"{status}_after": position.get(status) for status in _PRUNED},
                },
            )
            if rows:  # their tasks go with them
                doomed = self._ids(r[0] for r in rows)
                self._execute(conn, "delete_tasks_of_runs", {"ids": doomed})
                self._execute(conn, "delete_signals_of_runs", {"ids": doomed})
                self._execute(conn, "delete_gate_holders_of_runs", {"ids": doomed})
        for _, status, created_at in rows:
            if position.get(status) is None or created_at > position[status]:
                position[status] = created_at
        return len(rows), position

    def _plan_prune(self, conn: C) -> None:
        """Make the prune statement's plan read each status in index order, whatever the
        statistics say, where the engine's planner needs telling (PostgreSQL)."""

    def prune_instances(self, *, offline_for: float) -> int:
        with self._write() as conn:
            rows = self._fetch(conn, "prune_instances", {"offline_for": float(offline_for)})
        return len(rows)


#: the statuses retention deletes, each read from where the pass got to (see PrunePosition)
_PRUNED = ("completed", "cancelled", "failed")


def _lost_by_silence(task: orchestration.LostTask, stale_after: float, rescuer: str) -> str:
    """How a task was lost, for its WorkerLost error: when its instance was last seen."""
    if task.last_seen is None:
        seen = "it is not registered (it stopped, crashed before registering, or was removed)"
    else:
        seen = (
            f"last seen at {task.last_seen.isoformat(timespec='milliseconds')}, "
            f"{task.silent_for or 0.0:.1f} s before this rescue (stale after {stale_after:g} s)"
        )
    return f"{seen}; rescued by {rescuer!r}"


def _rescued(
    task: orchestration.LostTask,
    runs: dict[str, RunState],
    errors: dict[int, AttemptError],
    *,
    failed: bool,
) -> RescuedTask:
    """A lost task the rescue changed, as its record (for the rescuer's events)."""
    run = runs.get(task.run_id)
    return RescuedTask(
        run_id=task.run_id,
        workflow=run.workflow if run is not None else "",
        step=task.step,
        task_index=task.task_index,
        attempt=task.attempt,
        queue=task.queue,
        lost_instance=task.instance_id,
        error=errors[task.id],
        failed=failed,
    )


def _instance_row(
    instance_id: str, hostname: str, pid: int, queues: dict[str, int], versions: Sequence[str]
) -> dict[str, Any]:
    """The parameters of upsert_instance."""
    return {
        "id": instance_id,
        "hostname": hostname,
        "pid": pid,
        "queues": json.dumps(queues),
        "versions": json.dumps(sorted(versions)),
    }
