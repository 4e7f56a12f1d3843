"""A run's steps column: each step's state, as the JSON text stored in its run's row.

A run is one row to lock, read and write: its steps' state lives in its ``steps`` column, so that
recording an outcome writes the task and its run and nothing per step. Runs of a workflow pass
through the same few step states, so the texts written and the fields read are kept by state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pypgflow.orchestration import StepState
from pypgflow.status import StepStatus

# A run's steps are stored in its row, in its steps column: one JSON object, by step name, each
# step's state without its null and false values (that a step is no map, that it has no tasks
# yet), e.g. {"fetch": {"position": 0, "status": "completed", "depends_on": [],
# "remaining_deps": 0, "max_attempts": 3, "remaining_tasks": 0, "task_count": 1}}. Outputs are
# not there: a plain step's is its task's, a map step's its elements'.


def steps_text(steps: Mapping[str, StepState]) -> str:
    """A run's steps as the JSON text of its steps column.

    Runs of a workflow pass through the same few step states, so each step's text is kept by
    its state and reused: a run's steps are written at its start and at each of its outcomes."""
    parts = []
    for name, s in steps.items():
        key = (
            name,
            s.position,
            s.status,
            s.depends_on,
            s.remaining_deps,
            s.max_attempts,
            s.is_map,
            s.map_over,
            s.remaining_tasks,
            s.task_count,
            s.start_delay,
            s.signal,
            s.signal_timeout,
        )
        text = _step_texts.get(key)
        if text is None:
            text = _step_text(name, s)
            if len(_step_texts) >= _STEP_TEXTS_KEPT:
                _step_texts.clear()
            _step_texts[key] = text
        parts.append(text)
    return "{" + ",".join(parts) + "}"


#: step texts by state (see steps_text); emptied when this many are kept
_STEP_TEXTS_KEPT = 10_000
_step_texts: dict[tuple[Any, ...], str] = {}


def _step_text(name: str, s: StepState) -> str:
    """``"name":{...}``: one step of the steps column."""
    state: dict[str, Any] = {
        "position": s.position,
        "status": s.status.value,
        "depends_on": list(s.depends_on),
        "remaining_deps": s.remaining_deps,
        "max_attempts": s.max_attempts,
    }
    if s.is_map:
        state["is_map"] = True
    if s.map_over is not None:
        state["map_over"] = s.map_over
    if s.remaining_tasks is not None:
        state["remaining_tasks"] = s.remaining_tasks
    if s.task_count is not None:
        state["task_count"] = s.task_count
    if s.start_delay:
        state["start_delay"] = s.start_delay
    if s.signal is not None:
        state["signal"] = s.signal
    if s.signal_timeout is not None:
        state["signal_timeout"] = s.signal_timeout
    return json.dumps(name) + ":" + json.dumps(state, separators=(",", ":"))


def steps_from_text(text: str) -> dict[str, StepState]:
    """A run's steps from its steps column's JSON text, in position order.

    As in :func:`steps_text`, the same texts come back run after run (a workflow's steps pass
    through few states), so each text's decoded fields are kept; every call still gets steps
    of its own to change."""
    fields = _stored_steps.get(text)
    if fields is None:
        fields = _decoded_steps(json.loads(text))
        if len(_stored_steps) >= _STEP_TEXTS_KEPT:
            _stored_steps.clear()
        _stored_steps[text] = fields
    return {f[0]: StepState(*f) for f in fields}


#: decoded steps by their column's text (see steps_from_text)
_stored_steps: dict[str, tuple[tuple[Any, ...], ...]] = {}


def _decoded_steps(stored: Mapping[str, Mapping[str, Any]]) -> tuple[tuple[Any, ...], ...]:
    """Each step's fields in StepState's order (the output None), in position order."""
    fields = [
        (
            name,
            state["position"],
            StepStatus(state["status"]),
            tuple(state["depends_on"]),
            state["remaining_deps"],
            state["max_attempts"],
            state.get("is_map", False),
            state.get("map_over"),
            state.get("remaining_tasks"),
            state.get("task_count"),
            None,  # the output
            state.get("start_delay", 0.0),
            state.get("signal"),
            state.get("signal_timeout"),
        )
        for name, state in stored.items()
    ]
    return tuple(sorted(fields, key=lambda f: f[1]))
