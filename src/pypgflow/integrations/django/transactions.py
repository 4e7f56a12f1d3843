"""Runs started inside a Django transaction: they exist only if it commits.

On PostgreSQL with psycopg 3 (Django 4.2 and later), ``django.db.connection.connection`` is a
psycopg connection, and ``App.start(..., connection=)`` writes the run in its transaction:
the run, its tasks and the workers' wake-up commit with the caller's rows, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connections, transaction

from pypgflow.app import Run
from pypgflow.errors import ConfigurationError, DatabaseError, InvalidArgument, NotSupported
from pypgflow.integrations.django.conf import database_alias, get_app
from pypgflow.workflow import Workflow


def start_in_transaction(
    workflow: str | Workflow, input: Any = None, *, using: str | None = None, **options: Any
) -> Run:
    """Start a run of ``workflow`` in the current ``transaction.atomic()`` block of the Django
    database ``using`` (default: ``PYPGFLOW["DATABASE"]``): it exists only if the block commits,
    and workers see it from then on. ``options`` are :meth:`App.start`'s (queue, priority,
    delay, idempotency_key, ...)."""
    connection = _psycopg_connection(using, "start_in_transaction")
    try:
        return get_app().start(workflow, input, connection=connection, **options)
    except DatabaseError:
        transaction.set_rollback(True, using=using or database_alias())  # as the ORM does
        raise


def start_many_in_transaction(
    workflow: str | Workflow, inputs: Iterable[Any], *, using: str | None = None, **options: Any
) -> list[Run]:
    """:func:`start_in_transaction` for one run per input, in one statement."""
    connection = _psycopg_connection(using, "start_many_in_transaction")
    try:
        return get_app().start_many(workflow, inputs, connection=connection, **options)
    except DatabaseError:
        transaction.set_rollback(True, using=using or database_alias())
        raise


def _psycopg_connection(using: str | None, caller: str) -> Any:
    """The psycopg connection under Django's connection ``using``, inside an atomic block."""
    alias = using or database_alias()
    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        raise NotSupported(
            f"{caller}() needs PostgreSQL; the Django database {alias!r} is {wrapper.vendor}. "
            "Start the run once the transaction commits instead: "
            "transaction.on_commit(lambda: get_app().start(...))"
        )
    if not wrapper.in_atomic_block:
        raise InvalidArgument(
            f"{caller}() starts a run in the current transaction: call it inside "
            f"transaction.atomic(using={alias!r}) (outside one, get_app().start() does)"
        )
    wrapper.ensure_connection()
    import psycopg

    raw = wrapper.connection
    if not isinstance(raw, psycopg.Connection):
        raise ConfigurationError(
            f"{caller}() needs Django on psycopg 3; the database {alias!r} uses "
            f"{type(raw).__module__} (pip install 'psycopg[binary]', and uninstall psycopg2)"
        )
    return raw
