"""The SQLite engine: durable workflows in one database file, no server (standard library sqlite3).

``SqliteEngine("sqlite:///flows.db")``; see :mod:`pypgflow.engines.sqlite.engine`.
"""

from pypgflow.engines.sqlite.engine import SqliteEngine
from pypgflow.engines.sqlite.url import sqlite_path_from_url

__all__ = ["SqliteEngine", "sqlite_path_from_url"]
