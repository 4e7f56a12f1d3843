"""The PostgreSQL engine: runs and tasks in their own schema; claims with SKIP LOCKED.

Every statement lives in ``queries.sql``; this module owns what PostgreSQL does its own way:
connections from a pool, driver errors wrapped into pypgflow's (connections.py), lists and
batches as one text parameter each (params.py), the claim, starts in one statement (also inside a caller's
transaction, sync or async) or, for a large batch of runs that do not start alike, by COPY,
and LISTEN/NOTIFY (listen.py): new work on one channel (``{schema}_work``, for workers),
finished runs on another (``{schema}_done``, for ``result()`` waiters; ``update_runs`` sends
it). Everything else is :class:`pypgflow.engines.sql.SqlEngine`'s. The hot path is one round
trip per claim and a handful per batch of outcomes, whatever the batch size.

Why one module: each hook that PostgreSQL does its own way is here, beside the others; what
they share (the pool, the translation of errors) is in connections.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, cast

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg import sql
from psycopg.rows import tuple_row

from pypgflow.engines.base import ClaimedTask
from pypgflow.engines.gates import STALE_HOLDERS_KEPT
from pypgflow.engines.postgres.connections import PooledConnections, describe_url
from pypgflow.engines.postgres.deadline import DEFAULT_ANSWER_TIMEOUT
from pypgflow.engines.postgres.listen import ListenTarget, listen_thread
from pypgflow.engines.postgres.params import (
    array_literal,
    claimed_tasks,
    copyable,
    json_rows,
    root_task_rows,
    run_rows,
    start_statement,
    storable,
    uniform_ids,
)
from pypgflow.engines.sql import SqlEngine, finished_at_start, keys_taken, resolved_ids
from pypgflow.engines.sqlfile import load_queries, migration_files, read_sql
from pypgflow.engines.starts import StartRequest, UniformStarts
from pypgflow.errors import (
    AttemptError,
    ConfigurationError,
    InvalidArgument,
    NotSupported,
    SchemaNotMigrated,
)
from pypgflow.limits import GATE_RECHECK, Admission, Deferred, GateRequest

logger = logging.getLogger("pypgflow.engine.postgres")

_PACKAGE = "pypgflow.engines.postgres"
_MIGRATIONS = f"{_PACKAGE}.migrations"
_MIGRATE_LOCK = 0x7079_7067_666C  # pg_advisory_xact_lock key held while migrating
MAX_SCHEMA_BYTES = 63 - len("_work")  # identifiers' limit, channels' ("{schema}_work") too


class PostgresEngine(SqlEngine[psycopg.Connection[Any]]):
    """Stores everything in one PostgreSQL schema (``pypgflow`` unless told otherwise)."""

    supports_transactional_start = True
    notifies_other_processes = True
    #: update_runs announces the runs it finishes itself, pg_notify in the same statement
    _update_runs_announces = True

    def __init__(
        self,
        url: str,
        *,
        schema: str = "pypgflow",
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 5.0,
        answer_timeout: float | None = DEFAULT_ANSWER_TIMEOUT,
    ) -> None:
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"invalid PostgreSQL connection string: {exc}") from None
        for port in str(params.get("port") or "").split(","):
            if port.strip() and (not port.strip().isdigit() or not 0 < int(port) < 65536):
                raise ConfigurationError(
                    f"invalid PostgreSQL connection string: port {port!r} is not a port number "
                    "(1 to 65535)"
                )
        if not (schema.replace("_", "").isalnum() and len(schema.encode()) <= MAX_SCHEMA_BYTES):
            raise InvalidArgument(
                f"schema must be a plain identifier of at most {MAX_SCHEMA_BYTES} bytes (its "
                f"notification channels add '_work' to it), got {schema!r}"
            )
        self.url = url
        self.schema = schema
        self.channel = f"{schema}_work"
        #: where finished runs are announced (their ids): not the work channel, so that workers
        #: are not woken by them
        self.done_channel = f"{schema}_done"
        self.connect_timeout = connect_timeout
        self._queries = {
            name: self._compose(text)
            for name, text in load_queries(
                _PACKAGE,
                "queries.sql",
                composed_later=("schema", "channel", "done_channel", "done_channel_name"),
            ).items()
        }
        self._schema_sql = self._compose(read_sql(_PACKAGE, "schema.sql"))
        self._migrations = migration_files(_MIGRATIONS)
        self.latest_version = self._migrations[-1][0]
        self._connections = PooledConnections(
            url,
            name=f"pypgflow-{schema}",
            min_size=min_connections,
            max_size=max_connections,
            connect_timeout=connect_timeout,
            answer_timeout=answer_timeout,
            schema_missing=self._missing_schema_error,
        )
        self._schema_checked = False

    def __repr__(self) -> str:
        return f"PostgresEngine({describe_url(self.url)!r}, schema={self.schema!r})"

    # -- connections -----------------------------------------------------------------------

    def _connection(
        self, *, check_schema: bool = True, autocommit: bool = False
    ) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A pooled connection, in a transaction committed on success (``autocommit``: each
        statement its own transaction, for a block of one statement); errors become pypgflow's."""
        self._connections.open()
        if check_schema and not self._schema_checked:
            self.check_schema()
        return self._connections.session(autocommit=autocommit)

    def _fetch_alone(self, name: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of the named statement, run in a transaction of its own: a start's or a
        claim's one round trip (see connections.py)."""
        self._connections.open()
        if not self._schema_checked:
            self.check_schema()
        return self._connections.fetch_alone(self._q(name), params)

    def _missing_schema_error(self) -> SchemaNotMigrated:
        self._schema_checked = False
        return SchemaNotMigrated(
            f"{self._schema_missing}: run `pypgflow migrate` (or app.migrate())"
        )

    def _compose(self, text: str) -> sql.SQL:
        """A statement or script of this package's files, with its schema and channel names,
        composed once: a composed statement would be put together again at every execution."""
        composed = sql.SQL(text).format(
            schema=sql.Identifier(self.schema),
            channel=sql.Identifier(self.channel),
            done_channel=sql.Identifier(self.done_channel),
            done_channel_name=sql.Literal(self.done_channel),
        )
        return sql.SQL(composed.as_string(None))

    def _q(self, name: str) -> sql.SQL:
        """The named statement, composed."""
        return self._queries[name]

    # -- what SqlEngine needs -------------------------------------------------------------

    def _write(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._connection()

    def _read(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        # Under READ COMMITTED a transaction gives a read nothing a statement alone does not:
        # autocommit spares the BEGIN and COMMIT round trips.
        return self._connection(autocommit=True)

    def _fetch(
        self, conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        # Tuples whatever the row factory of the connection (it may be the caller's).
        return conn.cursor(row_factory=tuple_row).execute(self._q(name), params).fetchall()

    def _execute(
        self, conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None
    ) -> None:
        conn.execute(self._q(name), params)

    def _batched(self, conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
        # psycopg's pipeline mode: statements are sent without waiting for each other's
        # results, and run in order; one round trip for the block.
        return conn.pipeline()

    def _commit_in_batch(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.autocommit:
            conn.commit()  # queued in the pipeline with the writes: no round trip of its own

    def _submit(
        self, conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None
    ) -> Callable[[], list[tuple[Any, ...]]]:
        cursor = conn.cursor(row_factory=tuple_row)
        cursor.execute(self._q(name), params)
        return cursor.fetchall

    def _ids(self, values: Iterable[Any]) -> str:
        """An array literal, for ``%(ids)s::uuid[]`` (or ``bigint[]``, ``text[]``)."""
        return array_literal(values)

    def _batch(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """One JSON document of the rows, for ``json_to_recordset(%(rows)s::json)``."""
        return {"rows": json_rows(rows)}

    def _json(self, value: Any) -> Any:
        return value  # psycopg decodes jsonb

    def _time(self, value: Any) -> datetime:
        return cast(datetime, value)

    def _error_text(self, error: AttemptError) -> str:
        return json.dumps(storable(error.to_dict()), ensure_ascii=False, default=str)

    def close(self) -> None:
        self._connections.close()

    @property
    def answer_timeout(self) -> float | None:
        """Seconds a call waits for the server's answer before its connection is closed and it
        fails with ``DatabaseUnavailable`` (None: as long as the socket stays open)."""
        return self._connections.answer_timeout

    # -- schema ----------------------------------------------------------------------------

    @property
    def _schema_missing(self) -> str:
        return f"the pypgflow schema {self.schema!r} is missing in {describe_url(self.url)}"

    @property
    def _schema_label(self) -> str:
        return f"the pypgflow schema {self.schema!r}"

    def _unchecked_read(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._connection(check_schema=False)

    @contextmanager
    def _migrating(self) -> Iterator[psycopg.Connection[Any]]:
        with self._connection(check_schema=False) as conn:
            self._execute(conn, "migrate_lock", {"key": _MIGRATE_LOCK})
            yield conn

    def _run_script(self, conn: psycopg.Connection[Any], script: Any) -> None:
        conn.execute(self._compose(script) if isinstance(script, str) else script, prepare=False)

    def _installed_version(self, conn: psycopg.Connection[Any]) -> int | None:
        table = f'"{self.schema}".migrations'
        if not self._fetch(conn, "migrations_table_exists", {"table": table})[0][0]:
            return None
        rows = self._fetch(conn, "schema_version")
        return int(rows[0][0]) if rows else 0

    # -- starting runs ---------------------------------------------------------------------

    def start_runs(self, requests: Sequence[StartRequest], connection: Any = None) -> list[str]:
        if not requests:
            return []
        if connection is not None:
            if not isinstance(connection, psycopg.Connection):
                raise InvalidArgument(
                    "connection= takes a psycopg (3) Connection; for an AsyncConnection use "
                    "start_async"
                )
            with self._connections.translated_errors():
                return self._insert_runs(connection, requests)
        if copyable(requests):
            with self._connection() as conn:
                return self._copy_runs(conn, requests)
        # One statement inserts the runs, their steps and tasks and wakes the workers: in
        # autocommit mode it is its own transaction, and a start is one round trip. Most starts
        # need nothing more: no idempotency key to look up, no run that finished as it started.
        if isinstance(requests, UniformStarts) or all(
            r.idempotency_key is None and not r.run.status.finished for r in requests
        ):
            rows = self._fetch_alone(*self._start_statement(requests))
            if isinstance(requests, UniformStarts):
                return uniform_ids(requests, rows)
            return resolved_ids(requests, {row[0] for row in rows}, ())
        with self._connection(autocommit=True) as conn:
            return self._insert_runs(conn, requests)

    def _start_statement(self, requests: Sequence[StartRequest]) -> tuple[str, dict[str, Any]]:
        statement, params = start_statement(requests)
        params["channel"] = self.channel
        return statement, params

    def _insert_runs(
        self, conn: psycopg.Connection[Any], requests: Sequence[StartRequest]
    ) -> list[str]:
        statement, params = self._start_statement(requests)
        if isinstance(requests, UniformStarts):
            return uniform_ids(requests, self._fetch(conn, statement, params))
        inserted = {row[0] for row in self._fetch(conn, statement, params)}
        ids = self._resolve_ids(conn, requests, inserted)
        # Runs finished at start (an empty map) are rare: their announcement is one more statement.
        self._notify_finished(conn, finished_at_start(requests, inserted))
        return ids

    def _copy_runs(
        self, conn: psycopg.Connection[Any], requests: Sequence[StartRequest]
    ) -> list[str]:
        """A large batch of plain starts (see :func:`copyable`) written by COPY, in the
        transaction of ``conn``: the rows stream to the server, which parses them as they come,
        at about half the cost of the statement's JSON documents."""
        with conn.cursor() as cursor:
            with cursor.copy(self._q("copy_runs")) as copy:
                for row in run_rows(requests):
                    copy.write_row(row)
            with cursor.copy(self._q("copy_tasks")) as copy:
                for row in root_task_rows(requests):
                    copy.write_row(row)
        queues = {task.queue for request in requests for task in request.changes.new_tasks}
        self._notify(conn, queues)
        self._notify_finished(conn, {r.run.id for r in requests if r.run.status.finished})
        return [request.run.id for request in requests]

    async def _start_runs_on_async_connection(
        self, requests: Sequence[StartRequest], connection: Any
    ) -> list[str]:
        if not isinstance(connection, psycopg.AsyncConnection):
            raise InvalidArgument("connection= takes a psycopg (3) AsyncConnection in start_async")
        if not requests:
            return []
        statement, params = self._start_statement(requests)
        with self._connections.translated_errors():
            # Tuples whatever the row factory of the caller's connection.
            async with connection.cursor(row_factory=tuple_row) as cursor:
                await cursor.execute(self._q(statement), params)
                if isinstance(requests, UniformStarts):
                    return uniform_ids(requests, await cursor.fetchall())
                inserted = {row[0] for row in await cursor.fetchall()}
                taken = keys_taken(requests, inserted)
                existing: list[tuple[Any, ...]] = []
                if taken:
                    await cursor.execute(self._q("runs_by_idempotency_key"), self._batch(taken))
                    existing = await cursor.fetchall()
                finished = finished_at_start(requests, inserted)
                if finished:
                    await cursor.execute(
                        self._q("notify_finished"), {"ids": self._ids(sorted(finished))}
                    )
        return resolved_ids(requests, inserted, existing)

    def _notify(self, conn: psycopg.Connection[Any], queues: set[str]) -> None:
        if queues:
            conn.execute(
                self._q("notify"), {"channel": self.channel, "queues": self._ids(sorted(queues))}
            )

    def _wake_parents(self, conn: psycopg.Connection[Any], parent_task_ids: Iterable[int]) -> None:
        # the statement notifies their queues itself: it may run in a pipeline
        conn.execute(
            self._q("wake_parent_tasks"),
            {"ids": self._ids(parent_task_ids), "channel": self.channel},
        )

    def _plan_prune(self, conn: psycopg.Connection[Any]) -> None:
        self._execute(conn, "prune_plan")

    def _admit_one_gate_each(
        self, requests: Sequence[GateRequest], finished: Collection[int]
    ) -> Admission:
        # the lock, the decision with its writes, and the commit: one round trip
        rows = [
            {
                "ord": n,
                "key": r.gates[0].key,
                "capacity": r.gates[0].capacity,
                "task_id": r.task_id,
                "attempt": r.attempt,
                "run_id": r.run_id,
            }
            for n, r in enumerate(requests)
        ]
        params = {
            **self._batch(rows),
            "finished": self._ids(sorted(finished)),
            "recheck": GATE_RECHECK,
            "stale_kept": STALE_HOLDERS_KEPT,
            "channel": self.channel,
        }
        with self._connection() as conn:
            with conn.pipeline():
                self._lock_gates(conn, sorted({r.gates[0].key for r in requests}))
                decided = self._submit(conn, "admit_one_gate_each", params)
                conn.commit()
            admission = Admission()
            for admitted, task_id, key in decided():
                if admitted:
                    admission.admitted.add(task_id)
                elif admitted is not None:  # (None: the row that counts the notifications)
                    admission.deferred[task_id] = Deferred(key, GATE_RECHECK)
        return admission

    def _lock_gates(self, conn: psycopg.Connection[Any], keys: Sequence[str]) -> None:
        if keys:
            conn.execute(
                self._q("lock_gates"),
                {"keys": self._ids(keys), "namespace": f"pypgflow:{self.schema}:"},
            )

    def _wake_gate_waiters(
        self, conn: psycopg.Connection[Any], released: Mapping[str, int]
    ) -> None:
        # one statement for every gate, which notifies their queues itself
        rows = [{"key": key, "n": n} for key, n in sorted(released.items())]
        conn.execute(self._q("wake_gate_waiters"), {**self._batch(rows), "channel": self.channel})

    def _notify_finished(self, conn: psycopg.Connection[Any], run_ids: set[str]) -> None:
        if run_ids:
            conn.execute(self._q("notify_finished"), {"ids": self._ids(sorted(run_ids))})

    # -- claiming and finishing --------------------------------------------------------------

    def claim_tasks(
        self, queue: str, limit: int, *, instance_id: str, workflows: Sequence[str],
        versions: Sequence[str] | None = None,
    ) -> list[ClaimedTask]:  # fmt: skip
        # One statement: in autocommit mode it is its own transaction (one round trip).
        rows = self._fetch_alone(
            "claim_tasks",
            {
                "queue": queue,
                "limit": limit,
                "instance_id": instance_id,
                "workflows": self._ids(workflows),
                "versions": None if versions is None else self._ids(versions),
            },
        )
        return claimed_tasks(rows, queue)

    # -- notifications ----------------------------------------------------------------------

    def listen(self, on_work: Callable[[str], None]) -> Callable[[], None] | None:
        """LISTEN for new work on a dedicated connection in a thread; reconnects until stopped.
        ``on_work(queue)`` for each notification, ``on_work("")`` at every (re)connection."""
        return listen_thread(self._listen_target("listen"), on_work, name="pypgflow-listen")

    def listen_finished(self, on_finished: Callable[[str], None]) -> Callable[[], None] | None:
        """LISTEN for finished runs on a dedicated connection in a thread, as ``listen`` does:
        ``on_finished(run_id)`` for each id of a notification, ``on_finished("")`` at every
        (re)connection (runs may have finished meanwhile) and for an empty payload."""

        def on_payload(payload: str) -> None:
            for run_id in payload.split(",") if payload else [""]:
                on_finished(run_id)

        return listen_thread(
            self._listen_target("listen_finished"), on_payload, name="pypgflow-listen-done"
        )

    def _listen_target(self, statement: str) -> ListenTarget:
        return ListenTarget(
            self.url, self._q(statement), self.connect_timeout, self._connections.answer_timeout
        )

    # -- the operators' reads (engines/insight.py) -------------------------------------------

    _pages_since_apart = True

    def _instant(self, moment: datetime) -> Any:
        return moment  # a timestamptz, exact to the microsecond

    def _estimated_run_counts(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        """Runs by status from the statistics: the table's rows times each status's frequency
        (what the planner would estimate), where counting would read every run. None before the
        first VACUUM or ANALYZE."""
        rows = self._fetch(
            conn,
            "run_counts_estimated",
            {"schema": self.schema, "table": f'"{self.schema}".runs'},
        )
        if not rows or rows[0][0] is None or rows[0][0] < 0 or rows[0][1] is None:
            return {}
        total, values, freqs = rows[0]
        statuses = values.strip("{}").split(",") if values else []
        return {status: round(total * freq) for status, freq in zip(statuses, freqs, strict=False)}


__all__ = ["NotSupported", "PostgresEngine"]
