"""Parameters of SQLite's statements, and the JSON they return.

SQLite has no arrays: a list (ids, names, queues) is one JSON array parameter, read with
``json_each(:param)``, and a batch of rows one JSON array of objects, read with ``value ->>
'$.field'``, so that a batch is a few statements whatever its size. JSON columns come back as
text, decoded here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pypgflow.engines.sqlbase import task_rows
from pypgflow.engines.starts import StartRequest
from pypgflow.engines.steps import steps_text
from pypgflow.serialization import loads


def json_array(values: Sequence[Any]) -> str:
    """A JSON array parameter, for ``IN (SELECT value FROM json_each(:param))``."""
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def json_rows(rows: Any) -> str:
    """A JSON array of objects, one per row, for ``json_each(:param)`` and ``value ->> '$.f'``.
    JSON texts (inputs, outputs, errors) travel as JSON strings, so they are stored verbatim."""
    return json.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))


def runs_param(requests: Sequence[StartRequest]) -> str:
    """The runs of a batch of starts, with their steps, for insert_runs."""
    return json_rows(
        {
            "id": r.run.id,
            "workflow": r.run.workflow,
            "status": r.run.status.value,
            "queue": r.run.queue,
            "priority": r.run.priority,
            "idempotency_key": r.idempotency_key,
            "input": r.run.input,
            "remaining_steps": r.run.remaining_steps,
            "run_at": None if r.run_at is None else r.run_at.timestamp(),
            "delay": float(r.delay),
            "output": r.run.output,
            "steps": steps_text(r.run.steps),
            "trace_context": r.trace_context,
            "version": r.run.version,
            "forked_from": r.forked_from,
            "parent_run_id": r.parent_run_id,
            "parent_task_id": r.parent_task_id,
        }
        for r in requests
    )


def root_tasks_param(requests: Sequence[StartRequest]) -> str | None:
    """The root tasks of inserted runs (None when there are none), for insert_root_tasks."""
    tasks = [t for r in requests for t in r.changes.new_tasks]
    return json_rows(task_rows(tasks)) if tasks else None


def load_json(text: str | None) -> Any:
    """A JSON column's text, decoded (None stays None), its numbers as PostgreSQL's jsonb gives
    them back (serialization.stored_number)."""
    return loads(text)
