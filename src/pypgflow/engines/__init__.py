"""Storage engines: where durable runs live. :func:`engine_for_url` picks one from a database URL.

Each engine implements :class:`pypgflow.engines.base.Engine`; both SQL engines share
:class:`pypgflow.engines.sql.SqlEngine` and differ only in their statements and connections. An
engine's module is imported only when its URL is used, so that SQLite users never load psycopg.
"""

from __future__ import annotations

from pypgflow.defaults import DEFAULT_SCHEMA
from pypgflow.engines.base import Engine
from pypgflow.errors import ConfigurationError


def engine_for_url(url: str, *, schema: str = DEFAULT_SCHEMA) -> Engine:
    """The engine a database URL names: ``sqlite:///path.db`` or ``postgresql://...`` (a libpq
    ``key=value`` string works too)."""
    if url.lower().startswith("sqlite:"):
        from pypgflow.engines.sqlite.engine import SqliteEngine

        return SqliteEngine(url)
    if url.startswith(("postgresql://", "postgres://")) or "=" in url.split("://")[0]:
        from pypgflow.engines.postgres.engine import PostgresEngine

        return PostgresEngine(url, schema=schema)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ConfigurationError(
        f"unsupported database URL scheme {scheme!r}: use postgresql://user@host:port/dbname "
        "or sqlite:///path/to/flows.db"
    )


__all__ = ["Engine", "engine_for_url"]
