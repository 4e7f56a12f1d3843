"""prepare_starts: a batch's runs are built once and copied when their state cannot differ."""

from __future__ import annotations

import pytest

from pypgflow import Workflow
from pypgflow.errors import MapInputError, SerializationError
from pypgflow.starting import prepare_starts


def diamond() -> Workflow:
    flow = Workflow("diamond")
    flow.step(name="a")(lambda input: input)
    flow.step(name="b", depends_on=["a"])(lambda a: a)
    flow.step(name="c", depends_on=["a"])(lambda a: a)
    flow.step(name="d", depends_on=["b", "c"])(lambda b, c: b)
    return flow


def test_each_run_of_a_batch_has_its_own_id_input_and_root_tasks() -> None:
    requests = prepare_starts(diamond(), [{"n": 1}, {"n": 2}, {"n": 3}], queue="q", priority=4)
    assert len({r.run.id for r in requests}) == 3
    assert [r.run.input for r in requests] == ['{"n":1}', '{"n":2}', '{"n":3}']
    for request in requests:
        (task,) = request.changes.new_tasks
        assert (task.run_id, task.step, task.queue, task.priority) == (request.run.id, "a", "q", 4)
        assert request.run.remaining_steps == 4
        assert [s.status.value for s in request.run.steps.values()] == [
            "ready",
            "waiting",
            "waiting",
            "waiting",
        ]


def test_a_root_map_step_makes_each_run_from_its_own_input() -> None:
    flow = Workflow("fan")
    flow.map(name="each", over=None)(lambda item: item)
    requests = prepare_starts(flow, [[1, 2], [], [3]], queue="q", priority=0)
    assert [len(r.changes.new_tasks) for r in requests] == [2, 0, 1]
    assert [r.run.status.value for r in requests] == ["pending", "completed", "pending"]
    with pytest.raises(MapInputError, match="'fan'"):
        prepare_starts(flow, [[1], "not a list"], queue="q", priority=0)


def test_an_input_that_is_not_json_is_named_by_its_position() -> None:
    with pytest.raises(SerializationError, match="input 2 of workflow 'diamond'"):
        prepare_starts(diamond(), [1, 2, {3}], queue="q", priority=0)
