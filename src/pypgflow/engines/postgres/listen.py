"""LISTEN on a connection of its own, in a thread: how a PostgreSQL engine hears of new work
and of finished runs. The connection is not the pool's: it waits on the server for as long as
the engine lives, and comes back by itself after the server or the network does."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pypgflow.engines.postgres.deadline import AnswerDeadline

logger = logging.getLogger("pypgflow.engine.postgres")

#: seconds of silence after which a listening connection is asked for an answer: LISTEN alone
#: would not notice a server that went silent without closing the connection
PROBE_AFTER = 10.0


@dataclass(frozen=True)
class ListenTarget:
    """Where to listen: the server's URL and the LISTEN statement (its channel composed as an
    identifier: LISTEN takes no parameter)."""

    url: str
    statement: sql.SQL
    connect_timeout: float
    answer_timeout: float | None = None


def listen_thread(
    target: ListenTarget, on_payload: Callable[[str], None], *, name: str
) -> Callable[[], None]:
    """Run ``target``'s LISTEN in a thread, calling ``on_payload`` with each notification's
    payload, and ``on_payload("")`` once connected: anything may have been sent while it was
    not. Reconnects until stopped; returns the function that stops it."""
    stop = threading.Event()
    deadline = AnswerDeadline(target.answer_timeout, where=f"the listening connection ({name})")

    def loop() -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(
                    target.url,
                    autocommit=True,
                    connect_timeout=max(1, int(target.connect_timeout)),
                ) as conn:
                    with deadline.watch(conn):
                        conn.execute(target.statement)
                    delay = 0.1
                    on_payload("")  # (re)connected: anything may have arrived meanwhile
                    heard = time.monotonic()
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.1):  # short: stop is seen quickly
                            heard = time.monotonic()
                            on_payload(note.payload)
                        if time.monotonic() - heard > PROBE_AFTER:
                            with deadline.watch(conn):
                                conn.execute("SELECT 1")
                            heard = time.monotonic()
            except psycopg.Error as exc:
                if stop.is_set():
                    return
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()

    def stop_listening() -> None:
        stop.set()
        deadline.close()
        if thread is not threading.current_thread():
            thread.join(timeout=2.0)

    return stop_listening
