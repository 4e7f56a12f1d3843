"""Parameters of the PostgreSQL engine's statements that take more than plain values: lists as
array literals, batches of rows as JSON documents (a batch of starts among them) or as rows to
COPY (a large batch of plain starts), and error records made storable in jsonb.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pypgflow.engines.base import ClaimedTask
from pypgflow.engines.starts import StartRequest, UniformStarts
from pypgflow.engines.steps import steps_text
from pypgflow.errors import DatabaseError
from pypgflow.serialization import outputs_by_step


def start_statement(requests: Sequence[StartRequest]) -> tuple[str, dict[str, Any]]:
    """The statement that inserts a batch of starts (but a large plain one: see
    :func:`copyable`), and its parameters: insert_uniform_runs for runs that start alike (most
    starts, single ones too), insert_run for another single run whose root tasks are plain
    steps (a start with an idempotency key, a child run: plain parameters, cheaper for the
    server than the JSON documents), else insert_runs."""
    if isinstance(requests, UniformStarts):
        return "insert_uniform_runs", uniform_params(requests)
    if len(requests) == 1:
        request = requests[0]
        tasks = request.changes.new_tasks
        if all(task.plain for task in tasks):
            return "insert_run", {
                **_run_values(request, run_at=request.run_at),
                "task_steps": array_literal(task.step for task in tasks),
                "task_max_attempts": array_literal(task.max_attempts for task in tasks),
            }
    return "insert_runs", start_params(requests)


def uniform_params(starts: UniformStarts) -> dict[str, Any]:
    """The parameters of insert_uniform_runs: the template's values, and two arrays (the runs'
    ids and inputs) as text, parsed by the server in one go each. The template's are made once
    per template (a workflow keeps the one of its single starts: see pypgflow.starting)."""
    template = starts.template
    constant = template.memo.get("insert_uniform_runs")
    if constant is None:
        constant = template.memo["insert_uniform_runs"] = _template_params(template)
    return {
        **constant,
        "ids": array_literal(starts.run_ids),
        "inputs": array_literal(starts.inputs),
    }


def _template_params(template: StartRequest) -> dict[str, Any]:
    run = template.run
    tasks = template.changes.new_tasks
    return {
        "workflow": run.workflow,
        "status": run.status.value,
        "queue": run.queue,
        "priority": run.priority,
        "remaining_steps": run.remaining_steps,
        "run_at": template.run_at,
        "delay": template.delay,
        "steps": steps_text(run.steps),
        "trace_context": template.trace_context,
        "version": run.version,
        "task_steps": array_literal(task.step for task in tasks),
        "task_max_attempts": array_literal(task.max_attempts for task in tasks),
        "task_delays": array_literal(task.delay for task in tasks),
    }


def uniform_ids(starts: UniformStarts, rows: Sequence[Sequence[Any]]) -> list[str]:
    """The run ids of insert_uniform_runs, which says how many it inserted: all of them."""
    ((inserted, _notified),) = rows
    if inserted != len(starts):  # a bug, not a state the database can be in
        raise DatabaseError(f"insert_uniform_runs inserted {inserted} of {len(starts)} runs")
    return list(starts.run_ids)


def start_params(requests: Sequence[StartRequest]) -> dict[str, Any]:
    """The JSON documents of insert_runs (runs, with their steps; root tasks) for a batch of
    start requests: each one ``json.dumps`` call, whatever the batch size (inputs, outputs and
    steps, already JSON text, travel as strings and are parsed by the statement)."""
    runs: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for request in requests:
        run_at = request.run_at
        runs.append(_run_values(request, run_at=None if run_at is None else run_at.isoformat()))
        for task in request.changes.new_tasks:
            row: dict[str, Any] = {
                "run_id": task.run_id,
                "step": task.step,
                "task_index": task.task_index,
                "workflow": task.workflow,
                "queue": task.queue,
                "priority": task.priority,
                "max_attempts": task.max_attempts,
                "input": task.input,
            }
            if task.delay:
                row["delay"] = task.delay
            if task.output is not None:  # a step a fork keeps, done already
                row["output"] = task.output
            tasks.append(row)
    return {"runs": json_rows(runs), "tasks": json_rows(tasks)}


def _run_values(request: StartRequest, *, run_at: Any) -> dict[str, Any]:
    """A start's run, as insert_run's parameters and insert_runs' JSON rows name its values."""
    run = request.run
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status.value,
        "queue": run.queue,
        "priority": run.priority,
        "idempotency_key": request.idempotency_key,
        "input": run.input,
        "remaining_steps": run.remaining_steps,
        "run_at": run_at,
        "delay": request.delay,
        "output": run.output,
        "steps": steps_text(run.steps),
        "trace_context": request.trace_context,
        "version": run.version,
        "forked_from": request.forked_from,
        "parent_run_id": request.parent_run_id,
        "parent_task_id": request.parent_task_id,
    }


#: a batch of starts at least this large is written by COPY (when :func:`copyable`): below
#: it, the one statement's single round trip costs less than COPY's five
COPY_FROM = 64


def copyable(requests: Sequence[StartRequest]) -> bool:
    """Whether a batch of starts is best written by COPY: large enough to gain by it, made of
    plain starts, due now by the server's clock (the columns' default; no root step delayed),
    since COPY cannot skip a run whose idempotency key is taken nor compute a time, and not
    uniform (insert_uniform_runs costs less)."""
    if isinstance(requests, UniformStarts):
        return False
    return len(requests) >= COPY_FROM and all(
        r.idempotency_key is None
        and r.forked_from is None
        and r.parent_run_id is None
        and not r.delay
        and r.run_at is None
        and all(not t.delay and t.output is None for t in r.changes.new_tasks)
        for r in requests
    )


def run_rows(requests: Sequence[StartRequest]) -> Iterator[tuple[Any, ...]]:
    """The rows of copy_runs (in its columns' order) for a batch of plain starts."""
    for request in requests:
        run = request.run
        yield (
            run.id,
            run.workflow,
            run.status.value,
            run.queue,
            run.priority,
            run.input,
            run.remaining_steps,
            run.output,
            steps_text(run.steps),
            request.trace_context,
            run.version,
        )


def root_task_rows(requests: Sequence[StartRequest]) -> Iterator[tuple[Any, ...]]:
    """The rows of copy_tasks (in its columns' order): the tasks made ready at start."""
    for request in requests:
        for task in request.changes.new_tasks:
            yield (
                task.run_id,
                task.step,
                task.task_index,
                task.workflow,
                task.queue,
                task.priority,
                task.max_attempts,
                task.input,
                request.run.version,
            )


def json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON document, for ``json_to_recordset``."""
    return json.dumps(rows, separators=(",", ":"))


def array_literal(values: Iterable[Any]) -> str:
    """Values as a PostgreSQL array literal (``{"a","b"}``), for ``%(ids)s::text[]`` and the
    like: one text parameter, which the server parses in one go. Each element is quoted, with
    its backslashes and double quotes escaped, so that any text keeps its value."""
    quoted = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def storable(value: Any) -> Any:
    """``value`` with every string made storable in jsonb: NUL characters and lone surrogates
    (which PostgreSQL refuses) are replaced by their escaped spelling."""
    if isinstance(value, str):
        if value.isascii() and "\x00" not in value:
            return value
        value = value.replace("\x00", "\\x00")
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def claimed_tasks(rows: Iterable[Sequence[Any]], queue: str) -> list[ClaimedTask]:
    """The rows of claim_tasks, as the tasks a worker now holds. A step's dependency outputs
    come on the first of its rows in a claim only, as JSON text: each task of the step gets
    them decoded on its first read (see serialization.DecodedOnRead)."""
    rows = list(rows)
    outputs = outputs_by_step((row[1], row[2], row[9]) for row in rows)
    return [
        ClaimedTask(
            id=row[0],
            run_id=row[1],
            step=row[2],
            task_index=row[3],
            workflow=row[4],
            attempt=row[5],
            max_attempts=row[6],
            input=row[7],
            run_input=row[8],
            dependency_outputs=outputs(row[1], row[2]),
            run_pending=row[10],
            trace_context=row[11],
            version=row[12],
            priority=row[13],
            child_run_id=row[14],
            child=row[15],
            queue=queue,
        )
        for row in rows
    ]
