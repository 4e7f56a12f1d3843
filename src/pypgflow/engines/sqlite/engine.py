"""The SQLite engine: runs, steps and tasks in one database file; no server.

The same storage, the same orchestration, the same records as the PostgreSQL engine, on the
standard library's ``sqlite3``: a new user runs durable workflows from a file, and moves to
PostgreSQL by changing the URL. Every statement lives in ``queries.sql``; this module binds
parameters, batches (a batch is one JSON array parameter, read with ``json_each``), and wraps
driver errors into pypgflow's. It mirrors ``engines/postgres/engine.py`` method for method.

What SQLite does differently:

- Writers are serialized by the database itself: every write transaction is ``BEGIN
  IMMEDIATE`` (the write lock is taken up front, so two transactions never deadlock upgrading a
  read lock), and a claim is one ``UPDATE ... RETURNING`` under that lock instead of ``SKIP
  LOCKED``. Threads of one process queue on a Python lock rather than SQLite's sleeping busy
  handler; other processes wait up to ``busy_timeout``.
- No LISTEN/NOTIFY: a commit that creates work calls this process's listeners directly, and a
  thread per listener polls ``PRAGMA data_version`` (which changes when any other connection
  commits) to wake workers of other processes within a few tens of milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from pypgflow import orchestration
from pypgflow.engines.base import (
    ClaimedTask,
    Completed,
    Engine,
    Failed,
    FinishResult,
    Outcome,
    RunResult,
    StartRequest,
)
from pypgflow.engines.sqlfile import load_queries, migration_files, read_sql
from pypgflow.errors import (
    AttemptError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    NotSupported,
    RunNotFound,
    SchemaNotMigrated,
)
from pypgflow.orchestration import Changes, RunState, StepState
from pypgflow.records import InstanceInfo, RunInfo, StepInfo
from pypgflow.status import RunStatus, StepStatus

logger = logging.getLogger("pypgflow.engine.sqlite")

_PACKAGE = "pypgflow.engines.sqlite"
_MIGRATIONS = f"{_PACKAGE}.migrations"
MEMORY = ":memory:"
#: json_each, ``->>`` (3.38), RETURNING (3.35), UPDATE ... FROM (3.33), STRICT tables (3.37)
MIN_SQLITE_VERSION = (3, 38, 0)
_SYNCHRONOUS = ("full", "normal")
_URL_OPTIONS = ("synchronous",)
_URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite://:memory: "
    "(optionally with ?synchronous=normal)"
)


_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _process_write_lock(path: str) -> threading.Lock:
    """The lock this process's writers to ``path`` share, whichever engine they use."""
    key = os.path.normcase(os.path.realpath(path))
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    """The database path and the options of a ``sqlite://`` URL."""

    def malformed(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{problem}; write {_URL_FORMS}")

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise malformed(f"not a SQLite URL: {url!r}")
    rest, _, query = rest.partition("?")
    if rest in (MEMORY, "/" + MEMORY):
        path = MEMORY
    elif rest.startswith("/"):
        path = unquote(rest[1:])
    elif rest:
        host = rest.split("/")[0]
        raise malformed(f"a SQLite URL has no host, but {url!r} names {host!r} as one")
    else:
        path = ""
    if not path:
        raise malformed(f"the SQLite URL {url!r} names no database file")
    if path.endswith("/"):
        raise malformed(f"the SQLite URL {url!r} names a directory, not a database file")
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise malformed(f"malformed options in the SQLite URL {url!r}") from None
    for key, value in pairs:
        if key not in _URL_OPTIONS:
            raise malformed(
                f"unknown option {key!r} in the SQLite URL {url!r} "
                f"(known: {', '.join(_URL_OPTIONS)})"
            )
        options[key] = value
    if "synchronous" in options:
        try:
            options["synchronous"] = _check_synchronous(options["synchronous"])
        except ConfigurationError as exc:
            raise malformed(f"{exc.message} in the SQLite URL {url!r}") from None
    return path, options


def sqlite_path_from_url(url: str) -> str:
    """The database path a ``sqlite://`` URL names (``:memory:`` for an in-memory database).

    ``sqlite:///relative/path.db`` is relative to the working directory,
    ``sqlite:////absolute/path.db`` absolute. Raises ConfigurationError for anything else.
    """
    return _parse_url(url)[0]


def _check_synchronous(value: str) -> str:
    if value.lower() not in _SYNCHRONOUS:
        raise ConfigurationError(
            f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {value!r}"
        )
    return value.lower()


class SqliteEngine(Engine):
    """Stores everything in one SQLite database file (WAL mode), or in memory.

    ``SqliteEngine("flows.db")``, ``SqliteEngine("sqlite:///flows.db")``,
    ``SqliteEngine("sqlite:////var/lib/app/flows.db")`` or ``SqliteEngine("sqlite://:memory:")``.

    A file may be shared by several worker processes on one machine (not over a network file
    system: WAL needs shared memory). Each thread has its own connection; writes are serialized
    (``BEGIN IMMEDIATE``), and a writer of another process is waited for up to ``busy_timeout``
    seconds. ``:memory:`` lives in this process only: one connection, shared by its threads
    under a lock.

    Durability: ``synchronous="full"`` (the default) syncs the write-ahead log to disk at every
    commit, so a committed start or outcome survives a power loss or an OS crash.
    ``synchronous="normal"`` (or ``?synchronous=normal`` in the URL) syncs only at checkpoints:
    commits are faster and still survive a crash of the application, but the last transactions
    before a power loss or an OS crash may be lost (the database stays consistent; those runs or
    outcomes are simply gone, and lost outcomes' steps run again).

    ``busy_timeout``: how long a write waits for another process's write transaction before
    DatabaseUnavailable. ``poll_interval``: how often a listener checks for other processes'
    commits (``PRAGMA data_version``, a read of shared memory: cheap even every 20 ms).
    """

    supports_transactional_start = False
    notifies_other_processes = True

    def __init__(
        self,
        path_or_url: str | os.PathLike[str],
        *,
        synchronous: str | None = None,
        busy_timeout: float = 10.0,
        poll_interval: float = 0.02,
    ) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise ConfigurationError(
                f"the SQLite engine needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or "
                f"newer; this Python has {sqlite3.sqlite_version}"
            )
        target = os.fspath(path_or_url)
        options: dict[str, str] = {}
        if target.lower().startswith("sqlite:"):
            target, options = _parse_url(target)
        if not target:
            raise ConfigurationError("the SQLite engine needs a database path")
        self.memory = target == MEMORY
        # Absolute now: a later chdir must not move the database of new threads' connections.
        self.path = MEMORY if self.memory else os.path.abspath(target)
        self.synchronous = _check_synchronous(synchronous or options.get("synchronous", "full"))
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        if self.memory:
            self.notifies_other_processes = False  # nothing outside this process sees it
        self._queries = load_queries(_PACKAGE, "queries.sql")
        self._schema_sql = read_sql(_PACKAGE, "schema.sql")
        self._migrations = migration_files(_MIGRATIONS)
        self.latest_version = self._migrations[-1][0]
        self._schema_checked = False
        # Connections: one per thread for a file, one shared for :memory: (under _lock).
        self._local = threading.local()
        self._generation = 0  # bumped by close(): threads then open new connections
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._lock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        #: held around every write transaction to this file by this process (by any engine):
        #: writers of one process queue on it and are woken at once, where SQLite's busy
        #: handler would sleep and poll; its file lock is left to order processes.
        self._write_lock: AbstractContextManager[Any] = (
            self._lock if self.memory else _process_write_lock(self.path)
        )
        self._listeners: list[Callable[[str], None]] = []
        self._listeners_lock = threading.Lock()
        self._stop_pollers: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"SqliteEngine({self.path!r})"

    # -- connections -----------------------------------------------------------------------

    def _open_connection(self) -> sqlite3.Connection:
        """A new connection, configured; an error names the file."""
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,  # SQLite's busy_timeout, for other processes' writers
                isolation_level=None,  # autocommit: transactions are explicit BEGIN ... COMMIT
                check_same_thread=False,  # close() closes every thread's connection
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(
                f"cannot open the SQLite database {self.path}: {exc}"
            ) from None
        try:
            if not self.memory:
                conn.execute(self._q("journal_mode_wal")).fetchall()
            conn.execute(self._q("foreign_keys_on"))
            conn.execute(self._q(f"synchronous_{self.synchronous}"))
        except sqlite3.Error as exc:
            conn.close()
            raise DatabaseUnavailable(
                f"cannot open the SQLite database {self.path}: {exc}"
            ) from None
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (the shared one for :memory:, used under _lock)."""
        if self.memory:
            with self._lock:
                if self._shared is None:
                    self._shared = self._open_connection()
                return self._shared
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.generation == self._generation:
            return conn
        conn = self._open_connection()
        with self._connections_lock:
            # Threads come and go (thread pools, asyncio.to_thread): close what they left.
            alive = []
            for thread, other in self._connections:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    other.close()
            alive.append((threading.current_thread(), conn))
            self._connections = alive
            local.conn, local.generation = conn, self._generation
        return conn

    def _guard(self) -> AbstractContextManager[Any]:
        """Exclusive use of the connection: needed only when threads share one (:memory:)."""
        return self._lock if self.memory else nullcontext()

    @contextmanager
    def _connection(self, *, check_schema: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection for reads, one statement per implicit transaction; errors become
        pypgflow's."""
        if check_schema and not self._schema_checked:
            self.check_schema()
        with self._guard(), self._wrap_errors():
            yield self._conn()

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several statements that see the same committed state."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")  # nothing was written: ends the read transaction

    @contextmanager
    def _transaction(self, *, check_schema: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), committed on success; after the commit, the
        queues given to _notify are announced to this process's listeners."""
        if check_schema and not self._schema_checked:
            self.check_schema()
        queues: set[str] = set()
        with self._write_lock, self._wrap_errors():
            conn = self._conn()
            self._local.pending = queues
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                queues.clear()
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error as exc:  # the original error matters more
                        logger.warning("ROLLBACK failed: %s", exc)
                raise
            finally:
                self._local.pending = None
        self._announce(queues)

    @contextmanager
    def _wrap_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if message.startswith("no such table"):
                self._schema_checked = False
                raise SchemaNotMigrated(
                    f"the pypgflow tables are missing in the SQLite database {self.path}: "
                    "run `pypgflow migrate` (or app.migrate())"
                ) from exc
            if "locked" in message or "busy" in message:
                raise DatabaseUnavailable(
                    f"the SQLite database {self.path} stayed locked by another writer for more "
                    f"than {self.busy_timeout:g} s ({message})"
                ) from exc
            if any(
                cause in message for cause in ("unable to open", "disk I/O", "readonly", "full")
            ):
                raise DatabaseUnavailable(f"SQLite database {self.path}: {message}") from exc
            raise DatabaseError(f"SQLite error in {self.path}: {message}") from exc
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise DatabaseUnavailable(
                    f"cannot open the SQLite database {self.path}: {exc}"
                ) from exc
            raise DatabaseError(f"SQLite error in {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise DatabaseError(f"SQLite error in {self.path}: {exc}") from exc
        except UnicodeEncodeError as exc:  # a lone surrogate in a name: SQLite takes UTF-8 only
            raise DatabaseError(
                f"cannot store a string that is not valid Unicode in {self.path}: {exc}"
            ) from exc

    def _q(self, name: str) -> str:
        return self._queries[name]

    def close(self) -> None:
        for stop in list(self._stop_pollers):
            stop()
        with self._connections_lock:
            connections, self._connections = self._connections, []
            self._generation += 1
        for _, conn in connections:
            conn.close()
        with self._lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None
        self._schema_checked = False

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        applied: list[int] = []
        # BEGIN IMMEDIATE: a second process migrating at the same time waits, then finds the
        # schema current.
        with self._transaction(check_schema=False) as conn:
            current = self._installed_version(conn)
            if current is None:
                _run_script(conn, self._schema_sql)
                for version, name, _ in self._migrations:
                    self._record(conn, version, name)
                applied = [v for v, _, _ in self._migrations]
            else:
                for version, name, text in self._migrations:
                    if version > current:
                        _run_script(conn, text)
                        self._record(conn, version, name)
                        applied.append(version)
        self._schema_checked = True
        if applied:
            logger.info("migrated %s to schema version %d", self.path, self.latest_version)
        return applied

    def migrate_step_by_step(self) -> None:
        """Apply every migration in order, one transaction each (for tests of the migrations)."""
        for version, name, text in self._migrations:
            with self._transaction(check_schema=False) as conn:
                current = self._installed_version(conn) or 0
                if version > current:
                    _run_script(conn, text)
                    self._record(conn, version, name)

    def _record(self, conn: sqlite3.Connection, version: int, name: str) -> None:
        conn.execute(self._q("record_migration"), {"version": version, "name": name})

    def _installed_version(self, conn: sqlite3.Connection) -> int | None:
        (exists,) = conn.execute(self._q("migrations_table_exists")).fetchone()
        if not exists:
            return None
        row = conn.execute(self._q("schema_version")).fetchone()
        return int(row[0]) if row else 0

    def check_schema(self) -> None:
        with self._connection(check_schema=False) as conn:
            version = self._installed_version(conn)
        if version is None:
            raise SchemaNotMigrated(
                f"the pypgflow tables are missing in the SQLite database {self.path}: "
                "run `pypgflow migrate` (or app.migrate())"
            )
        if version < self.latest_version:
            raise SchemaNotMigrated(
                f"the pypgflow schema in {self.path} is at version {version}, this pypgflow "
                f"needs {self.latest_version}: run `pypgflow migrate` (or app.migrate())"
            )
        if version > self.latest_version:
            raise SchemaNotMigrated(
                f"the pypgflow schema in {self.path} is at version {version}, newer than this "
                f"pypgflow knows ({self.latest_version}): upgrade pypgflow"
            )
        self._schema_checked = True

    # -- starting runs ---------------------------------------------------------------------

    def start_runs(self, requests: Sequence[StartRequest], connection: Any = None) -> list[str]:
        if connection is not None:
            raise NotSupported(
                "SqliteEngine cannot start runs inside a caller's transaction (connection=): "
                "that needs PostgreSQL"
            )
        if not requests:
            return []
        with self._transaction() as conn:
            return self._insert_runs(conn, requests)

    def _insert_runs(self, conn: sqlite3.Connection, requests: Sequence[StartRequest]) -> list[str]:
        """Runs, then the steps and root tasks of those actually inserted: three statements
        (SQLite has no data-modifying CTEs to make it one)."""
        rows = conn.execute(self._q("insert_runs"), {"runs": _runs_param(requests)}).fetchall()
        inserted = {row[0] for row in rows}
        fresh = [r for r in requests if r.run.id in inserted]
        if fresh:
            steps, tasks = _steps_and_tasks_params(fresh)
            conn.execute(self._q("insert_steps"), {"steps": steps})
            if tasks is not None:
                conn.execute(self._q("insert_root_tasks"), {"tasks": tasks})
        ids = self._resolve_ids(conn, requests, inserted)
        self._notify(conn, {r.run.queue for r in fresh})
        return ids

    def _resolve_ids(
        self, conn: sqlite3.Connection, requests: Sequence[StartRequest], inserted: set[str]
    ) -> list[str]:
        missing = [r.idempotency_key for r in requests if r.run.id not in inserted]
        existing: dict[str, str] = {}
        if missing:
            rows = conn.execute(self._q("runs_by_idempotency_key"), {"keys": _array(missing)})
            existing = {key: run_id for run_id, key in rows}
        return [
            r.run.id if r.run.id in inserted else existing[r.idempotency_key or ""]
            for r in requests
        ]

    def _notify(self, conn: sqlite3.Connection, queues: set[str]) -> None:
        """Announce work in ``queues`` once the current transaction commits (see _transaction)."""
        pending: set[str] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.update(queues)

    def _announce(self, queues: set[str]) -> None:
        """Wake this process's listeners (other processes see the commit in PRAGMA
        data_version)."""
        if not queues:
            return
        with self._listeners_lock:
            listeners = list(self._listeners)
        for on_work in listeners:
            for queue in sorted(queues):
                try:
                    on_work(queue)
                except Exception:  # a listener's failure is not the committer's
                    logger.exception("a work listener failed")

    # -- claiming and finishing --------------------------------------------------------------

    def claim_tasks(
        self, queue: str, limit: int, *, instance_id: str, workflows: Sequence[str]
    ) -> list[ClaimedTask]:
        with self._transaction() as conn:
            claimed = conn.execute(
                self._q("claim_tasks"),
                {
                    "queue": queue,
                    "limit": limit,
                    "instance_id": instance_id,
                    "workflows": _array(workflows),
                },
            ).fetchall()
            if not claimed:
                return []
            # PostgreSQL marks runs running in a later transaction so that a claim never waits
            # on a run's row lock; here the claim already holds the only lock, so the runs are
            # marked at once and a run is never seen pending while its first step runs. (The
            # worker's mark_runs_running that follows then changes nothing.)
            first_claims = sorted({row[1] for row in claimed if row[5] == 1})
            if first_claims:
                conn.execute(self._q("mark_runs_running"), {"ids": _array(first_claims)})
            inputs = {
                row[0]: (row[1], row[2])
                for row in conn.execute(
                    self._q("claimed_task_inputs"), {"ids": _array([row[0] for row in claimed])}
                )
            }
        tasks = []
        for task_id, run_id, step, index, workflow, attempt, max_attempts, item in sorted(claimed):
            # Decoded for each task (never shared): a step may change what it is given.
            run_input, dependency_outputs = inputs[task_id]
            tasks.append(
                ClaimedTask(
                    id=task_id,
                    run_id=run_id,
                    step=step,
                    task_index=index,
                    workflow=workflow,
                    attempt=attempt,
                    max_attempts=max_attempts,
                    input=_load(item),
                    run_input=_load(run_input),
                    dependency_outputs=_load(dependency_outputs) or {},
                )
            )
        return tasks

    def mark_runs_running(self, run_ids: Sequence[str]) -> None:
        with self._transaction() as conn:
            conn.execute(self._q("mark_runs_running"), {"ids": _array(sorted(set(run_ids)))})

    def finish_tasks(self, outcomes: Sequence[Outcome]) -> FinishResult:
        result = FinishResult()
        if not outcomes:
            return result
        completed = [o for o in outcomes if isinstance(o, Completed)]
        retries = [o for o in outcomes if isinstance(o, Failed) and o.retry_in is not None]
        finals = [o for o in outcomes if isinstance(o, Failed) and o.retry_in is None]
        with self._transaction() as conn:
            # The runs orchestration needs. (PostgreSQL also locks the runs of retries, to
            # change their tasks under the run lock; here the write lock covers everything.)
            runs = self._lock_runs(conn, {o.task.run_id for o in completed + finals})
            changes = Changes()
            if completed:
                outputs = {o.task.id: o.output for o in completed}
                rows = conn.execute(
                    self._q("complete_tasks"),
                    {
                        "outcomes": _rows(
                            {
                                "id": o.task.id,
                                "attempt": o.task.attempt,
                                # a plain step's output is stored on its step, not its task
                                "output": None if o.task.task_index is None else o.output,
                            }
                            for o in completed
                        )
                    },
                ).fetchall()
                result.accepted += len(rows)
                done = [
                    orchestration.TaskDone(run_id, step, index, outputs[task_id])
                    for task_id, run_id, step, index in rows
                ]
                orchestration.tasks_completed(runs, done, _Reader(self, conn), changes)
            if retries:
                rows = conn.execute(
                    self._q("retry_tasks"),
                    {
                        "outcomes": _rows(
                            {
                                "id": o.task.id,
                                "attempt": o.task.attempt,
                                "delay": o.retry_in,
                                "error": _error_json(o.error),
                            }
                            for o in retries
                        )
                    },
                ).fetchall()
                result.accepted += len(rows)
            if finals:
                errors = {o.task.id: o.error for o in finals}
                rows = conn.execute(
                    self._q("fail_tasks"),
                    {
                        "outcomes": _rows(
                            {
                                "id": o.task.id,
                                "attempt": o.task.attempt,
                                "error": _error_json(o.error),
                            }
                            for o in finals
                        )
                    },
                ).fetchall()
                result.accepted += len(rows)
                failed = [
                    orchestration.TaskFailedForGood(
                        run_id, step, index, attempt, AttemptError.from_dict(errors[task_id])
                    )
                    for task_id, run_id, step, index, attempt in rows
                ]
                orchestration.tasks_failed(runs, failed, changes)
            for run in runs.values():
                if run.status is RunStatus.PENDING and run.changed:
                    run.status = RunStatus.RUNNING
            self._apply(conn, changes)
            result.queues_with_new_work = changes.queues_with_new_work
        return result

    def _lock_runs(self, conn: sqlite3.Connection, run_ids: set[str]) -> dict[str, RunState]:
        """The state of these runs. Called inside BEGIN IMMEDIATE, whose write lock covers them
        (SQLite has no row locks, and needs none)."""
        if not run_ids:
            return {}
        ids = _array(sorted(run_ids))
        runs: dict[str, RunState] = {}
        for run_id, workflow, status, queue, priority, remaining in conn.execute(
            self._q("lock_runs"), {"ids": ids}
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
        for row in conn.execute(self._q("run_steps"), {"ids": ids}):
            (run_id, name, position, status, depends_on, remaining_deps, max_attempts, is_map,
             map_over, remaining_tasks, task_count) = row  # fmt: skip
            runs[run_id].steps[name] = StepState(
                name=name,
                position=position,
                status=StepStatus(status),
                depends_on=tuple(json.loads(depends_on)),
                remaining_deps=remaining_deps,
                max_attempts=max_attempts,
                is_map=bool(is_map),
                map_over=map_over,
                remaining_tasks=remaining_tasks,
                task_count=task_count,
            )
        return runs

    def _apply(self, conn: sqlite3.Connection, changes: Changes) -> None:
        """Write what orchestration decided: a statement per kind of change, whatever the count."""
        if changes.steps:
            conn.execute(
                self._q("update_steps"),
                {
                    "steps": _rows(
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
                    )
                },
            )
        if changes.new_tasks:
            conn.execute(self._q("insert_tasks"), {"tasks": _tasks_param(changes.new_tasks)})
        if changes.cancel_tasks_of:
            conn.execute(self._q("cancel_tasks_of_runs"), {"ids": _array(changes.cancel_tasks_of)})
        if changes.requeue_tasks_of:
            conn.execute(
                self._q("requeue_tasks"),
                {
                    "steps": _rows(
                        {"run_id": run_id, "step": step, "budget": budget}
                        for run_id, step, budget in changes.requeue_tasks_of
                    )
                },
            )
        if changes.runs:
            conn.execute(
                self._q("update_runs"),
                {
                    "runs": _rows(
                        {
                            "id": r.id,
                            "status": r.status.value,
                            "remaining_steps": r.remaining_steps,
                            "output": r.output,
                            "error": None if r.error is None else _error_json(r.error),
                        }
                        for r in changes.runs.values()
                    )
                },
            )
        self._notify(conn, changes.queues_with_new_work)

    def release_tasks(self, task_ids: Sequence[int], *, instance_id: str) -> int:
        if not task_ids:
            return 0
        with self._transaction() as conn:
            rows = conn.execute(
                self._q("release_tasks"), {"ids": _array(task_ids), "instance_id": instance_id}
            ).fetchall()
            self._notify(conn, {row[0] for row in rows})
        return len(rows)

    def still_running(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        with self._connection() as conn:
            rows = conn.execute(self._q("running_tasks_still_running"), {"ids": _array(task_ids)})
            return {row[0] for row in rows}

    def next_due_in(self, queues: Sequence[str], workflows: Sequence[str]) -> float | None:
        with self._connection() as conn:
            row = conn.execute(
                self._q("next_due"), {"queues": _array(queues), "workflows": _array(workflows)}
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def unknown_workflows_waiting(
        self, queues: Sequence[str], workflows: Sequence[str]
    ) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute(
                self._q("unknown_workflows_waiting"),
                {"queues": _array(queues), "workflows": _array(workflows)},
            ).fetchall()
        return [row[0] for row in rows]

    # -- operator verbs ---------------------------------------------------------------------

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
        run_id = _check_uuid(run_id)
        with self._transaction() as conn:
            runs = self._lock_runs(conn, {run_id})
            if run_id not in runs:
                raise RunNotFound(f"no run with id {run_id}")
            changes = Changes()
            changed = rule(runs[run_id], _Reader(self, conn), changes)
            if changed:
                self._apply(conn, changes)
            return changed

    # -- queries ----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunInfo | None:
        canonical = _canonical_uuid(run_id)
        if canonical is None:
            return None
        with self._snapshot() as conn:
            row = _dict_row(conn, self._q("get_run"), {"id": canonical})
            if row is None:
                return None
            steps = _dict_rows(conn, self._q("step_infos"), {"id": canonical})
            errors: dict[str, list[str]] = {}
            for step, error in conn.execute(self._q("step_errors"), {"id": canonical}):
                errors.setdefault(step, []).append(error)
        return _run_info(row, [_step_info(s, errors.get(s["name"], [])) for s in steps])

    def list_runs(
        self, *, status: RunStatus | None, workflow: str | None, limit: int
    ) -> list[RunInfo]:
        with self._connection() as conn:
            rows = _dict_rows(
                conn,
                self._q("list_runs"),
                {"status": status.value if status else None, "workflow": workflow, "limit": limit},
            )
        return [_run_info(row, []) for row in rows]

    def run_result(self, run_id: str) -> RunResult | None:
        canonical = _canonical_uuid(run_id)
        if canonical is None:
            return None
        with self._connection() as conn:
            row = conn.execute(self._q("run_result"), {"id": canonical}).fetchone()
        if row is None:
            return None
        return RunResult(RunStatus(row[0]), _load(row[1]), _load(row[2]))

    # -- instances --------------------------------------------------------------------------

    def register_instance(
        self, instance_id: str, *, hostname: str, pid: int, queues: dict[str, int]
    ) -> None:
        with self._transaction() as conn:
            conn.execute(
                self._q("upsert_instance"),
                {"id": instance_id, "hostname": hostname, "pid": pid, "queues": json.dumps(queues)},
            )

    def heartbeat_instance(self, instance_id: str, *, load: int) -> None:
        with self._transaction() as conn:
            conn.execute(self._q("heartbeat_instance"), {"id": instance_id, "load": load})

    def deregister_instance(self, instance_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(self._q("delete_instance"), {"id": instance_id})

    def list_instances(self, *, stale_after: float) -> list[InstanceInfo]:
        with self._connection() as conn:
            rows = conn.execute(self._q("list_instances")).fetchall()
        return [
            InstanceInfo(
                instance_id=row[0],
                hostname=row[1],
                pid=row[2],
                status="offline" if float(row[7]) > stale_after else "online",
                queues=dict(json.loads(row[3])),
                load=row[4],
                started_at=_timestamp(row[5]),
                heartbeat_at=_timestamp(row[6]),
            )
            for row in rows
        ]

    # -- notifications ----------------------------------------------------------------------

    def listen(self, on_work: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``on_work(queue)`` after every commit of this process that creates work, and
        (for a file) ``on_work("")`` within ``poll_interval`` of any other process's commit."""
        with self._listeners_lock:
            self._listeners.append(on_work)
        stop = threading.Event()
        thread: threading.Thread | None = None
        if not self.memory:
            thread = threading.Thread(
                target=self._poll_data_version,
                args=(on_work, stop),
                name="pypgflow-sqlite-listen",
                daemon=True,
            )
            thread.start()

        def stop_listening() -> None:
            with self._listeners_lock:
                if on_work in self._listeners:
                    self._listeners.remove(on_work)
            stop.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2.0)
            if stop_listening in self._stop_pollers:
                self._stop_pollers.remove(stop_listening)

        self._stop_pollers.append(stop_listening)
        return stop_listening

    def _poll_data_version(self, on_work: Callable[[str], None], stop: threading.Event) -> None:
        """Poll PRAGMA data_version on a connection of its own: it changes when any other
        connection commits. Reopens the database until stopped."""
        delay = 0.1
        while not stop.is_set():
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
                try:
                    (last,) = conn.execute(self._q("data_version")).fetchone()
                    delay = 0.1
                    on_work("")  # (re)opened: anything may have arrived meanwhile
                    while not stop.wait(self.poll_interval):
                        (version,) = conn.execute(self._q("data_version")).fetchone()
                        if version != last:
                            last = version
                            on_work("")
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                if stop.is_set():
                    return
                logger.warning("cannot watch %s for changes (%s); retrying", self.path, exc)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                logger.exception("a work listener failed")
                stop.wait(delay)


class _Reader:
    """Orchestration's reads, inside the engine's transaction."""

    def __init__(self, engine: SqliteEngine, conn: sqlite3.Connection) -> None:
        self.engine = engine
        self.conn = conn

    def step_outputs(self, run_id: str, names: Sequence[str]) -> dict[str, str]:
        rows = self.conn.execute(
            self.engine._q("step_outputs"), {"run_id": run_id, "names": _array(names)}
        )
        return {name: text for name, text in rows}

    def map_outputs(self, run_id: str, step: str) -> list[str]:
        rows = self.conn.execute(self.engine._q("map_outputs"), {"run_id": run_id, "step": step})
        return [text if text is not None else "null" for (text,) in rows]

    def run_input(self, run_id: str) -> str | None:
        row = self.conn.execute(self.engine._q("run_input"), {"run_id": run_id}).fetchone()
        return None if row is None else row[0]


# -- batch parameters: one JSON array per statement ----------------------------------------------


def _array(values: Sequence[Any]) -> str:
    """A JSON array parameter, for ``IN (SELECT value FROM json_each(:param))``."""
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def _rows(rows: Any) -> str:
    """A JSON array of objects, one per row, for ``json_each(:param)`` and ``value ->> '$.f'``.
    JSON texts (inputs, outputs, errors) travel as JSON strings, so they are stored verbatim."""
    return json.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))


def _runs_param(requests: Sequence[StartRequest]) -> str:
    return _rows(
        {
            "id": r.run.id,
            "workflow": r.run.workflow,
            "status": r.run.status.value,
            "queue": r.run.queue,
            "priority": r.run.priority,
            "idempotency_key": r.idempotency_key,
            "input": r.run.input,
            "remaining_steps": r.run.remaining_steps,
            "run_at": None if r.run_at is None else r.run_at.timestamp(),
            "delay": float(r.delay),
            "output": r.run.output,
        }
        for r in requests
    )


def _steps_and_tasks_params(requests: Sequence[StartRequest]) -> tuple[str, str | None]:
    """The steps and root tasks of inserted runs (tasks None when there are none)."""
    steps = _rows(
        {
            "run_id": r.run.id,
            "name": s.name,
            "position": s.position,
            "status": s.status.value,
            "depends_on": json.dumps(list(s.depends_on)),
            "remaining_deps": s.remaining_deps,
            "max_attempts": s.max_attempts,
            "is_map": s.is_map,
            "map_over": s.map_over,
            "remaining_tasks": s.remaining_tasks,
            "task_count": s.task_count,
            "output": s.output,
        }
        for r in requests
        for s in r.run.steps.values()
    )
    tasks = [t for r in requests for t in r.changes.new_tasks]
    return steps, (_tasks_param(tasks) if tasks else None)


def _error_json(error: dict[str, Any]) -> str:
    """An attempt's error as JSON text. Errors are written by pypgflow, not by step code, so they
    are made storable rather than refused: ASCII escapes keep any character of an exception
    message (a NUL, a lone surrogate) intact through SQLite's JSON functions."""
    return json.dumps(error, default=str)


def _tasks_param(tasks: Sequence[orchestration.NewTask]) -> str:
    return _rows(
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
    )


# -- scripts -------------------------------------------------------------------------------------


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute a schema script statement by statement, inside the caller's transaction
    (``executescript`` would commit it first)."""
    for statement in _statements(script):
        conn.execute(statement)


def _statements(script: str) -> list[str]:
    """The statements of a script: cut at each ``;`` that completes one (SQLite's own tokenizer
    decides, so semicolons in strings and comments do not cut)."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statements.append(script[start : index + 1].strip())
            start = index + 1
    rest = "\n".join(
        line for line in script[start:].splitlines() if not line.strip().startswith("--")
    )
    if rest.strip():
        raise ValueError(f"incomplete SQL statement at the end of a script: {rest.strip()[:80]!r}")
    return statements


# -- records -------------------------------------------------------------------------------------


def _canonical_uuid(value: str) -> str | None:
    """Run ids are stored as canonical UUID text; any spelling of one finds its run."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _check_uuid(value: str) -> str:
    canonical = _canonical_uuid(value)
    if canonical is None:
        raise RunNotFound(f"no run with id {value!r} (run ids are UUIDs)")
    return canonical


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _timestamp(seconds: float) -> datetime:
    # SQLite's clock has millisecond resolution; julianday arithmetic adds noise below it.
    return datetime.fromtimestamp(round(seconds, 3), tz=UTC)


def _maybe_timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else _timestamp(seconds)


def _dict_rows(
    conn: sqlite3.Connection, query: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cursor = conn.execute(query, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _dict_row(
    conn: sqlite3.Connection, query: str, params: dict[str, Any]
) -> dict[str, Any] | None:
    rows = _dict_rows(conn, query, params)
    return rows[0] if rows else None


def _run_info(row: dict[str, Any], steps: list[StepInfo]) -> RunInfo:
    return RunInfo(
        id=row["id"],
        workflow=row["workflow"],
        status=RunStatus(row["status"]),
        input=_load(row["input"]),
        output=_load(row["output"]),
        error=_load(row["error"]),
        created_at=_timestamp(row["created_at"]),
        started_at=_maybe_timestamp(row["started_at"]),
        finished_at=_maybe_timestamp(row["finished_at"]),
        queue=row["queue"],
        priority=row["priority"],
        scheduled_at=_maybe_timestamp(row["scheduled_at"]),
        idempotency_key=row["idempotency_key"],
        steps=tuple(steps),
    )


def _step_info(row: dict[str, Any], error_texts: list[str]) -> StepInfo:
    errors = tuple(AttemptError.from_dict(json.loads(e)) for e in error_texts)
    status = StepStatus(row["status"])
    return StepInfo(
        name=row["name"],
        status=status,
        attempts=row["attempts"],
        output=_load(row["output"]),
        error=errors[-1] if errors and status is StepStatus.FAILED else None,
        started_at=_maybe_timestamp(row["started_at"]),
        finished_at=_maybe_timestamp(row["finished_at"]),
        instance_id=row["instance_id"],
        depends_on=tuple(json.loads(row["depends_on"])),
        is_map=bool(row["is_map"]),
        task_count=row["task_count"],
        errors=errors,
    )


__all__ = ["NotSupported", "SqliteEngine", "sqlite_path_from_url"]
