"""What every shared SQL verb stands on: the hooks each SQL engine provides, the schema verbs
written over them, and the two halves of every transaction that changes runs.

An engine supplies its connections (``_write``, ``_read``), how it runs a named statement
(``_fetch``, ``_execute``), how it passes lists and batches of rows as parameters (PostgreSQL:
arrays for ``unnest``; SQLite: one JSON array for ``json_each``) and how it decodes JSON and
timestamp columns. The statements themselves stay in each engine's ``queries.sql``, under the
same names. Over these, :class:`SqlBase` owns ``migrate`` and ``check_schema``, and the run lock
(``_lock_runs``: the state orchestration decides on) and the writing of what it decided
(``_apply``), which the run verbs (:mod:`pypgflow.engines.sql`) and the rescue of lost tasks
(:mod:`pypgflow.engines.fleet`) share.
"""

from __future__ import annotations

import abc
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Generic, TypeVar

from pypgflow import orchestration
from pypgflow.engines.base import Engine, FinishedRun, Outcome
from pypgflow.engines.starts import StartRequest
from pypgflow.engines.steps import steps_from_text, steps_text
from pypgflow.errors import AttemptError, SchemaNotMigrated
from pypgflow.orchestration import Changes, RunState
from pypgflow.status import RunStatus

logger = logging.getLogger("pypgflow.engine")

C = TypeVar("C")
Row = tuple[Any, ...]


class SqlBase(Engine, Generic[C]):
    """The hooks of a SQL engine, and what the shared verbs build on them."""

    # -- what each engine provides -----------------------------------------------------------

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[C]:
        """A write transaction, committed when the block succeeds."""

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[C]:
        """A connection for reads that see one committed state."""

    def _snapshot(self) -> AbstractContextManager[C]:
        """A connection for several reads that must see the same committed state: ``_read``,
        unless an engine's reads see one state per statement only."""
        return self._read()

    @abc.abstractmethod
    def _fetch(self, conn: C, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run the named statement and return its rows (tuples)."""

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
    def _insert_runs(self, conn: C, requests: Sequence[StartRequest]) -> list[str]:
        """Insert these starts in the transaction of ``conn``; their run ids."""

    @abc.abstractmethod
    def _notify(self, conn: C, queues: set[str]) -> None:
        """Announce new work in ``queues`` when the transaction commits."""

    @abc.abstractmethod
    def _notify_finished(self, conn: C, run_ids: set[str]) -> None:
        """Announce that these runs finished (completed, failed or cancelled) when the
        transaction commits, to whoever waits for their results (``listen_finished``)."""

    #: True when the engine's update_runs statement announces the runs it finishes itself
    #: (PostgreSQL: pg_notify in the same statement), so that _apply has nothing more to send
    _update_runs_announces: bool = False

    def _error_text(self, error: AttemptError) -> str:
        """An attempt's error as JSON text. Errors are written by pypgflow, not by step code, so
        they are made storable rather than refused (ASCII escapes keep any character of an
        exception message intact); an engine whose JSON type refuses some characters overrides
        this."""
        return json.dumps(error.to_dict(), default=str)

    def _optional_time(self, value: Any) -> datetime | None:
        """A nullable timestamp column's value."""
        return None if value is None else self._time(value)

    def _stored_error(self, value: Any) -> AttemptError | None:
        """A stored error column, as its record."""
        data = self._json(value)
        return None if data is None else AttemptError.from_dict(data)

    # -- schema -------------------------------------------------------------------------------

    #: the full current schema, and the numbered migrations ``(version, name, sql)``: set by each
    #: engine from its own files
    _schema_sql: Any
    _migrations: list[tuple[int, str, str]]
    latest_version: int
    _schema_checked: bool

    @property
    def schema_ready(self) -> bool:
        return self._schema_checked

    @property
    @abc.abstractmethod
    def _schema_missing(self) -> str:
        """What is wrong when there is no schema at all, naming the database (no password)."""

    @property
    @abc.abstractmethod
    def _schema_label(self) -> str:
        """The installed schema, as messages name it."""

    @abc.abstractmethod
    def _unchecked_read(self) -> AbstractContextManager[C]:
        """A connection that does not check the schema first (check_schema's own); it raises
        SchemaNotMigrated where merely connecting would create the database."""

    @abc.abstractmethod
    def _migrating(self) -> AbstractContextManager[C]:
        """A write transaction that no other migration runs alongside."""

    @abc.abstractmethod
    def _run_script(self, conn: C, script: Any) -> None:
        """Run a schema script (several statements) inside the transaction."""

    @abc.abstractmethod
    def _installed_version(self, conn: C) -> int | None:
        """The schema version installed, None if there is no schema at all."""

    def _record(self, conn: C, version: int, name: str) -> None:
        """Record a migration as applied."""
        self._execute(conn, "record_migration", {"version": version, "name": name})

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

    def check_schema(self) -> None:
        """Raise SchemaNotMigrated unless the installed schema is the one this pypgflow needs."""
        with self._unchecked_read() as conn:
            version = self._installed_version(conn)
        advice = "run `pypgflow migrate` (or app.migrate())"
        latest = self.latest_version
        if version is None:
            raise SchemaNotMigrated(f"{self._schema_missing}: {advice}")
        if version < latest:
            raise SchemaNotMigrated(
                f"{self._schema_label} is at version {version}, this pypgflow needs {latest}: "
                f"{advice}"
            )
        if version > latest:
            raise SchemaNotMigrated(
                f"{self._schema_label} is at version {version}, newer than this pypgflow knows "
                f"({latest}): upgrade pypgflow"
            )
        self._schema_checked = True

    # -- the run lock, and writing what orchestration decided ---------------------------------

    def _batched(self, conn: C) -> AbstractContextManager[Any]:
        """A block whose statements the engine may send together, in one round trip (results
        read through :meth:`_submit` are there once the block ends). By default, none."""
        return nullcontext()

    def _commit_in_batch(self, conn: C) -> None:
        """Commit with the statements of a ``_batched`` block, when the engine can send them
        together (the write block around it then has nothing left to commit). By default the
        write block commits."""

    def _submit(
        self, conn: C, name: str, params: Mapping[str, Any] | None = None
    ) -> Callable[[], list[Row]]:
        """Run the named statement (in a ``_batched`` block, send it with the others); returns
        how to read its rows."""
        rows = self._fetch(conn, name, params)
        return lambda: rows

    def _lock_runs(self, conn: C, run_ids: set[str]) -> dict[str, RunState]:
        """The state of these runs and their steps, locked for the rest of the transaction."""
        return self._submit_lock_runs(conn, run_ids)()

    def _submit_lock_runs(self, conn: C, run_ids: set[str]) -> Callable[[], dict[str, RunState]]:
        """:meth:`_lock_runs` as a submitted statement: returns how to read the states."""
        if not run_ids:
            return dict
        run_rows = self._submit(conn, "lock_runs", {"ids": self._ids(sorted(run_ids))})
        return lambda: self._run_states(run_rows())

    def _run_states(self, run_rows: list[Row]) -> dict[str, RunState]:
        runs: dict[str, RunState] = {}
        for run_id, workflow, status, queue, priority, remaining, steps, parent_task in run_rows:
            runs[run_id] = RunState(
                id=run_id,
                workflow=workflow,
                status=RunStatus(status),
                queue=queue,
                priority=priority,
                remaining_steps=remaining,
                steps=steps_from_text(steps),
                parent_task_id=parent_task,
            )
        return runs

    def _apply(self, conn: C, changes: Changes, *, last: bool = False) -> None:
        """Write what orchestration decided: a statement per kind of change, whatever the count,
        sent together where the engine can; announce the queues that got work, and the runs that
        finished (those announced by update_runs itself where the engine's does, so that it costs
        no statement)."""
        with self._batched(conn):
            self._apply_changes(conn, changes)
            if last:  # nothing else in this transaction: the commit goes with the writes
                self._commit_in_batch(conn)

    def _apply_changes(self, conn: C, changes: Changes) -> None:
        if changes.new_tasks:
            self._execute(conn, "insert_tasks", self._batch(task_rows(changes.new_tasks)))
        if changes.consumed_signals:
            self._execute(
                conn,
                "consume_signals",
                self._batch(
                    [
                        {"id": signal_id, "step": step}
                        for signal_id, _, step in changes.consumed_signals
                    ]
                ),
            )
        if changes.cancel_tasks_of:
            self._execute(conn, "cancel_tasks_of_runs", {"ids": self._ids(changes.cancel_tasks_of)})
        if changes.requeue_tasks_of:
            self._execute(
                conn,
                "requeue_tasks",
                self._batch(
                    [
                        {"run_id": run_id, "step": step, "budget": budget, "delay": delay}
                        for run_id, step, budget, delay in changes.requeue_tasks_of
                    ]
                ),
            )
        if changes.runs:
            finished = {r.id for r in changes.runs.values() if r.status.finished}
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
                            "steps": steps_text(r.steps),
                        }
                        for r in changes.runs.values()
                    ]
                ),
            )
            if finished and not self._update_runs_announces:
                self._notify_finished(conn, finished)
            waiting_parents = [
                r.parent_task_id
                for r in changes.runs.values()
                if r.status.finished and r.parent_task_id is not None
            ]
            if waiting_parents:
                self._wake_parents(conn, waiting_parents)
        self._notify(conn, changes.queues_with_new_work)

    def _wake_parents(self, conn: C, parent_task_ids: Iterable[int]) -> None:
        """Child runs finished: the subflow tasks waiting for them are due now."""
        rows = self._fetch(conn, "wake_parent_tasks", {"ids": self._ids(parent_task_ids)})
        self._notify(conn, {queue for (queue,) in rows})

    def _cancel_children(self, parents: set[str]) -> None:
        """Cancel the unfinished children of runs that failed or were cancelled, and theirs: in
        transactions of their own, after the parents' (locking a child while holding its
        parent's tasks could deadlock with the child's own end, which wakes a parent task)."""
        while parents:
            with self._read() as conn:
                rows = self._fetch(conn, "active_children", {"ids": self._ids(sorted(parents))})
            if not rows:
                return
            with self._write() as conn:
                runs = self._lock_runs(conn, {row[0] for row in rows})
                changes = Changes()
                for run in runs.values():
                    orchestration.cancel_run(run, changes)
                self._apply(conn, changes)
            parents = ended_unfinished(changes)

    def _reader(self, conn: C) -> orchestration.StateReader:
        """Orchestration's reads, inside this transaction."""
        return _Reader(self, conn)


class _Reader(Generic[C]):
    """Orchestration's reads, inside the engine's transaction."""

    def __init__(self, engine: SqlBase[C], conn: C) -> None:
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

    def pending_signals(self, run_id: str, name: str) -> list[tuple[int, str]]:
        rows = self.engine._fetch(self.conn, "pending_signals", {"run_id": run_id, "name": name})
        return [(signal_id, data if data is not None else "null") for signal_id, data in rows]


def ended_unfinished(changes: Changes) -> set[str]:
    """The runs these changes failed or cancelled: their children are cancelled after them."""
    return {
        r.id for r in changes.runs.values() if r.status in (RunStatus.FAILED, RunStatus.CANCELLED)
    }


def finished_runs(changes: Changes, outcomes: Sequence[Outcome] = ()) -> list[FinishedRun]:
    """The runs these changes finish (completed, failed or cancelled), for the worker's events,
    with the trace context their tasks were claimed with (among ``outcomes``)."""
    finished = [r for r in changes.runs.values() if r.status.finished]
    if not finished:
        return []
    contexts = {o.task.run_id: o.task.trace_context for o in outcomes}
    return [
        FinishedRun(r.id, r.workflow, r.queue, r.status, r.error, contexts.get(r.id))
        for r in finished
    ]


def task_rows(tasks: Sequence[orchestration.NewTask]) -> list[dict[str, Any]]:
    """New tasks as the rows of a batch insert."""
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
            "delay": t.delay,
            "output": t.output,
            "completed": t.output is not None,
        }
        for t in tasks
    ]


def canonical_run_id(value: Any) -> str | None:
    """Run ids are UUIDs, stored in canonical form; any spelling of one finds its run."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None
