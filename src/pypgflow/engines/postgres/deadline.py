"""How long a call waits for PostgreSQL's answer, kept on the client.

libpq waits for an answer as long as the connection's socket stays open. When the server's side
goes silent without closing it (a half-open connection: a peer gone without a word, a NAT entry
expired, a proxy that lost its backend) nothing ever arrives, and a worker's heartbeat or claim
would hang for good; TCP notices only after the kernel's retransmission timeout (about fifteen
minutes), and not at all when something on the way still acknowledges the packets. So every
pooled connection in use is watched: one that has waited longer than the deadline has its
socket shut down, which wakes the waiting call with a connection error (``DatabaseUnavailable``)
and makes the pool replace the connection. The statement it carried may or may not have run,
as after any lost connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

logger = logging.getLogger("pypgflow.engine.postgres")

#: the default: far beyond any statement pypgflow sends (milliseconds), short enough that a
#: worker cut off by a silent server comes back within a minute of the server's return
DEFAULT_ANSWER_TIMEOUT = 60.0


class AnswerDeadline:
    """Watches connections in use (``watch``) from a thread of its own, started on first use,
    and shuts down the socket of any still in use ``seconds`` after it was taken."""

    def __init__(self, seconds: float | None, *, where: str) -> None:
        self.seconds = seconds
        self.where = where
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[psycopg.Connection[Any], float]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        #: connections closed for want of an answer, since the engine was made
        self.expired = 0

    @contextlib.contextmanager
    def watch(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """While the block runs, ``conn`` is closed if no answer came within the deadline."""
        token = self.begin(conn)
        try:
            yield
        finally:
            self.end(token)

    def begin(self, conn: psycopg.Connection[Any]) -> int | None:
        """Watch ``conn`` until :meth:`end` is given the token returned (None: no deadline)."""
        seconds = self.seconds
        if seconds is None:
            return None
        with self._lock:
            token = self._next
            self._next += 1
            self._watched[token] = (conn, time.monotonic() + seconds)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pypgflow-answer-deadline", daemon=True
                )
                self._thread.start()
        return token

    def end(self, token: int | None) -> None:
        if token is not None:
            with self._lock:
                self._watched.pop(token, None)  # (gone if it expired)

    def close(self) -> None:
        """Stop the thread (a later ``watch`` starts another)."""
        with self._lock:
            self._closed.set()
            self._closed = threading.Event()
            self._thread = None

    def _run(self) -> None:
        closed = self._closed
        while not closed.wait(min(1.0, (self.seconds or 4.0) / 4)):
            now = time.monotonic()
            with self._lock:  # under the lock: a connection handed back is not touched
                for token, (conn, deadline) in list(self._watched.items()):
                    if now >= deadline:
                        self._watched.pop(token, None)  # (gone if it expired)
                        self.expired += 1
                        logger.warning(
                            "no answer from PostgreSQL on %s for %g s (answer_timeout): closing "
                            "the connection, the call fails with a connection error",
                            self.where,
                            self.seconds,
                        )
                        shut_down(conn)


def shut_down(conn: psycopg.Connection[Any]) -> None:
    """Shut down ``conn``'s socket under a thread waiting on it (its descriptor stays open for
    the connection's owner to close): the wait ends with an error at once."""
    with contextlib.suppress(OSError, ValueError, psycopg.Error):
        duplicate = socket.socket(fileno=os.dup(conn.fileno()))
        with duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
