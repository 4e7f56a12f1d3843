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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from pypgflow.engines.base import (
    ClaimedTask,
    StartRequest,
)
from pypgflow.engines.sql import SqlEngine, canonical_run_id, check_schema_version, task_rows
from pypgflow.engines.sqlfile import load_queries, migration_files, read_sql
from pypgflow.errors import (
    AttemptError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    NotSupported,
    SchemaNotMigrated,
)
from pypgflow.records import RunInfo, StepInfo
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


class SqliteEngine(SqlEngine[sqlite3.Connection]):
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
    commits (``PRAGMA data_version``, a read of shared memory: cheap even every 5 ms).
    """

    supports_transactional_start = False
    notifies_other_processes = True

    def __init__(
        self,
        path_or_url: str | os.PathLike[str],
        *,
        synchronous: str | None = None,
        busy_timeout: float = 10.0,
        poll_interval: float = 0.005,
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

    # -- what SqlEngine needs -------------------------------------------------------------

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction()

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._connection()

    def _fetch(
        self, conn: sqlite3.Connection, name: str, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        return conn.execute(self._q(name), params or {}).fetchall()

    def _execute(
        self, conn: sqlite3.Connection, name: str, params: Mapping[str, Any] | None = None
    ) -> None:
        conn.execute(self._q(name), params or {})

    def _ids(self, values: Iterable[Any]) -> str:
        return _array(list(values))

    def _batch(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """One JSON array of row objects, for ``json_each(:rows)``."""
        return {"rows": _rows(rows)}

    def _json(self, value: Any) -> Any:
        return _load(value)

    def _time(self, value: Any) -> datetime:
        return _timestamp(value)

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

    def _migrating(self) -> AbstractContextManager[sqlite3.Connection]:
        # BEGIN IMMEDIATE: a second process migrating at the same time waits, then finds the
        # schema current.
        return self._transaction(check_schema=False)

    def _run_script(self, conn: sqlite3.Connection, script: Any) -> None:
        _run_script(conn, script)

    def _record(self, conn: sqlite3.Connection, version: int, name: str) -> None:
        conn.execute(self._q("record_migration"), {"version": version, "name": name})

    def _installed_version(self, conn: sqlite3.Connection) -> int | None:
        (exists,) = conn.execute(self._q("migrations_table_exists")).fetchone()
        if not exists:
            return None
        row = conn.execute(self._q("schema_version")).fetchone()
        return int(row[0]) if row else 0

    def check_schema(self) -> None:
        if not self.memory and not os.path.exists(self.path):
            # Checked before connecting: opening it would leave an empty file behind.
            raise SchemaNotMigrated(
                f"there is no SQLite database at {self.path}: run `pypgflow migrate` "
                "(or app.migrate()) to create it"
            )
        with self._connection(check_schema=False) as conn:
            version = self._installed_version(conn)
        check_schema_version(
            version,
            self.latest_version,
            missing=f"the pypgflow tables are missing in the SQLite database {self.path}",
            schema=f"the pypgflow schema in {self.path}",
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
            # The claim holds the only (write) lock, so its runs are marked running at once.
            first_claims = sorted({row[1] for row in claimed if row[5] == 1})
            if first_claims:
                conn.execute(self._q("mark_claimed_runs_running"), {"ids": _array(first_claims)})
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

    # -- operator verbs ---------------------------------------------------------------------

    # -- queries ----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunInfo | None:
        canonical = canonical_run_id(run_id)
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

    # -- instances --------------------------------------------------------------------------

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
    return steps, (_rows(task_rows(tasks)) if tasks else None)


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
        error=None if row["error"] is None else AttemptError.from_dict(json.loads(row["error"])),
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
