"""Writers of several processes take turns at a SQLite file's write lock (turns.py): a process
that wants to write while another holds the turn waits behind it, until its deadline; the holder
of the turn gets the write lock as soon as it is free, or SQLite's "locked" error after the busy
timeout; and two processes writing as fast as they can get about the same share of the lock."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypgflow.engines.sqlite.turns import WriterTurns

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def child(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python child process running ``code`` (sys.argv[1:] = ``args``), its stdout piped;
    it must have exited with 0 at the end of the block."""
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            yield process
        finally:
            process.wait(timeout=20)
    assert process.returncode == 0


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


@contextlib.contextmanager
def connect(path: str, timeout: float) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        yield conn
    finally:
        conn.close()


HOLD_TURN = """
    import sys, time
    from pypgflow.engines.sqlite.turns import WriterTurns
    with WriterTurns(sys.argv[1]).turn(time.monotonic() + 5) as held:
        print("held" if held else "not held", flush=True)
        time.sleep(float(sys.argv[2]))
"""

HOLD_WRITE_LOCK = """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (0, 'child')")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
"""


def database(tmp_path: Path) -> str:
    path = str(tmp_path / "turns.db")
    with connect(path, timeout=5) as conn:
        conn.execute("PRAGMA journal_mode = wal")
        conn.execute("CREATE TABLE t (n INTEGER, who TEXT)")
    return path


def test_a_turn_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = database(tmp_path)
    turns = WriterTurns(path)
    with child(HOLD_TURN, path, "0.5") as holder:
        assert first_line(holder) == "held"
        began = time.monotonic()
        with turns.turn(began + 0.1) as held:
            assert not held  # it gave up at its deadline
        assert 0.1 <= time.monotonic() - began < 0.4
        with turns.turn(began + 5) as held:
            assert held  # once the other process let go
            assert time.monotonic() - began >= 0.4


def test_the_holder_of_the_turn_gets_the_write_lock_as_soon_as_it_is_free(tmp_path: Path) -> None:
    path = database(tmp_path)
    with child(HOLD_WRITE_LOCK, path, "0.3") as locker, connect(path, timeout=0) as conn:
        assert first_line(locker) == "locked"
        began = time.monotonic()
        WriterTurns(path).begin(conn, busy_timeout=5)
        waited = time.monotonic() - began
        conn.execute("INSERT INTO t VALUES (1, 'parent')")
        conn.execute("COMMIT")
        # it waited for the other writer, and not for the sleeps of SQLite's busy handler
        assert 0.2 <= waited < 0.3 + 0.1
        rows = conn.execute("SELECT who FROM t ORDER BY rowid").fetchall()
        assert rows == [("child",), ("parent",)]


def test_a_write_lock_held_longer_than_the_busy_timeout_is_an_error(tmp_path: Path) -> None:
    path = database(tmp_path)
    with child(HOLD_WRITE_LOCK, path, "1.0") as locker, connect(path, timeout=0) as conn:
        assert first_line(locker) == "locked"
        began = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            WriterTurns(path).begin(conn, busy_timeout=0.2)
        assert 0.2 <= time.monotonic() - began < 0.8
        assert not conn.in_transaction


WRITE_LOOP = """
    import sqlite3, sys, time
    from pypgflow.engines.sqlite.turns import WriterTurns
    path, who, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    turns = WriterTurns(path)
    time.sleep(max(0.0, start - time.time()))
    while time.time() < start + 1.0:
        turns.begin(conn, busy_timeout=5)
        conn.execute("INSERT INTO t VALUES (1, ?)", (who,))
        time.sleep(0.001)  # the work of a transaction, holding the lock
        conn.execute("COMMIT")
"""


def test_two_processes_writing_without_pause_share_the_write_lock(tmp_path: Path) -> None:
    path = database(tmp_path)
    start = f"{time.time() + 0.5:.6f}"
    with child(WRITE_LOOP, path, "a", start), child(WRITE_LOOP, path, "b", start):
        pass
    with connect(path, timeout=5) as conn:
        counts = dict(conn.execute("SELECT who, count(*) FROM t GROUP BY who").fetchall())
    print(f"transactions per process: {counts}")
    assert set(counts) == {"a", "b"}
    assert min(counts.values()) >= 0.35 * sum(counts.values()), counts
