"""The SQLite engine: runs, steps and tasks in one database file; no server.

The same storage, the same orchestration, the same records as the PostgreSQL engine, on the
standard library's ``sqlite3``: a new user runs durable workflows from a file, and moves to
PostgreSQL by changing the URL. Every statement lives in ``queries.sql``, and what both engines
share in :class:`pypgflow.engines.sql.SqlEngine`; this module owns SQLite's connections and
transactions, wraps driver errors into pypgflow's, and starts and claims runs its own way. Its
URLs are read by ``url.py``, its connections kept by ``connections.py``, its parameters encoded
by ``params.py`` (a batch is one JSON array parameter, read with ``json_each``), and new work
announced by ``listen.py``.

What SQLite does differently:

- Writers are serialized by the database itself: every write transaction is ``BEGIN
  IMMEDIATE`` (the write lock is taken up front, so two transactions never deadlock upgrading a
  read lock), and a claim is one ``UPDATE ... RETURNING`` under that lock instead of ``SKIP
  LOCKED``. Threads of one process queue on a Python lock rather than SQLite's sleeping busy
  handler, and processes take turns at the write lock (``turns.py``), each waiting up to
  ``busy_timeout``.
- No LISTEN/NOTIFY: this process's listeners are called after a commit that creates work (or
  finishes runs, for result() waiters), and other processes notice the commit in ``PRAGMA
  data_version`` (``listen.py``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from pypgflow.engines.base import ClaimedTask
from pypgflow.engines.sql import SqlEngine, finished_at_start
from pypgflow.engines.sqlbase import Row
from pypgflow.engines.sqlfile import load_queries, migration_files, read_sql
from pypgflow.engines.sqlite.connections import Connections
from pypgflow.engines.sqlite.listen import CommitListeners
from pypgflow.engines.sqlite.params import (
    json_array,
    json_rows,
    load_json,
    root_tasks_param,
    runs_param,
)
from pypgflow.engines.sqlite.script import run_script
from pypgflow.engines.sqlite.url import MEMORY, check_synchronous, parse_url
from pypgflow.engines.starts import StartRequest
from pypgflow.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    NotSupported,
    SchemaNotMigrated,
)
from pypgflow.serialization import outputs_by_step

logger = logging.getLogger("pypgflow.engine.sqlite")

_PACKAGE = "pypgflow.engines.sqlite"
_MIGRATIONS = f"{_PACKAGE}.migrations"
#: json_each, ``->>`` (3.38), RETURNING (3.35), UPDATE ... FROM (3.33), STRICT tables (3.37)
MIN_SQLITE_VERSION = (3, 38, 0)


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
            target, options = parse_url(target)
        if not target:
            raise ConfigurationError("the SQLite engine needs a database path")
        self.memory = target == MEMORY
        # Absolute now: a later chdir must not move the database of new threads' connections.
        self.path = MEMORY if self.memory else os.path.abspath(target)
        self.synchronous = check_synchronous(synchronous or options.get("synchronous", "full"))
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        if self.memory:
            self.notifies_other_processes = False  # nothing outside this process sees it
        self._queries = load_queries(_PACKAGE, "queries.sql")
        self._schema_sql = read_sql(_PACKAGE, "schema.sql")
        self._migrations = migration_files(_MIGRATIONS)
        self.latest_version = self._migrations[-1][0]
        self._schema_checked = False
        #: what the write transaction of this thread will announce when it commits
        self._local = threading.local()
        #: one connection per thread for reads, one for writes (see connections.py)
        self._connections = Connections(
            self.path,
            memory=self.memory,
            busy_timeout=busy_timeout,
            setup=[
                *([] if self.memory else [self._q("journal_mode_wal")]),
                self._q("foreign_keys_on"),
                self._q(f"synchronous_{self.synchronous}"),
            ],
            writer_setup=[self._q("busy_timeout_none")],
        )
        self._listeners = CommitListeners(
            None if self.memory else self.path,
            busy_timeout=busy_timeout,
            poll_interval=poll_interval,
            data_version=self._q("data_version"),
        )
        self._finish_listeners = CommitListeners(
            None if self.memory else self.path,
            busy_timeout=busy_timeout,
            poll_interval=poll_interval,
            data_version=self._q("data_version"),
            kind="finished runs",
            thread_name="pypgflow-sqlite-listen-done",
        )

    def __repr__(self) -> str:
        return f"SqliteEngine({self.path!r})"

    # -- connections -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection for reads (the shared one for :memory:)."""
        return self._connections.reader()

    def _writer(self) -> sqlite3.Connection:
        """The connection of write transactions (see connections.py)."""
        return self._connections.writer()

    @contextmanager
    def _connection(self, *, check_schema: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection for reads, one statement per implicit transaction; errors become
        pypgflow's."""
        if check_schema and not self._schema_checked:
            self.check_schema()
        with self._connections.guard(), self._wrap_errors():
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
        queues given to _notify and the runs given to _notify_finished are announced to this
        process's listeners."""
        if check_schema and not self._schema_checked:
            self.check_schema()
        queues: set[str] = set()
        finished: set[str] = set()
        with self._connections.write_lock, self._wrap_errors():
            conn = self._writer()
            self._local.pending = queues
            self._local.finished = finished
            self._connections.begin_write(conn)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                queues.clear()
                finished.clear()
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error as exc:  # the original error matters more
                        logger.warning("ROLLBACK failed: %s", exc)
                raise
            finally:
                self._local.pending = None
                self._local.finished = None
        self._listeners.announce(queues)
        self._finish_listeners.announce(finished)

    @contextmanager
    def _wrap_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if message.startswith("no such table"):
                self._schema_checked = False
                raise SchemaNotMigrated(
                    f"{self._schema_missing}: run `pypgflow migrate` (or app.migrate())"
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
        return json_array(list(values))

    def _batch(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """One JSON array of row objects, for ``json_each(:rows)``."""
        return {"rows": json_rows(rows)}

    def _json(self, value: Any) -> Any:
        return load_json(value)

    def _time(self, value: Any) -> datetime:
        # SQLite's clock has millisecond resolution; julianday arithmetic adds noise below it.
        return datetime.fromtimestamp(round(value, 3), tz=UTC)

    def _step_errors(
        self, conn: sqlite3.Connection, run_id: str, steps: list[Row]
    ) -> Mapping[str, Sequence[Any]]:
        """SQLite before 3.44 cannot order inside an aggregate: step_infos leaves the errors
        out, and step_errors reads them, in the order of PostgreSQL's aggregate."""
        errors: dict[str, list[Any]] = {}
        for step, error in self._fetch(conn, "step_errors", {"id": run_id}):
            errors.setdefault(step, []).append(error)
        return errors

    def close(self) -> None:
        self._listeners.stop_all()
        self._finish_listeners.stop_all()
        self._connections.close()
        self._schema_checked = False

    # -- schema ----------------------------------------------------------------------------

    @property
    def _schema_missing(self) -> str:
        return f"the pypgflow tables are missing in the SQLite database {self.path}"

    @property
    def _schema_label(self) -> str:
        return f"the pypgflow schema in {self.path}"

    def _unchecked_read(self) -> AbstractContextManager[sqlite3.Connection]:
        if not self.memory and not os.path.exists(self.path):
            # Checked before connecting: opening it would leave an empty file behind.
            raise SchemaNotMigrated(
                f"there is no SQLite database at {self.path}: run `pypgflow migrate` "
                "(or app.migrate()) to create it"
            )
        return self._connection(check_schema=False)

    def _migrating(self) -> AbstractContextManager[sqlite3.Connection]:
        # BEGIN IMMEDIATE: a second process migrating at the same time waits, then finds the
        # schema current.
        return self._transaction(check_schema=False)

    def _run_script(self, conn: sqlite3.Connection, script: Any) -> None:
        run_script(conn, script)

    def _installed_version(self, conn: sqlite3.Connection) -> int | None:
        if not self._fetch(conn, "migrations_table_exists")[0][0]:
            return None
        rows = self._fetch(conn, "schema_version")
        return int(rows[0][0]) if rows else 0

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
        """Runs, then the root tasks of those actually inserted: two statements (SQLite has no
        data-modifying CTEs to make it one)."""
        rows = conn.execute(self._q("insert_runs"), {"runs": runs_param(requests)}).fetchall()
        inserted = {row[0] for row in rows}
        fresh = [r for r in requests if r.run.id in inserted]
        tasks = root_tasks_param(fresh)
        if tasks is not None:
            conn.execute(self._q("insert_root_tasks"), {"tasks": tasks})
        ids = self._resolve_ids(conn, requests, inserted)
        self._notify(conn, {r.run.queue for r in fresh})
        self._notify_finished(conn, finished_at_start(requests, inserted))
        return ids

    def _notify(self, conn: sqlite3.Connection, queues: set[str]) -> None:
        """Announce work in ``queues`` once the current transaction commits (see _transaction)."""
        pending: set[str] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.update(queues)

    def _notify_finished(self, conn: sqlite3.Connection, run_ids: set[str]) -> None:
        """Announce finished runs once the current transaction commits (see _transaction)."""
        finished: set[str] | None = getattr(self._local, "finished", None)
        if finished is not None:
            finished.update(run_ids)

    # -- claiming and finishing --------------------------------------------------------------

    def claim_tasks(
        self,
        queue: str,
        limit: int,
        *,
        instance_id: str,
        workflows: Sequence[str],
        versions: Sequence[str] | None = None,
    ) -> list[ClaimedTask]:
        with self._transaction() as conn:
            claimed = conn.execute(
                self._q("claim_tasks"),
                {
                    "queue": queue,
                    "limit": limit,
                    "instance_id": instance_id,
                    "workflows": json_array(workflows),
                    "versions": None if versions is None else json_array(versions),
                },
            ).fetchall()
            if not claimed:
                return []
            inputs = {
                row[0]: (row[1], row[2], bool(row[3]), row[4], row[5])
                for row in conn.execute(
                    self._q("claimed_task_inputs"), {"ids": json_array([row[0] for row in claimed])}
                )
            }
        tasks = []
        # A step's dependency outputs come with one of its tasks: the others share the text
        outputs = outputs_by_step((row[1], row[2], inputs[row[0]][1]) for row in claimed)
        # In claim order (RETURNING's order is not): the worker starts them in this order.
        claimed.sort(key=lambda row: (row[8], row[9], row[0]))
        for task_id, run_id, step, index, workflow, attempt, max_attempts, item, *rest in claimed:
            # Decoded for each task (never shared): a step may change what it is given.
            run_input, _, run_pending, trace_context, child = inputs[task_id]
            tasks.append(
                ClaimedTask(
                    id=task_id,
                    run_id=run_id,
                    step=step,
                    task_index=index,
                    workflow=workflow,
                    attempt=attempt,
                    max_attempts=max_attempts,
                    input=load_json(item),
                    run_input=load_json(run_input),
                    dependency_outputs=outputs(run_id, step),
                    run_pending=run_pending,
                    trace_context=trace_context,
                    version=rest[2],
                    priority=rest[0],
                    child_run_id=rest[3],
                    child=load_json(child),
                    queue=queue,
                )
            )
        return tasks

    # -- notifications ----------------------------------------------------------------------

    def listen(self, on_work: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``on_work(queue)`` after every commit of this process that creates work, and
        (for a file) ``on_work("")`` within ``poll_interval`` of any other process's commit."""
        return self._listeners.add(on_work)

    def listen_finished(self, on_finished: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``on_finished(run_id)`` after every commit of this process that finishes a run,
        and (for a file) ``on_finished("")`` within ``poll_interval`` of any other connection's
        commit."""
        return self._finish_listeners.add(on_finished)

    # -- the operators' reads (engines/insight.py) -------------------------------------------

    def _instant(self, moment: datetime) -> Any:
        return moment.timestamp()  # REAL epoch seconds, as stored


__all__ = ["NotSupported", "SqliteEngine"]
