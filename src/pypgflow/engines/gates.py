"""GateVerbs: fleet-wide limits in the database (see pypgflow.limits).

An admission locks its gates (PostgreSQL: an advisory lock per key, in key order; SQLite: the
write lock it holds anyway), reads their holders, counting those that hold still (a task running
that attempt, a run unfinished; the others are dropped a batch at a time), drops the rate tokens
out of their window and reads the rest, lets
:func:`pypgflow.limits.decide` choose, and writes the new holders and tokens and the tasks sent
back, in one transaction. A holder's end (an outcome) makes as many of its gate's waiting tasks
due at once; a holder lost with its worker is dropped at the next admission, and the tasks
waiting for it are due again within ``GATE_RECHECK`` anyway.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pypgflow.engines.base import ChildStarted, Completed, Failed, Outcome
from pypgflow.engines.sqlbase import C, SqlBase
from pypgflow.limits import Admission, GateRequest, decide, rate_margin, room_left
from pypgflow.orchestration import Changes

#: holders that hold their gate no more are read (and not counted) until this many are there,
#: then dropped together: a delete of a few rows at every admission costs more than reading them
STALE_HOLDERS_KEPT = 50


class GateVerbs(SqlBase[C]):
    """Admitting claimed tasks through their gates, and releasing the gates they held."""

    def admit(
        self, requests: Sequence[GateRequest], *, finished: Collection[int] = ()
    ) -> Admission:
        if not requests:
            return Admission()
        if all(len(r.gates) == 1 and r.gates[0].kind == "task" for r in requests):
            decided = self._admit_one_gate_each(requests, finished)
            if decided is not None:
                return decided
        concurrency = sorted({g.key for r in requests for g in r.gates if g.kind != "rate"})
        windows = {
            g.key: g.per + rate_margin(g.per) for r in requests for g in r.gates if g.kind == "rate"
        }
        with self._write() as conn:
            # What holds the gates, read under their locks: sent together, one round trip
            # where the engine can (the writes below and the commit are a second one).
            read_holders = read_tokens = None
            with self._batched(conn):
                self._lock_gates(conn, sorted({*concurrency, *windows}))
                if concurrency:
                    read_holders = self._submit(
                        conn, "gate_holders", {"keys": self._ids(concurrency)}
                    )
                if windows:
                    rows = [{"key": key, "window_seconds": w} for key, w in windows.items()]
                    self._execute(conn, "prune_rate_tokens", self._batch(rows))
                    read_tokens = self._submit(conn, "rate_tokens", {"keys": self._ids(windows)})
            holders: dict[str, list[tuple[int | None, str]]] = {}
            holding_still: dict[str, list[tuple[int | None, str]]] = {}  # finished ones too
            stale: list[dict[str, Any]] = []
            for key, task_id, attempt, run_id, holding in read_holders() if read_holders else ():
                if not holding:
                    stale.append(
                        {"key": key, "task_id": task_id, "attempt": attempt, "run_id": run_id}
                    )
                    continue
                holding_still.setdefault(key, []).append((task_id, str(run_id)))
                if task_id not in finished:  # (a finished step's outcome is on its way)
                    holders.setdefault(key, []).append((task_id, str(run_id)))
            ages: dict[str, list[float]] = {}
            for key, age in read_tokens() if read_tokens else ():
                ages.setdefault(key, []).append(float(age))
            admission, new_holders, tokens = decide(requests, holders, ages)
            read_sent_back = None
            with self._batched(conn):
                if len(stale) >= STALE_HOLDERS_KEPT:  # dropped in batches, not one by one
                    self._execute(conn, "delete_gate_holders", self._batch(stale))
                self._write_admission(conn, requests, new_holders, tokens)
                if admission.deferred:
                    attempts = {r.task_id: r.attempt for r in requests}
                    rows = [
                        {"id": t, "attempt": attempts[t], "delay": d.delay, "gate": d.gate}
                        for t, d in admission.deferred.items()
                    ]
                    read_sent_back = self._submit(conn, "defer_tasks", self._batch(rows))
                room = room_left(requests, holding_still, new_holders)
                if any(n > 0 for n in room.values()):
                    self._wake_gate_waiters(conn, {k: n for k, n in room.items() if n > 0})
                self._commit_in_batch(conn)
            if read_sent_back is not None:
                # a task that stopped running meanwhile (cancelled) is not sent back: it is gone
                sent_back = {row[0] for row in read_sent_back()}
                admission.deferred = {t: d for t, d in admission.deferred.items() if t in sent_back}
        return admission

    def prune_rate_tokens(self, windows: Mapping[str, float]) -> int:
        with self._write() as conn:
            deleted = 0
            for name, seconds in sorted(windows.items()):
                rows = self._fetch(
                    conn,
                    "prune_old_rate_tokens",
                    {"key": f"rate:{name}", "window_seconds": seconds},
                )
                deleted += len(rows)
        return deleted

    def _write_admission(
        self,
        conn: C,
        requests: Sequence[GateRequest],
        new_holders: Sequence[tuple[str, GateRequest]],
        tokens: Sequence[str],
    ) -> None:
        """The holders and tokens an admission took."""
        kinds = {g.key: g.kind for r in requests for g in r.gates}
        if new_holders:
            rows = [
                {
                    "key": key,
                    "task_id": None if kinds[key] == "run" else r.task_id,
                    "attempt": None if kinds[key] == "run" else r.attempt,
                    "run_id": r.run_id,
                }
                for key, r in new_holders
            ]
            self._execute(conn, "insert_gate_holders", self._batch(rows))
        if tokens:
            self._execute(conn, "insert_rate_tokens", self._batch([{"key": k} for k in tokens]))

    def _admit_one_gate_each(
        self, requests: Sequence[GateRequest], finished: Collection[int]
    ) -> Admission | None:
        """The admission of requests that each pass one concurrency gate of tasks, in one
        round trip, where the engine can decide it in a statement (None: it cannot, and
        :meth:`admit` reads the holders first); the same decision as ``limits.decide``."""
        return None

    def _lock_gates(self, conn: C, keys: Sequence[str]) -> None:
        """Make admissions to these gates take turns until the transaction ends: nothing to do
        where a write transaction holds the whole database (SQLite)."""

    def _release_gates(self, conn: C, outcomes: Sequence[Outcome], changes: Changes) -> None:
        """The gates these outcomes' tasks held, released: their waiting tasks due now, as many
        as were released (a run's gate is released when the run finished in ``changes``)."""
        released: Counter[str] = Counter()
        finished_runs: set[tuple[str, str]] = set()
        parked: list[int] = []
        for outcome in outcomes:
            task = outcome.task
            if not task.gates or not isinstance(outcome, Completed | Failed | ChildStarted):
                continue
            if isinstance(outcome, ChildStarted):
                parked.append(task.id)  # its attempt given back: its holders go now
            for gate in task.gates:
                if gate.kind == "task":
                    released[gate.key] += 1
                elif gate.kind == "run":
                    run = changes.runs.get(task.run_id)
                    if run is not None and run.status.finished:
                        finished_runs.add((gate.key, task.run_id))
        released.update(key for key, _ in finished_runs)
        if parked:
            self._execute(conn, "delete_task_gate_holders", {"ids": self._ids(sorted(parked))})
        if released:
            self._wake_gate_waiters(conn, released)

    def _wake_gate_waiters(self, conn: C, released: Mapping[str, int]) -> None:
        """Make ``n`` of the tasks waiting for each gate due now (best first), and notify their
        queues: a statement per gate, by default."""
        queues: set[str] = set()
        for key, n in sorted(released.items()):
            rows: list[Any] = self._fetch(conn, "wake_gate_waiters", {"key": key, "n": n})
            queues.update(row[0] for row in rows)
        self._notify(conn, queues)
