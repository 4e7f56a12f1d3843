"""The connections of one PostgreSQL engine: a pool whose connections are checked without a
round trip as they are taken, watched for the server's answer while in use (deadline.py), and
whose driver errors become pypgflow's.

Why apart from the engine: every statement passes through here, the hottest ones (a start, a
claim: one statement in a transaction of its own) by :meth:`PooledConnections.fetch_alone`, the
same steps as :meth:`PooledConnections.session` written out without its context managers: in a
producer's loop of starts, about 50 µs less of the client's processor time per start (of 250).
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from pypgflow.engines.postgres.deadline import AnswerDeadline
from pypgflow.errors import DatabaseError, DatabaseUnavailable, InvalidArgument


def describe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<invalid connection string>"
    host = parts.get("host", "localhost")
    return f"{parts.get('user', '')}@{host}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PooledConnections:
    """The pool of connections to ``url``, opened on first use.

    ``schema_missing()`` makes the error for a statement that found no table of the schema;
    ``answer_timeout``: see :class:`AnswerDeadline` (None: none).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        answer_timeout: float | None,
        schema_missing: Callable[[], Exception],
    ) -> None:
        if answer_timeout is not None and (
            isinstance(answer_timeout, bool)
            or not isinstance(answer_timeout, int | float)
            or not answer_timeout > 0
        ):
            raise InvalidArgument(
                f"answer_timeout must be a number of seconds > 0 or None, got {answer_timeout!r}"
            )
        self.url = url
        self.connect_timeout = connect_timeout
        self._schema_missing = schema_missing
        #: a call waiting longer for the server's answer loses its connection (see deadline.py)
        self.deadline = AnswerDeadline(answer_timeout, where=describe_url(url))
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # Every statement prepared on a connection's first use of it, as asyncpg does: a
            # start or a claim sent fewer than psycopg's default 5 times would be parsed and
            # planned each time (a millisecond for the CTEs of a start), which a producer's or
            # an idle worker's first calls would pay. The statements are a fixed set, fewer
            # than the 100 a connection keeps; scripts (several statements) are not prepared.
            kwargs={"connect_timeout": max(1, int(connect_timeout)), "prepare_threshold": 0},
            configure=_configure,
            name=name,
        )
        self._opened = False
        self._open_lock = threading.Lock()

    @property
    def answer_timeout(self) -> float | None:
        return self.deadline.seconds

    def open(self) -> None:
        """Open the pool, once: DatabaseUnavailable, saying why, if the server cannot be reached."""
        if not self._opened:
            self._open_locked()

    def _open_locked(self) -> None:
        with self._open_lock:
            if self._opened:
                return
            try:  # a direct connection first: its error says what is wrong, a pool timeout would not
                psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout))).close()
            except psycopg.Error as exc:
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL at {describe_url(self.url)}: {str(exc).strip()}"
                ) from None
            self._pool.open(wait=False)
            self._opened = True

    def close(self) -> None:
        """Close every connection (a later use opens the pool again)."""
        if self._opened:
            self._pool.close()
            self._opened = False
        self.deadline.close()

    @contextmanager
    def session(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A live connection, in a transaction committed on success (``autocommit``: each
        statement its own transaction, for the block); driver errors become pypgflow's."""
        with self.translated_errors():
            conn = self._take()
            try:
                with self.deadline.watch(conn):
                    if autocommit:
                        conn.autocommit = True
                        try:
                            yield conn
                        finally:
                            if not conn.closed:
                                conn.autocommit = False
                    else:
                        with conn:
                            yield conn
            finally:
                self._pool.putconn(conn)

    def fetch_alone(
        self, statement: sql.SQL, params: Mapping[str, Any] | None
    ) -> list[tuple[Any, ...]]:
        """The rows of one statement run in a transaction of its own: :meth:`session` in
        autocommit mode for one statement, without the context managers."""
        try:
            conn = self._take()
            try:
                token = self.deadline.begin(conn)
                try:
                    conn.autocommit = True
                    try:
                        cursor = conn.cursor(row_factory=tuple_row)
                        return cursor.execute(statement, params).fetchall()
                    finally:
                        if not conn.closed:
                            conn.autocommit = False
                finally:
                    self.deadline.end(token)
            finally:
                self._pool.putconn(conn)
        except psycopg.Error as exc:
            raise self.translated(exc) from exc

    def _take(self) -> psycopg.Connection[Any]:
        """A live connection from the pool.

        A connection is checked with a round trip only when the server has sent it something
        while it sat in the pool (a backend terminated, a server shutting down: a readable
        socket, found without a round trip); a dead one is discarded at once and the next one
        tried, since after a server restart every idle connection is dead and the pool's own
        check would back off for seconds between them. A connection cut without a word (a lost
        network) fails on its first statement instead, as it would after any check.
        """
        deadline = time.monotonic() + self.connect_timeout
        while True:
            conn = self._pool.getconn(timeout=max(0.1, deadline - time.monotonic()))
            if not _has_unread_input(conn):
                return conn
            try:
                ConnectionPool.check_connection(conn)
            except psycopg.Error:
                self._pool.putconn(conn)  # broken: the pool closes it and opens a new one
                if time.monotonic() >= deadline:
                    raise
                continue
            return conn

    @contextmanager
    def translated_errors(self) -> Iterator[None]:
        """Driver errors raised in the block become pypgflow's."""
        try:
            yield
        except psycopg.Error as exc:
            raise self.translated(exc) from exc

    def translated(self, exc: psycopg.Error) -> Exception:
        """pypgflow's error for a driver's."""
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return self._schema_missing()
        if isinstance(exc, PoolTimeout):  # before OperationalError, its base class
            return DatabaseUnavailable(
                f"no connection to PostgreSQL at {describe_url(self.url)} within "
                f"{self.connect_timeout:g} s"
            )
        if isinstance(exc, psycopg.OperationalError):
            return DatabaseUnavailable(
                f"lost the connection to PostgreSQL at {describe_url(self.url)}: {str(exc).strip()}"
            )
        return DatabaseError(f"PostgreSQL error: {str(exc).strip()}")


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Each new pooled connection: no JIT compilation. pypgflow's statements take milliseconds,
    but a few are estimated far costlier than they run (a run's steps with a map of thousands
    of elements, aggregated: estimated at a million, run in 13 ms), and past
    ``jit_above_cost`` PostgreSQL would spend a third of a second compiling each."""
    conn.execute("SET jit = off")
    conn.commit()


def _has_unread_input(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection's socket has something to read: the server spoke while it sat
    in the pool (an error before closing it, or the close itself). A zero-timeout poll, not a
    round trip."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)
