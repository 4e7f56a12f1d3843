"""The workload both engines' query-plan tests run (tests/postgres and tests/sqlite
``test_query_plans.py``): a one-step workflow, a map with a fan-in, and a batch of outcomes shaped
as a worker records it."""

from __future__ import annotations

import json
from typing import Any

from pypgflow import Workflow
from pypgflow.engines.base import ClaimedTask, Completed, Failed, Outcome
from pypgflow.errors import AttemptError
from pypgflow.orchestration import GiveUp, Retry

one = Workflow("plans_one")


@one.step
def echo(input: Any) -> Any:
    return input


mapped = Workflow("plans_map")


@mapped.map(over=None)
def square(n: int) -> int:
    return n * n


@mapped.step(depends_on=[square])
def total(square: list[int]) -> int:
    return sum(square)


WORKFLOWS = [one.name, mapped.name]


def error(task: ClaimedTask) -> AttemptError:
    return AttemptError(
        step=task.step, attempt=task.attempt, type="ValueError", message="no", traceback=""
    )


def outcomes(tasks: list[ClaimedTask]) -> list[Outcome]:
    """A batch as a worker records it: mostly completions; of the one-step tasks, some to be
    retried in an hour and some failed for good (map elements all complete)."""
    batch: list[Outcome] = []
    ones = 0
    for task in tasks:
        ones += task.workflow == one.name
        if task.workflow == one.name and ones % 5 == 2:
            batch.append(Failed(task, error(task), Retry(delay=3600)))
        elif task.workflow == one.name and ones % 5 == 4:
            batch.append(Failed(task, error(task), GiveUp()))
        else:
            value = task.input if task.task_index is not None else task.run_input
            batch.append(Completed(task, json.dumps(value)))
    return batch
