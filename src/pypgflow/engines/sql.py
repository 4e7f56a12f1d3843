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
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Generic, TypeVar

from pypgflow import orchestration
from pypgflow.engines.base import Completed, Engine, Failed, FinishResult, Outcome, RunResult
from pypgflow.errors import AttemptError, RunNotFound, SchemaNotMigrated
from pypgflow.orchestration import Changes, RunState, StepState
from pypgflow.records import InstanceInfo
from pypgflow.status import RunStatus, StepStatus

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

    def _error_text(self, error: Mapping[str, Any]) -> str:
        """An attempt's error as JSON text. Errors are written by pypgflow, not by step code, so
        they are made storable rather than refused (ASCII escapes keep any character of an
        exception message intact); an engine whose JSON type refuses some characters overrides
        this."""
        return json.dumps(error, default=str)

    # -- recording outcomes ---------------------------------------------------------------------

    def finish_tasks(self, outcomes: Sequence[Outcome]) -> FinishResult:
        result = FinishResult()
        if not outcomes:
            return result
        completed = [o for o in outcomes if isinstance(o, Completed)]
        retries = [o for o in outcomes if isinstance(o, Failed) and o.retry_in is not None]
        finals = [o for o in outcomes if isinstance(o, Failed) and o.retry_in is None]
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
                                "delay": o.retry_in,
                                "error": self._error_text(o.error),
                            }
                            for o in retries
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
                failed = [
                    orchestration.TaskFailedForGood(
                        run_id, step, index, attempt, AttemptError.from_dict(errors[task_id])
                    )
                    for task_id, run_id, step, index, attempt in rows
                ]
                ran += [f.run_id for f in failed]
                orchestration.tasks_failed(runs, failed, changes)
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
                        for run_id, s in changes.steps
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
        return RunResult(RunStatus(status), self._json(output), self._json(error))

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
