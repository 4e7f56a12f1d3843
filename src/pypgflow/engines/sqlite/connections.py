"""The connections of one SQLite engine: one per thread for reads, one for write transactions,
and how writers wait for the file's write lock.

- **Reads**: each thread has its own connection (sqlite3 connections are not for concurrent
  use), opened on first use; connections left by threads that ended are closed as new ones
  open. In WAL mode readers never wait for a writer.
- **Writes** go through one connection, under a lock that every engine of this process writing
  to the same file shares: this process's writers queue there and are woken at once, where
  SQLite's busy handler would sleep and poll. The writer has no busy timeout of its own: it
  waits for other processes' writers by taking its turn (``turns.py``).
- ``:memory:`` lives in one connection, which the threads share under a lock (reads and writes).

``close()`` closes them all; a later use opens new ones (a generation number tells the threads).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pypgflow.engines.sqlite.turns import WriterTurns
from pypgflow.errors import DatabaseUnavailable

_writers: dict[str, tuple[threading.Lock, WriterTurns]] = {}
_writers_guard = threading.Lock()


def _process_writers(path: str) -> tuple[threading.Lock, WriterTurns]:
    """The lock this process's writers to ``path`` share, whichever engine they use, and the
    turns they take with other processes' writers."""
    key = os.path.normcase(os.path.realpath(path))
    with _writers_guard:
        if key not in _writers:
            _writers[key] = (threading.Lock(), WriterTurns(key))
        return _writers[key]


class Connections:
    """The connections to ``path`` (or ``:memory:``, when ``memory``), each configured by
    ``setup`` (statements run once per connection) with a busy timeout of ``busy_timeout``
    seconds for reads; the writer then runs ``writer_setup`` (which takes its busy timeout
    away: it waits by taking turns)."""

    def __init__(
        self,
        path: str,
        *,
        memory: bool,
        busy_timeout: float,
        setup: Sequence[str],
        writer_setup: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.memory = memory
        self.busy_timeout = busy_timeout
        self._setup = list(setup)
        self._writer_setup = list(writer_setup)
        self._local = threading.local()
        self._generation = 0  # bumped by close(): threads then open new connections
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._writer_generation = 0
        #: the shared connection of :memory:, and the lock its users hold
        self._shared: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        #: held around every write transaction; for a file, shared by the process's engines
        self.write_lock: AbstractContextManager[Any] = self._lock
        #: the turns this process's writers take with other processes' (None: :memory:)
        self.turns: WriterTurns | None = None
        if not memory:
            self.write_lock, self.turns = _process_writers(path)

    def open(self, *, writer: bool = False) -> sqlite3.Connection:
        """A new connection, configured; an error names the file.

        The setup runs under the busy timeout, the writer's too: switching a new file to WAL
        needs a lock another process may hold for a moment (a concurrent migration), which a
        writer without a timeout would take for an error. Only then does the writer lose it."""
        try:
            conn = sqlite3.connect(
                self.path,
                # SQLite's busy_timeout (reads rarely need it in WAL mode; the writer has none)
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit: transactions are explicit BEGIN ... COMMIT
                check_same_thread=False,  # close() closes every thread's connection
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(
                f"cannot open the SQLite database {self.path}: {exc}"
            ) from None
        try:
            for statement in [*self._setup, *(self._writer_setup if writer else [])]:
                conn.execute(statement).fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise DatabaseUnavailable(
                f"cannot open the SQLite database {self.path}: {exc}"
            ) from None
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's connection (the shared one for :memory:, used under ``guard()``)."""
        if self.memory:
            return self._shared_connection()
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.generation == self._generation:
            return conn
        conn = self.open()
        with self._readers_lock:
            # Threads come and go (thread pools, asyncio.to_thread): close what they left.
            alive = []
            for thread, other in self._readers:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    other.close()
            alive.append((threading.current_thread(), conn))
            self._readers = alive
            local.conn, local.generation = conn, self._generation
        return conn

    def writer(self) -> sqlite3.Connection:
        """The connection of write transactions, for the holder of ``write_lock``. It has no
        busy timeout: a writer waits for the write lock by taking its turn (turns.py), polling
        rather than sleeping in SQLite's busy handler."""
        if self.memory:
            return self._shared_connection()
        conn = self._writer
        if conn is None or self._writer_generation != self._generation:
            conn = self._writer = self.open(writer=True)
            self._writer_generation = self._generation
        return conn

    def begin_write(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` on the writer, waiting for other processes' writers in turn."""
        if self.turns is None:
            conn.execute("BEGIN IMMEDIATE")
        else:
            self.turns.begin(conn, self.busy_timeout)

    def guard(self) -> AbstractContextManager[Any]:
        """Exclusive use of the connection: needed only when threads share one (:memory:)."""
        return self._lock if self.memory else nullcontext()

    def _shared_connection(self) -> sqlite3.Connection:
        with self._lock:
            if self._shared is None:
                self._shared = self.open()
            return self._shared

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
            self._generation += 1
        for _, conn in readers:
            conn.close()
        with self.write_lock:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
        with self._lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None
