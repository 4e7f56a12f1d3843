"""Fixtures of the PostgreSQL-only tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ADMIN_URL


@pytest.fixture
def another_empty_pg_url() -> Iterator[str]:
    """A second fresh database without the pypgflow schema (``empty_pg_url`` gives one)."""
    name = f"pypgflow_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    params["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
