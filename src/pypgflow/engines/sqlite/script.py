"""Schema scripts on SQLite: cut into statements by SQLite's own tokenizer, and run one by one
inside the caller's transaction (``executescript`` would commit it first)."""

from __future__ import annotations

import sqlite3


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute a schema script statement by statement, inside the caller's transaction
    (``executescript`` would commit it first)."""
    for statement in split_statements(script):
        conn.execute(statement)


def split_statements(script: str) -> list[str]:
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
