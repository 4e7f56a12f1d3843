"""SqlEngine: what both SQL engines share. Their run, step and task verbs are written here once
(starts resolved by idempotency key, outcomes, operator transitions, reads and the records they
return); the fleet verbs come from :class:`pypgflow.engines.fleet.FleetVerbs`, the operators'
reads (the dashboard's) from :class:`pypgflow.engines.insight.InsightVerbs`, fleet-wide limits
from :class:`pypgflow.engines.gates.GateVerbs`, and the hooks
each engine provides, the schema verbs, the run lock and the writing of orchestration's changes
from :class:`pypgflow.engines.sqlbase.SqlBase`.

Each transaction hands run state to orchestration and writes its decisions back; an engine
keeps only what differs: its connections, its statements (``queries.sql``, under the same
names), how it passes parameters and decodes columns, claims, starts and notifications.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from pypgflow import orchestration
from pypgflow.engines.base import (
    Began,
    ChildStarted,
    Completed,
    Failed,
    FinishResult,
    Outcome,
    RunResult,
)
from pypgflow.engines.fleet import FleetVerbs
from pypgflow.engines.gates import GateVerbs
from pypgflow.engines.insight import InsightVerbs
from pypgflow.engines.sqlbase import C, Row, canonical_run_id, ended_unfinished, finished_runs
from pypgflow.engines.starts import StartRequest, UniformStarts
from pypgflow.errors import AttemptError, IdempotencyConflict, RunFinished, RunNotFound
from pypgflow.orchestration import Changes, RunState
from pypgflow.records import RunInfo, StepInfo
from pypgflow.serialization import same_json
from pypgflow.status import RunStatus, StepStatus

#: step_infos' columns, in order: what every engine selects, then (where the engine aggregates
#: them there) every attempt's error
_STEP_COLUMNS = 16

#: list_runs' statement by the filters given (status, workflow): one per filter, each served by
#: an index that stops after the limit (see list_runs in queries.sql)
_LIST_RUNS = {
    (False, False): "list_runs",
    (True, False): "list_runs_by_status",
    (False, True): "list_runs_by_workflow",
    (True, True): "list_runs_by_status_and_workflow",
}


class SqlEngine(FleetVerbs[C], InsightVerbs[C], GateVerbs[C]):
    """An engine whose storage is SQL: everything here runs the same named statements."""

    # -- starting runs --------------------------------------------------------------------------

    def _resolve_ids(
        self, conn: C, requests: Sequence[StartRequest], inserted: set[str]
    ) -> list[str]:
        """Each request's run id, inside the transaction that inserted what it could."""
        taken = keys_taken(requests, inserted)
        rows = self._fetch(conn, "runs_by_idempotency_key", self._batch(taken)) if taken else []
        return resolved_ids(requests, inserted, rows)

    # -- recording outcomes ---------------------------------------------------------------------

    def finish_tasks(self, outcomes: Sequence[Outcome]) -> FinishResult:
        result = FinishResult()
        if not outcomes:
            return result
        completed = [o for o in outcomes if isinstance(o, Completed)]
        failed = [o for o in outcomes if isinstance(o, Failed)]
        retries = [(o, o.verdict) for o in failed if isinstance(o.verdict, orchestration.Retry)]
        finals = [o for o in failed if isinstance(o.verdict, orchestration.GiveUp)]
        began = {o.task.run_id for o in outcomes if isinstance(o, Began)}
        handoffs = [o for o in outcomes if isinstance(o, ChildStarted)]
        with self._write() as conn:
            # Every change to a run's tasks happens under its lock (see lock_runs): the lock
            # and the guarded task updates go together, in order, in one round trip.
            with self._batched(conn):
                read_runs = self._submit_lock_runs(conn, {o.task.run_id for o in outcomes})
                read_done = read_retried = read_failed = read_parked = None
                if completed:
                    read_done = self._submit(
                        conn,
                        "complete_tasks",
                        self._batch(
                            [
                                {
                                    "id": o.task.id,
                                    "attempt": o.task.attempt,
                                    "output": o.output,
                                }
                                for o in completed
                            ]
                        ),
                    )
                if retries:
                    read_retried = self._submit(
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
                if finals:
                    read_failed = self._submit(
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
                if handoffs:
                    read_parked = self._submit(
                        conn,
                        "park_tasks",
                        self._batch(
                            [
                                {
                                    "id": o.task.id,
                                    "attempt": o.task.attempt,
                                    "child_run_id": o.child.run.id,
                                    "delay": orchestration.NEVER,
                                }
                                for o in handoffs
                            ]
                        ),
                    )
            runs = read_runs()
            changes = Changes()
            ran: list[str] = []
            if read_parked is not None:
                parked = {task_id for task_id, _ in read_parked()}
                children = [o.child for o in handoffs if o.task.id in parked]
                ran += [o.task.run_id for o in handoffs if o.task.id in parked]
                self._start_children(conn, children)
            if read_done is not None:
                outputs = {o.task.id: o.output for o in completed}
                skipped = {o.task.id for o in completed if o.skipped}
                done = [
                    orchestration.TaskDone(
                        run_id, step, index, outputs[task_id], skipped=task_id in skipped
                    )
                    for task_id, run_id, step, index in read_done()
                ]
                ran += [d.run_id for d in done]
                orchestration.tasks_completed(runs, done, self._reader(conn), changes)
            if read_retried is not None:
                ran += [row[0] for row in read_retried()]
            if read_failed is not None:
                errors = {o.task.id: o.error for o in finals}
                given_up = [
                    orchestration.TaskFailedForGood(run_id, step, index, errors[task_id])
                    for task_id, run_id, step, index, _attempt in read_failed()
                ]
                ran += [f.run_id for f in given_up]
                orchestration.tasks_failed(runs, given_up, changes)
            result.accepted = len(ran)
            orchestration.tasks_ran(runs, [*ran, *(began & runs.keys())], changes)
            self._release_gates(conn, outcomes, changes)
            self._apply(conn, changes, last=True)
            result.queues_with_new_work = changes.queues_with_new_work
            result.finished_runs = lambda: finished_runs(changes, outcomes)
        self._cancel_children(ended_unfinished(changes))
        return result

    def _start_children(self, conn: C, children: Sequence[StartRequest]) -> None:
        """Insert the child runs of subflow tasks just parked, in their transaction; a child that
        finished as it started (an empty map) wakes its parent's task at once."""
        if not children:
            return
        self._insert_runs(conn, children)
        done = [c.parent_task_id for c in children if c.run.status.finished]
        if done:
            self._wake_parents(conn, [task_id for task_id in done if task_id is not None])

    # -- operator verbs -------------------------------------------------------------------------

    def cancel_run(self, run_id: str) -> bool:
        cancelled = self._transition(
            run_id, lambda run, reader, changes: orchestration.cancel_run(run, changes)
        )
        if cancelled:
            self._cancel_children({str(canonical_run_id(run_id))})
        return cancelled

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

    def send_signal(self, run_id: str, name: str, data: str) -> str | None:
        canonical = canonical_run_id(run_id)
        if canonical is None:
            raise RunNotFound(f"no run with id {run_id!r} (run ids are UUIDs)")
        with self._write() as conn:
            runs = self._lock_runs(conn, {canonical})
            run = runs.get(canonical)
            if run is None:
                raise RunNotFound(f"no run with id {run_id}")
            if not run.active:
                raise RunFinished(
                    f"run {canonical} is {run.status.value}: it takes no more signals "
                    f"(signal {name!r} not sent)"
                )
            step = orchestration.waiting_for_signal(run, name)
            taken = step is not None and bool(
                self._fetch(
                    conn,
                    "complete_waiting_task",
                    {"run_id": canonical, "step": step.name, "data": data},
                )
            )
            target = step.name if taken and step is not None else None
            self._execute(
                conn,
                "insert_signal",
                {"run_id": canonical, "name": name, "data": data, "step": target},
            )
            if target is not None:
                changes = Changes()
                done = orchestration.TaskDone(canonical, target, None, data)
                orchestration.tasks_completed(runs, [done], self._reader(conn), changes)
                orchestration.tasks_ran(runs, [canonical], changes)
                self._apply(conn, changes)
            return target

    def release_tasks(self, task_ids: Sequence[int], *, instance_id: str) -> int:
        if not task_ids:
            return 0
        with self._write() as conn:
            rows = self._fetch(
                conn, "release_tasks", {"ids": self._ids(task_ids), "instance_id": instance_id}
            )
            self._handed_back(conn, rows)
        return len(rows)

    def release_unheld_tasks(self, instance_id: str, *, keep: Sequence[int]) -> int:
        with self._write() as conn:
            rows = self._fetch(
                conn,
                "release_unheld_tasks",
                {"instance_id": instance_id, "keep": self._ids(sorted(keep))},
            )
            self._handed_back(conn, rows)
        return len(rows)

    def _handed_back(self, conn: C, rows: Sequence[Sequence[Any]]) -> None:
        """Tasks (queue, id) back in their queues, their attempt given back: the gates they
        held, released; their queues, notified."""
        if rows:
            ids = self._ids(sorted(row[1] for row in rows))
            self._execute(conn, "delete_task_gate_holders", {"ids": ids})
        self._notify(conn, {row[0] for row in rows})

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

    def next_due_in(
        self,
        queues: Sequence[str],
        workflows: Sequence[str],
        versions: Sequence[str] | None = None,
    ) -> float | None:
        with self._read() as conn:
            rows = self._fetch(
                conn,
                "next_due",
                {
                    "queues": self._ids(queues),
                    "workflows": self._ids(workflows),
                    "versions": None if versions is None else self._ids(versions),
                },
            )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def store_definitions(self, blueprints: Sequence[Mapping[str, Any]]) -> None:
        rows = [
            {"workflow": b["name"], "version": b["version"], "definition": json.dumps(b)}
            for b in blueprints
        ]
        if rows:
            with self._write() as conn:
                self._execute(conn, "store_definitions", self._batch(rows))

    def stored_definitions(self, workflow: str | None = None) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = self._fetch(conn, "stored_definitions", {"workflow": workflow})
        return [json.loads(row[2]) for row in rows]

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

    def runs_still_going(self, run_ids: Collection[str]) -> set[str]:
        canonical = {c for c in map(canonical_run_id, run_ids) if c is not None}
        if not canonical:
            return set()
        with self._read() as conn:
            rows = self._fetch(conn, "runs_still_going", {"ids": self._ids(sorted(canonical))})
        return {row[0] for row in rows}

    def get_run(self, run_id: str) -> RunInfo | None:
        canonical = canonical_run_id(run_id)
        if canonical is None:
            return None
        with self._snapshot() as conn:
            rows = self._fetch(conn, "get_run", {"id": canonical})
            if not rows:
                return None
            steps = self._fetch(conn, "step_infos", {"id": canonical})
            errors = self._step_errors(conn, canonical, steps)
        return self._run_info(
            rows[0], [self._step_info(row, errors.get(row[0], ())) for row in steps]
        )

    def list_runs(
        self, *, status: RunStatus | None, workflow: str | None, limit: int
    ) -> list[RunInfo]:
        with self._read() as conn:
            rows = self._fetch(
                conn,
                _LIST_RUNS[status is not None, workflow is not None],
                {"status": status.value if status else None, "workflow": workflow, "limit": limit},
            )
        return [self._run_info(row, []) for row in rows]

    def _step_errors(self, conn: C, run_id: str, steps: list[Row]) -> Mapping[str, Sequence[Any]]:
        """Every attempt's stored error of each step of a run, oldest first, by step name.

        step_infos aggregates them in its last column, ordered by attempt then element; an
        engine that cannot order inside an aggregate (SQLite before 3.44) selects no such
        column and reads them here with a statement of its own, in the same order."""
        return {row[0]: row[_STEP_COLUMNS] for row in steps}

    # -- records ----------------------------------------------------------------------------------

    def _run_info(self, row: Row, steps: Sequence[StepInfo]) -> RunInfo:
        """A row of get_run, list_runs or find_runs, as its record: the run's columns, and the
        version and the run it was forked from after them when the row has them."""
        (run_id, workflow, status, queue, priority, idempotency_key, input_, output, error,
         created_at, scheduled_at, started_at, finished_at) = row[:13]  # fmt: skip
        return RunInfo(
            id=run_id,
            workflow=workflow,
            status=RunStatus(status),
            input=self._json(input_),
            output=self._json(output),
            error=self._stored_error(error),
            created_at=self._time(created_at),
            started_at=self._optional_time(started_at),
            finished_at=self._optional_time(finished_at),
            queue=queue,
            priority=priority,
            scheduled_at=self._optional_time(scheduled_at),
            idempotency_key=idempotency_key,
            steps=tuple(steps),
            version=row[13] if len(row) > 13 else None,
            forked_from=row[14] if len(row) > 14 else None,
            parent_run_id=row[15] if len(row) > 15 else None,
        )

    def _step_info(self, row: Row, stored_errors: Iterable[Any]) -> StepInfo:
        """A step_infos row and its stored errors, as its record."""
        (name, _position, status, depends_on, is_map, task_count, output, started_at,
         finished_at, attempts, instance_id, signal, due_at, queued_since,
         children, gate_wait) = row[:_STEP_COLUMNS]  # fmt: skip
        errors = tuple(AttemptError.from_dict(self._json(e)) for e in stored_errors)
        step_status = StepStatus(status)
        return StepInfo(
            name=name,
            status=step_status,
            attempts=attempts,
            output=self._json(output),
            error=errors[-1] if errors and step_status is StepStatus.FAILED else None,
            started_at=self._optional_time(started_at),
            finished_at=self._optional_time(finished_at),
            instance_id=instance_id,
            depends_on=tuple(self._json(depends_on)),
            is_map=bool(is_map),
            task_count=task_count,
            errors=errors,
            signal=signal,
            due_at=self._optional_time(due_at),
            queued_since=self._optional_time(queued_since),
            child_run_ids=tuple(self._json(children) or ()),
            gate_wait=gate_wait,
        )


def finished_at_start(requests: Sequence[StartRequest], inserted: set[str]) -> set[str]:
    """The runs inserted already finished: a map over something other than a list fails at
    start, an empty map completes there."""
    if isinstance(requests, UniformStarts):
        return set()  # none: no root map step
    return {r.run.id for r in requests if r.run.id in inserted and r.run.status.finished}


def keys_taken(requests: Sequence[StartRequest], inserted: set[str]) -> list[dict[str, str]]:
    """The (workflow, idempotency key) pairs of the requests whose run was not inserted, as
    rows for runs_by_idempotency_key: a run of that workflow holds each."""
    if isinstance(requests, UniformStarts):
        return []  # no idempotency key
    return [
        {"workflow": r.run.workflow, "key": r.idempotency_key}
        for r in requests
        if r.run.id not in inserted and r.idempotency_key
    ]


def resolved_ids(
    requests: Sequence[StartRequest], inserted: set[str], existing: Iterable[Row]
) -> list[str]:
    """Each request's run id: its own if inserted, else that of the run holding its key
    (``existing``: the ``(id, workflow, idempotency_key, input)`` rows of
    runs_by_idempotency_key), provided that run was started with the same input (compared as
    JSON values); IdempotencyConflict if not."""
    if isinstance(requests, UniformStarts):
        return list(requests.run_ids)  # no idempotency key: each run is inserted
    by_key = {(workflow, key): (run_id, input) for run_id, workflow, key, input in existing}
    ids = []
    for request in requests:
        run = request.run
        if run.id in inserted:
            ids.append(run.id)
            continue
        run_id, input = by_key[run.workflow, request.idempotency_key or ""]
        if not same_json(input, run.input):
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} of workflow {run.workflow!r} "
                f"is held by run {run_id}, which was started with another input; a retried "
                "start must send the same input, and other data needs another key"
            )
        ids.append(run_id)
    return ids
