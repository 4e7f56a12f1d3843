"""The benchmarks' PostgreSQL: the server they measure (PYPGFLOW_BENCH_DATABASE_URL, default
postgres@127.0.0.1:5432), and databases of their own, created for a pass and dropped after it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get(
    "PYPGFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def with_dbname(url: str, dbname: str) -> str:
    """``url`` naming another database."""
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def admin(statement: sql.Composed) -> None:
    """Run ``statement`` on the server's admin database (CREATE/DROP DATABASE)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def database(prefix: str) -> Iterator[str]:
    """A new empty database named ``prefix`` and a random suffix, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(ADMIN_URL, name)
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
