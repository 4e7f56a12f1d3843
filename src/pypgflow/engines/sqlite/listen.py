"""How workers hear of new work, and waiters of finished runs, on SQLite, which has no
LISTEN/NOTIFY.

A commit of this process that creates work (or finishes runs) calls this process's listeners
directly (the engine announces it once the transaction has committed), and a thread per listener
polls ``PRAGMA data_version`` on a connection of its own, a read of shared memory that changes
when any other connection commits, to wake listeners of other processes within a few tens of
milliseconds. An engine has one :class:`CommitListeners` for work, one for finished runs.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

logger = logging.getLogger("pypgflow.engine.sqlite")


class CommitListeners:
    """The listeners of one engine to one kind of news (``kind``: "work", "finished runs"):
    announced to after its commits, and (for a file, ``path`` not None) each polling for other
    processes' commits every ``poll_interval`` seconds."""

    def __init__(
        self,
        path: str | None,
        *,
        busy_timeout: float,
        poll_interval: float,
        data_version: str,
        kind: str = "work",
        thread_name: str = "pypgflow-sqlite-listen",
    ) -> None:
        self.path = path
        self.kind = kind
        self.thread_name = thread_name
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self._data_version = data_version  # the statement that reads PRAGMA data_version
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._stoppers: list[Callable[[], None]] = []

    def add(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(name)`` after every commit of this process that announces ``name`` (a
        queue with new work, a finished run), and (for a file) ``listener("")`` within
        ``poll_interval`` of any other process's commit; return the function that stops it."""
        with self._lock:
            self._listeners.append(listener)
        stop = threading.Event()
        thread: threading.Thread | None = None
        if self.path is not None:
            thread = threading.Thread(
                target=self._poll_data_version,
                args=(self.path, listener, stop),
                name=self.thread_name,
                daemon=True,
            )
            thread.start()

        def stop_listening() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
            stop.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2.0)
            if stop_listening in self._stoppers:
                self._stoppers.remove(stop_listening)

        self._stoppers.append(stop_listening)
        return stop_listening

    def announce(self, names: set[str]) -> None:
        """Wake this process's listeners with each of ``names`` (other processes see the commit
        in PRAGMA data_version)."""
        if not names:
            return
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            for name in sorted(names):
                try:
                    listener(name)
                except Exception:  # a listener's failure is not the committer's
                    logger.exception("a %s listener failed", self.kind)

    def stop_all(self) -> None:
        """Stop every listener (the engine is closing)."""
        for stop in list(self._stoppers):
            stop()

    def _poll_data_version(
        self, path: str, listener: Callable[[str], None], stop: threading.Event
    ) -> None:
        """Poll PRAGMA data_version on a connection of its own: it changes when any other
        connection commits. Reopens the database until stopped."""
        delay = 0.1
        while not stop.is_set():
            try:
                conn = sqlite3.connect(path, timeout=self.busy_timeout, isolation_level=None)
                try:
                    (last,) = conn.execute(self._data_version).fetchone()
                    delay = 0.1
                    listener("")  # (re)opened: anything may have arrived meanwhile
                    while not stop.wait(self.poll_interval):
                        (version,) = conn.execute(self._data_version).fetchone()
                        if version != last:
                            last = version
                            listener("")
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                if stop.is_set():
                    return
                logger.warning("cannot watch %s for changes (%s); retrying", path, exc)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                logger.exception("a %s listener failed", self.kind)
                stop.wait(delay)
