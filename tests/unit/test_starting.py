"""prepare_starts: a batch's runs are built once and copied when their state cannot differ: such
a batch is kept as UniformStarts (a template, the ids, the inputs), whose requests are what
building each run would have given. A single start is such a batch of one, whose template its
workflow keeps for the next starts with the same options, until a step is added."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.engines.postgres.params import uniform_params
from pypgflow.engines.starts import UniformStarts
from pypgflow.errors import MapInputError, SerializationError
from pypgflow.starting import prepare_start, prepare_starts


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


def test_a_uniform_batch_reads_as_the_runs_built_one_by_one() -> None:
    flow = Workflow("two-roots")
    flow.step(name="a", max_attempts=2)(lambda input: input)
    flow.step(name="b", max_attempts=5, depends_on=[])(lambda input: input)
    flow.step(name="c", depends_on=["a", "b"])(lambda a, b: a)
    batch = prepare_starts(flow, range(5), queue="q", priority=2, delay=30)
    assert isinstance(batch, UniformStarts)
    assert len(batch) == 5
    assert batch.inputs == ["0", "1", "2", "3", "4"]
    for index, request in enumerate(batch):
        (alone,) = prepare_start(flow, index, queue="q", priority=2, delay=30)
        assert request.run.id == batch.run_ids[index]
        # what an engine reads of a start: the request but its changes, and their new tasks
        # (``changed`` is a transaction's bookkeeping, which a start does not read)
        assert replace(request, changes=alone.changes) == replace(
            alone, run=replace(alone.run, id=request.run.id, changed=request.run.changed)
        )
        assert request.changes.new_tasks == [
            replace(t, run_id=request.run.id) for t in alone.changes.new_tasks
        ]
        assert [t.max_attempts for t in request.changes.new_tasks] == [2, 5]
    assert [r.run.id for r in batch[1:3]] == batch.run_ids[1:3]
    assert batch[-1].run.id == batch.run_ids[4]
    with pytest.raises(IndexError):
        batch[5]
    traced = batch.with_trace_context('{"traceparent": "00-ab-cd-01"}')
    assert {r.trace_context for r in traced} == {'{"traceparent": "00-ab-cd-01"}'}
    assert [r.run.id for r in traced] == batch.run_ids


def test_uniform_starts_refuse_what_they_cannot_stand_for() -> None:
    batch = prepare_starts(diamond(), [1, 2], queue="q", priority=0)
    assert isinstance(batch, UniformStarts)
    keyed = replace(batch.template, idempotency_key="k")
    with pytest.raises(ValueError, match="not a template"):
        UniformStarts(keyed, batch.run_ids, batch.inputs)
    with pytest.raises(ValueError, match="ids and inputs"):
        UniformStarts(batch.template, batch.run_ids, batch.inputs[:1])


def uniform_starts(flow: Workflow, inputs: list[int], **options: Any) -> UniformStarts:
    starts = prepare_starts(flow, inputs, queue="q", **options)
    assert isinstance(starts, UniformStarts)
    return starts


def test_a_single_start_is_a_batch_of_one_from_the_template_its_workflow_keeps() -> None:
    flow = diamond()
    first = uniform_starts(flow, [1], priority=3)
    second = uniform_starts(flow, [2], priority=3)
    assert second.template is first.template  # built once
    (one,), (two,) = first, second
    assert (one.run.input, two.run.input) == ("1", "2")
    assert one.run.id != two.run.id
    assert [t.run_id for t in two.changes.new_tasks] == [two.run.id]
    (third,) = prepare_start(flow, 2, queue="q", priority=3)
    assert third.run.id not in {one.run.id, two.run.id}
    # other options, another template; none kept for a delayed start (its delays are many)
    assert uniform_starts(flow, [1], priority=4).template is not first.template
    delayed = uniform_starts(flow, [1], priority=3, delay=5)
    assert delayed.template is not uniform_starts(flow, [1], priority=3, delay=5).template
    assert delayed[0].delay == 5.0


def test_a_step_added_after_a_start_is_in_the_next_start() -> None:
    flow = Workflow("growing")
    flow.step(name="a")(lambda input: input)
    (before,) = prepare_starts(flow, [1], queue="q", priority=0)
    flow.step(name="b", depends_on=[])(lambda input: input)  # a second root step
    (after,) = prepare_starts(flow, [1], queue="q", priority=0)
    assert [t.step for t in before.changes.new_tasks] == ["a"]
    assert [t.step for t in after.changes.new_tasks] == ["a", "b"]
    assert after.run.remaining_steps == 2


def test_the_postgresql_parameters_of_a_template_are_made_once_and_not_for_its_copies() -> None:
    flow = diamond()
    first, second = uniform_starts(flow, [1], priority=0), uniform_starts(flow, [2], priority=0)
    one, two = uniform_params(first), uniform_params(second)
    assert (one["ids"], one["inputs"]) == (f'{{"{first.run_ids[0]}"}}', '{"1"}')
    assert (two["ids"], two["inputs"]) == (f'{{"{second.run_ids[0]}"}}', '{"2"}')
    assert first.template.memo["insert_uniform_runs"] is second.template.memo["insert_uniform_runs"]
    assert (one["task_steps"], one["trace_context"]) == ('{"a"}', None)
    # a copy of the template (here in a trace context) has parameters of its own
    traced = first.with_trace_context('{"traceparent": "00-ab-cd-01"}')
    assert uniform_params(traced)["trace_context"] == '{"traceparent": "00-ab-cd-01"}'
    assert uniform_params(first)["trace_context"] is None
