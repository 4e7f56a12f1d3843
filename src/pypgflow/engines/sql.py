"""What the SQL engines share: the transactions that hand run state to orchestration and write
its decisions back, and the simple reads and writes whose statements differ only in dialect.

An engine subclass supplies its connections (``_write``, ``_read``), how it runs a named query
(``_fetch``, ``_execute``), and how it passes lists and batches of rows as parameters (PostgreSQL:
arrays for ``unnest``; SQLite: one JSON array for ``json_each``). The statements themselves stay
in each engine's ``queries.sql``, under the same names.
"""

from __future__ import annotations

import abc
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Generic, TypeVar

from pypgflow import orchestration
from pypgflow.cron import Schedule
from pypgflow.engines.base import (
    Completed,
    Engine,
    Failed,
    FinishResult,
    Outcome,
    RescueResult,
    RunResult,
    ScheduleState,
    ScheduleTicks,
)
from pypgflow.errors import AttemptError, RunNotFound, SchemaNotMigrated
from pypgflow.orchestration import Changes, RunState, StepState
from pypgflow.records import InstanceInfo, ScheduleInfo
from pypgflow.status import RunStatus, StepStatus

logger = logging.getLogger("pypgflow.engine")

C = TypeVar("C")
Row = tuple[Any, ...]


class SqlEngine(Engine, Generic[C]):
    """An engine whose storage is SQL: everything here runs the same named statements."""

    # -- what each engine provides -----------------------------------------------------------

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[C]:
        """A write transaction, committed when the block succeeds."""

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[C]:
        """A connection for reads that see one committed state."""

    @abc.abstractmethod
    def _fetch(self, conn: C, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run the named statement and return its rows."""

    @abc.abstractmethod
    def _execute(self, conn: C, name: str, params: Mapping[str, Any] | None = None) -> None:
        """Run the named statement, which returns no rows."""

    @abc.abstractmethod
    def _ids(self, values: Iterable[Any]) -> Any:
        """A list as one parameter (ids, names, queues)."""

    @abc.abstractmethod
    def _batch(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch of rows as the parameters of a batch statement."""

    @abc.abstractmethod
    def _json(self, value: Any) -> Any:
        """A JSON column's value, decoded."""

    @abc.abstractmethod
    def _time(self, value: Any) -> datetime:
        """A timestamp column's value, as an aware datetime."""

    @abc.abstractmethod
    def _notify(self, conn: C, queues: set[str]) -> None:
        """Announce new work in ``queues`` when the transaction commits."""

    def _error_text(self, error: AttemptError) -> str:
        """An attempt's error as JSON text. Errors are written by pypgflow, not by step code, so
        they are made storable rather than refused (ASCII escapes keep any character of an
        exception message intact); an engine whose JSON type refuses some characters overrides
        this."""
        return json.dumps(error.to_dict(), default=str)

    # -- schema -------------------------------------------------------------------------------

    #: the full current schema, and the numbered migrations ``(version, name, sql)``: set by each
    #: engine from its own files
    _schema_sql: Any
    _migrations: list[tuple[int, str, str]]
    latest_version: int
    _schema_checked: bool

    @abc.abstractmethod
    def _migrating(self) -> AbstractContextManager[C]:
        """A write transaction that no other migration runs alongside."""

    @abc.abstractmethod
    def _run_script(self, conn: C, script: Any) -> None:
        """Run a schema script (several statements) inside the transaction."""

    @abc.abstractmethod
    def _installed_version(self, conn: C) -> int | None:
        """The schema version installed, None if there is no schema at all."""

    @abc.abstractmethod
    def _record(self, conn: C, version: int, name: str) -> None:
        """Record a migration as applied."""

    def migrate(self) -> list[int]:
        """A fresh install runs the full schema; an existing one, the migrations it lacks."""
        applied: list[int] = []
        with self._migrating() as conn:
            current = self._installed_version(conn)
            if current is None:
                self._run_script(conn, self._schema_sql)
                for version, name, _ in self._migrations:
                    self._record(conn, version, name)
                applied = [v for v, _, _ in self._migrations]
            else:
                for version, name, text in self._migrations:
                    if version > current:
                        self._run_script(conn, text)
                        self._record(conn, version, name)
                        applied.append(version)
        self._schema_checked = True
        if applied:
            logger.info("migrated %r to schema version %d", self, self.latest_version)
        return applied

    def migrate_step_by_step(self) -> None:
        """Apply every migration in order, one transaction each (for tests of the migrations)."""
        for version, name, text in self._migrations:
            with self._migrating() as conn:
                current = self._installed_version(conn) or 0
                if version > current:
                    self._run_script(conn, text)
                    self._record(conn, version, name)

    # -- recording outcomes ---------------------------------------------------------------------

    def finish_tasks(self, outcomes: Sequence[Outcome]) -> FinishResult:
        result = FinishResult()
        if not outcomes:
            return result
        completed = [o for o in outcomes if isinstance(o, Completed)]
        failed = [o for o in outcomes if isinstance(o, Failed)]
        retries = [(o, o.verdict) for o in failed if isinstance(o.verdict, orchestration.Retry)]
        finals = [o for o in failed if isinstance(o.verdict, orchestration.GiveUp)]
        with self._write() as conn:
            # Every change to a run's tasks happens under its lock (see lock_runs).
            runs = self._lock_runs(conn, {o.task.run_id for o in outcomes})
            changes = Changes()
            ran: list[str] = []
            if completed:
                outputs = {o.task.id: o.output for o in completed}
                rows = self._fetch(
                    conn,
                    "complete_tasks",
                    self._batch(
                        [
                            {
                                "id": o.task.id,
                                "attempt": o.task.attempt,
                                # a plain step's output is kept on its step, not its task
                                "output": None if o.task.task_index is None else o.output,
                            }
                            for o in completed
                        ]
                    ),
                )
                done = [
                    orchestration.TaskDone(run_id, step, index, outputs[task_id])
                    for task_id, run_id, step, index in rows
                ]
                ran += [d.run_id for d in done]
                orchestration.tasks_completed(runs, done, self._reader(conn), changes)
            if retries:
                rows = self._fetch(
                    conn,
                    "retry_tasks",
                    self._batch(
                        [
                            {
                                "id": o.task.id,
                                "attempt": o.task.attempt,
                                "delay": retry.delay,
                                "error": self._error_text(o.error),
                            }
                            for o, retry in retries
                        ]
                    ),
                )
                ran += [row[0] for row in rows]
            if finals:
                errors = {o.task.id: o.error for o in finals}
                rows = self._fetch(
                    conn,
                    "fail_tasks",
                    self._batch(
                        [
                            {
                                "id": o.task.id,
                                "attempt": o.task.attempt,
                                "error": self._error_text(o.error),
                            }
                            for o in finals
                        ]
                    ),
                )
                given_up = [
                    orchestration.TaskFailedForGood(run_id, step, index, errors[task_id])
                    for task_id, run_id, step, index, _attempt in rows
                ]
                ran += [f.run_id for f in given_up]
                orchestration.tasks_failed(runs, given_up, changes)
            result.accepted = len(ran)
            orchestration.tasks_ran(runs, ran, changes)
            self._apply(conn, changes)
            result.queues_with_new_work = changes.queues_with_new_work
        return result

    def _lock_runs(self, conn: C, run_ids: set[str]) -> dict[str, RunState]:
        """The state of these runs and their steps, locked for the rest of the transaction."""
        if not run_ids:
            return {}
        ids = self._ids(sorted(run_ids))
        runs: dict[str, RunState] = {}
        for run_id, workflow, status, queue, priority, remaining in self._fetch(
            conn, "lock_runs", {"ids": ids}
        ):
            runs[run_id] = RunState(
                id=run_id,
                workflow=workflow,
                status=RunStatus(status),
                queue=queue,
                priority=priority,
                remaining_steps=remaining,
                steps={},
            )
        for row in self._fetch(conn, "run_steps", {"ids": ids}):
            (run_id, name, position, status, depends_on, remaining_deps, max_attempts, is_map,
             map_over, remaining_tasks, task_count) = row  # fmt: skip
            runs[run_id].steps[name] = StepState(
                name=name,
                position=position,
                status=StepStatus(status),
                depends_on=tuple(self._json(depends_on)),
                remaining_deps=remaining_deps,
                max_attempts=max_attempts,
                is_map=bool(is_map),
                map_over=map_over,
                remaining_tasks=remaining_tasks,
                task_count=task_count,
            )
        return runs

    def _apply(self, conn: C, changes: Changes) -> None:
        """Write what orchestration decided: a statement per kind of change, whatever the count."""
        if changes.steps:
            self._execute(
                conn,
                "update_steps",
                self._batch(
                    [
                        {
                            "run_id": run_id,
                            "name": s.name,
                            "status": s.status.value,
                            "remaining_deps": s.remaining_deps,
                            "remaining_tasks": s.remaining_tasks,
                            "task_count": s.task_count,
                            "output": s.output if s.status is StepStatus.COMPLETED else None,
                            "started": s.started or s.status is not StepStatus.WAITING,
                            "finished": s.finished,
                        }
                        for (run_id, _), s in changes.steps.items()
                    ]
                ),
            )
        if changes.new_tasks:
            self._execute(conn, "insert_tasks", self._batch(task_rows(changes.new_tasks)))
        if changes.cancel_tasks_of:
            self._execute(conn, "cancel_tasks_of_runs", {"ids": self._ids(changes.cancel_tasks_of)})
        if changes.requeue_tasks_of:
            self._execute(
                conn,
                "requeue_tasks",
                self._batch(
                    [
                        {"run_id": run_id, "step": step, "budget": budget}
                        for run_id, step, budget in changes.requeue_tasks_of
                    ]
                ),
            )
        if changes.runs:
            self._execute(
                conn,
                "update_runs",
                self._batch(
                    [
                        {
                            "id": r.id,
                            "status": r.status.value,
                            "remaining_steps": r.remaining_steps,
                            "output": r.output,
                            "error": None if r.error is None else self._error_text(r.error),
                        }
                        for r in changes.runs.values()
                    ]
                ),
            )
        self._notify(conn, changes.queues_with_new_work)

    def _reader(self, conn: C) -> orchestration.StateReader:
        return _Reader(self, conn)

    # -- operator verbs -------------------------------------------------------------------------

    def cancel_run(self, run_id: str) -> bool:
        return self._transition(
            run_id, lambda run, reader, changes: orchestration.cancel_run(run, changes)
        )

    def resume_run(self, run_id: str) -> bool:
        return self._transition(run_id, orchestration.resume_run)

    def _transition(
        self,
        run_id: str,
        rule: Callable[[RunState, orchestration.StateReader, Changes], bool],
    ) -> bool:
        canonical = canonical_run_id(run_id)
        if canonical is None:
            raise RunNotFound(f"no run with id {run_id!r} (run ids are UUIDs)")
        with self._write() as conn:
            runs = self._lock_runs(conn, {canonical})
            if canonical not in runs:
                raise RunNotFound(f"no run with id {run_id}")
            changes = Changes()
            changed = rule(runs[canonical], self._reader(conn), changes)
            if changed:
                self._apply(conn, changes)
            return changed

    def release_tasks(self, task_ids: Sequence[int], *, instance_id: str) -> int:
        if not task_ids:
            return 0
        with self._write() as conn:
            rows = self._fetch(
                conn, "release_tasks", {"ids": self._ids(task_ids), "instance_id": instance_id}
            )
            self._notify(conn, {row[0] for row in rows})
        return len(rows)

    # -- reads ----------------------------------------------------------------------------------

    def still_running(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        with self._read() as conn:
            return {
                row[0]
                for row in self._fetch(
                    conn, "running_tasks_still_running", {"ids": self._ids(task_ids)}
                )
            }

    def next_due_in(self, queues: Sequence[str], workflows: Sequence[str]) -> float | None:
        with self._read() as conn:
            rows = self._fetch(
                conn, "next_due", {"queues": self._ids(queues), "workflows": self._ids(workflows)}
            )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def unknown_workflows_waiting(
        self, queues: Sequence[str], workflows: Sequence[str]
    ) -> list[str]:
        with self._read() as conn:
            rows = self._fetch(
                conn,
                "unknown_workflows_waiting",
                {"queues": self._ids(queues), "workflows": self._ids(workflows)},
            )
        return [row[0] for row in rows]

    def run_result(self, run_id: str) -> RunResult | None:
        canonical = canonical_run_id(run_id)
        if canonical is None:
            return None
        with self._read() as conn:
            rows = self._fetch(conn, "run_result", {"id": canonical})
        if not rows:
            return None
        status, output, error = rows[0]
        return RunResult(RunStatus(status), self._json(output), self._stored_error(error))

    def _stored_error(self, value: Any) -> AttemptError | None:
        """A stored error column, as its record."""
        data = self._json(value)
        return None if data is None else AttemptError.from_dict(data)

    # -- instances ------------------------------------------------------------------------------

    def register_instance(
        self, instance_id: str, *, hostname: str, pid: int, queues: dict[str, int]
    ) -> None:
        with self._write() as conn:
            self._execute(
                conn,
                "upsert_instance",
                {"id": instance_id, "hostname": hostname, "pid": pid, "queues": json.dumps(queues)},
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
            return self._rescue(
                conn,
                lost,
                max_rescues=max_rescues,
                stale_after=float(stale_after),
                how=lambda t: _lost_by_silence(t, stale_after, rescuer),
            )

    def hand_back_lost_tasks(
        self, instance_id: str, *, keep: Sequence[int], max_rescues: int, reason: str
    ) -> RescueResult:
        with self._write() as conn:
            lost = [
                self._lost_task(row)
                for row in self._fetch(
                    conn,
                    "own_running_tasks",
                    {"instance_id": instance_id, "keep": self._ids(sorted(keep))},
                )
            ]
            return self._rescue(
                conn,
                lost,
                max_rescues=max_rescues,
                stale_after=None,
                how=lambda t: f"{reason}; handed back by {instance_id!r} itself",
            )

    def heartbeat_or_register(
        self, instance_id: str, *, hostname: str, pid: int, queues: dict[str, int], load: int
    ) -> bool:
        with self._write() as conn:
            if self._fetch(conn, "touch_instance", {"id": instance_id, "load": load}):
                return False
            self._execute(
                conn,
                "upsert_instance",
                {"id": instance_id, "hostname": hostname, "pid": pid, "queues": json.dumps(queues)},
            )
            return True

    def _lost_task(self, row: Row) -> orchestration.LostTask:
        (task_id, run_id, step, index, attempt, max_attempts, rescues, instance_id, queue,
         heartbeat_at, silent_for) = row  # fmt: skip
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
            last_seen=None if heartbeat_at is None else self._time(heartbeat_at),
            silent_for=None if silent_for is None else float(silent_for),
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
            error, verdict = orchestration.task_lost(task, how=how(task), max_rescues=max_rescues)
            errors[task.id] = error
            row = {
                "id": task.id,
                "attempt": task.attempt,
                "instance_id": task.instance_id,
                "error": self._error_text(error),
            }
            (requeue if isinstance(verdict, orchestration.Retry) else fail).append(row)
        guard = {"stale_after": stale_after}
        run_ids: set[str] = set()
        queues: set[str] = set()
        requeued = 0
        if requeue:
            rows = self._fetch(conn, "requeue_lost_tasks", {**self._batch(requeue), **guard})
            requeued = len(rows)
            run_ids.update(row[1] for row in rows)
            queues.update(row[2] for row in rows)
        failed: list[orchestration.TaskFailedForGood] = []
        if fail:
            rows = self._fetch(conn, "fail_lost_tasks", {**self._batch(fail), **guard})
            failed = [
                orchestration.TaskFailedForGood(run_id, step, index, errors[task_id])
                for task_id, run_id, step, index, _attempt in rows
            ]
            run_ids.update(f.run_id for f in failed)
        changes = Changes()
        orchestration.tasks_failed(runs, failed, changes)
        self._apply(conn, changes)
        self._notify(conn, queues)
        return RescueResult(
            requeued=requeued,
            failed=len(failed),
            runs=sorted(run_ids),
            queues=frozenset(queues | changes.queues_with_new_work),
        )

    # -- leadership, schedules, retention ---------------------------------------------------
    # Instants travel as unix epoch seconds (float8 / REAL), the same for every engine.

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
                last_tick_at=None if last is None else self._time(last),
                next_tick_at=None if next_tick is None else self._time(next_tick),
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
                last_tick_at=None if row[6] is None else self._time(row[6]),
                next_tick_at=None if row[7] is None else self._time(row[7]),
                input=self._json(row[8]),
            )
            for row in rows
        ]

    def prune_runs(self, *, completed_before: float, failed_before: float, batch: int) -> int:
        with self._write() as conn:
            rows = self._fetch(
                conn,
                "prune_runs",
                {
                    "completed_before": float(completed_before),
                    "failed_before": float(failed_before),
                    "batch": int(batch),
                },
            )
        return len(rows)

    def prune_instances(self, *, offline_for: float) -> int:
        with self._write() as conn:
            rows = self._fetch(conn, "prune_instances", {"offline_for": float(offline_for)})
        return len(rows)


class _Reader(Generic[C]):
    """Orchestration's reads, inside the engine's transaction."""

    def __init__(self, engine: SqlEngine[C], conn: C) -> None:
        self.engine = engine
        self.conn = conn

    def step_outputs(self, run_id: str, names: Sequence[str]) -> dict[str, str]:
        rows = self.engine._fetch(
            self.conn, "step_outputs", {"run_id": run_id, "names": self.engine._ids(names)}
        )
        return {name: text for name, text in rows}

    def map_outputs(self, run_id: str, step: str) -> list[str]:
        rows = self.engine._fetch(self.conn, "map_outputs", {"run_id": run_id, "step": step})
        return [text if text is not None else "null" for (text,) in rows]

    def run_input(self, run_id: str) -> str | None:
        rows = self.engine._fetch(self.conn, "run_input", {"run_id": run_id})
        return rows[0][0] if rows else None


def task_rows(tasks: Sequence[orchestration.NewTask]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": t.run_id,
            "step": t.step,
            "task_index": t.task_index,
            "workflow": t.workflow,
            "queue": t.queue,
            "priority": t.priority,
            "max_attempts": t.max_attempts,
            "input": t.input,
        }
        for t in tasks
    ]


def canonical_run_id(value: Any) -> str | None:
    """Run ids are UUIDs, stored in canonical form; any spelling of one finds its run."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def check_schema_version(version: int | None, latest: int, *, missing: str, schema: str) -> None:
    """Raise SchemaNotMigrated unless ``version`` is ``latest``; the messages say what to do."""
    advice = "run `pypgflow migrate` (or app.migrate())"
    if version is None:
        raise SchemaNotMigrated(f"{missing}: {advice}")
    if version < latest:
        raise SchemaNotMigrated(
            f"{schema} is at version {version}, this pypgflow needs {latest}: {advice}"
        )
    if version > latest:
        raise SchemaNotMigrated(
            f"{schema} is at version {version}, newer than this pypgflow knows ({latest}): "
            "upgrade pypgflow"
        )


# -- rescue ------------------------------------------------------------------------------------

#: at most this many lost tasks are rescued per transaction (the next heartbeat takes the rest)
_RESCUE_BATCH = 500


def _lost_by_silence(task: orchestration.LostTask, stale_after: float, rescuer: str) -> str:
    if task.last_seen is None:
        seen = "it is not registered (it stopped, crashed before registering, or was removed)"
    else:
        seen = (
            f"last seen at {task.last_seen.isoformat(timespec='milliseconds')}, "
            f"{task.silent_for or 0.0:.1f} s before this rescue (stale after {stale_after:g} s)"
        )
    return f"{seen}; rescued by {rescuer!r}"
