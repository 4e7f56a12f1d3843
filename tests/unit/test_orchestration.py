"""The rules of a durable run, as pure functions: no database, no worker.

Every run and step state decision lives in ``pypgflow.orchestration``; engines only store what it
decides. These tests drive the rules directly: an in-memory :class:`StateReader` stands in for
the values an engine would read inside its transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from pypgflow import Backoff, MapInputError, PoisonPill, WorkerLost, Workflow
from pypgflow.errors import AttemptError
from pypgflow.orchestration import (
    Changes,
    GiveUp,
    LostTask,
    Retry,
    RunState,
    TaskDone,
    TaskFailedForGood,
    attempt_failed,
    cancel_run,
    new_run,
    resume_run,
    task_lost,
    tasks_completed,
    tasks_failed,
    tasks_ran,
)
from pypgflow.status import RunStatus, StepStatus

NO_JITTER = Backoff(base=2, factor=3, max=100, jitter=0)


class Outputs:
    """What an engine would read back inside its transaction: stored step and element outputs."""

    def __init__(self, run_input: Any = None) -> None:
        self.steps: dict[str, str] = {}
        self.elements: dict[str, list[str]] = {}
        self.input = json.dumps(run_input)

    def step_outputs(self, run_id: str, names: Sequence[str]) -> dict[str, str]:
        return {name: self.steps[name] for name in names if name in self.steps}

    def map_outputs(self, run_id: str, step: str) -> list[str]:
        return self.elements.get(step, [])

    def run_input(self, run_id: str) -> str | None:
        return self.input


def diamond() -> Workflow:
    flow = Workflow("diamond")

    @flow.step
    def top(input: int) -> int:
        return input

    @flow.step(depends_on=["top"])
    def left(top: int) -> int:
        return top + 1

    @flow.step(depends_on=["top"])
    def right(top: int) -> int:
        return top + 2

    @flow.step(depends_on=["left", "right"])
    def bottom(left: int, right: int) -> int:
        return left + right

    return flow


def started(flow: Workflow, input: Any = 1) -> tuple[RunState, Changes]:
    changes = Changes()
    run = new_run(
        flow, run_id="r1", input_json=json.dumps(input), queue="q", priority=0, changes=changes
    )
    return run, changes


def complete(run: RunState, step: str, output: Any, reader: Outputs | None = None) -> Changes:
    reader = reader or Outputs()
    reader.steps[step] = json.dumps(output)
    changes = Changes()
    tasks_completed(
        {run.id: run}, [TaskDone(run.id, step, None, json.dumps(output))], reader, changes
    )
    return changes


def failure(step: str, attempt: int = 3, index: int | None = None) -> AttemptError:
    return AttemptError(
        step=step, attempt=attempt, type="KeyError", message="'x'", traceback="Traceback ..."
    )


# -- what a failed attempt means ----------------------------------------------------------------


def test_a_failed_attempt_is_retried_after_the_backoff_while_attempts_remain() -> None:
    assert attempt_failed(attempt=1, max_attempts=3, backoff=NO_JITTER) == Retry(delay=2.0)
    assert attempt_failed(attempt=2, max_attempts=3, backoff=NO_JITTER) == Retry(delay=6.0)


def test_the_last_attempt_gives_up() -> None:
    assert attempt_failed(attempt=3, max_attempts=3, backoff=NO_JITTER) == GiveUp()
    assert attempt_failed(attempt=1, max_attempts=1, backoff=NO_JITTER) == GiveUp()
    # an attempt past the budget (a budget lowered meanwhile) gives up too
    assert attempt_failed(attempt=5, max_attempts=3, backoff=NO_JITTER) == GiveUp()


def test_a_failure_no_retry_can_cure_gives_up_at_once() -> None:
    assert attempt_failed(attempt=1, max_attempts=10, retryable=False) == GiveUp()


def test_the_default_backoff_applies_when_none_is_given() -> None:
    verdict = attempt_failed(attempt=1, max_attempts=2)
    assert isinstance(verdict, Retry)
    assert 0.9 <= verdict.delay <= 1.1  # 1 s, give or take the default 10% jitter


# -- what a lost attempt means ------------------------------------------------------------------


def lost(
    *,
    attempt: int = 1,
    max_attempts: int = 3,
    rescues: int = 0,
    lone_losses: int | None = None,
    together: int = 1,
    worker_died: bool = True,
) -> LostTask:
    return LostTask(
        id=7,
        run_id="r1",
        step="resize",
        task_index=2,
        attempt=attempt,
        max_attempts=max_attempts,
        rescues=rescues,
        instance_id="w-1",
        queue="q",
        last_seen=datetime(2026, 1, 1, 12, tzinfo=UTC),
        silent_for=31.0,
        lone_losses=rescues if lone_losses is None else lone_losses,
        together=together,
        worker_died=worker_died,
    )


def test_a_lost_attempt_goes_back_to_its_queue_with_a_worker_lost_entry() -> None:
    loss = task_lost(lost(), how="last seen 31 s ago", max_rescues=3)
    error = loss.error
    assert loss.verdict == Retry(delay=0.0)
    assert loss.charged  # its worker died running it alone
    assert error.type == WorkerLost.__name__
    assert (error.step, error.task_index, error.attempt) == ("resize", 2, 1)
    assert (error.instance_id, error.lost_workers) == ("w-1", 1)
    assert error.last_seen == "2026-01-01T12:00:00+00:00"
    assert "instance 'w-1' was lost while running step 'resize[2]'" in error.message
    assert error.message.endswith("last seen 31 s ago; queued again")


def test_a_lost_last_attempt_fails_for_good() -> None:
    loss = task_lost(lost(attempt=3, max_attempts=3), how="gone", max_rescues=3)
    assert loss.verdict == GiveUp()
    assert loss.error.type == WorkerLost.__name__
    assert "no attempts left: failed for good" in loss.error.message


def test_a_task_running_alone_on_more_lost_workers_than_max_rescues_is_a_poison_pill() -> None:
    # the 4th worker lost running it alone, with max_rescues=3: condemned, attempts left or not
    loss = task_lost(lost(rescues=3, max_attempts=10), how="gone", max_rescues=3)
    assert loss.verdict == GiveUp()
    assert loss.error.type == PoisonPill.__name__
    assert loss.error.lost_workers == 4
    assert "running alone on 4 workers that were lost, more than max_rescues=3" in (
        loss.error.message
    )
    # the 3rd is still given another chance
    assert task_lost(lost(rescues=2, max_attempts=10), how="gone", max_rescues=3).verdict == Retry()
    # max_rescues=0: the first lone loss condemns it
    assert task_lost(lost(), how="gone", max_rescues=0).verdict == GiveUp()


def test_a_loss_shared_with_other_tasks_of_the_instance_is_not_charged() -> None:
    # lost with 4 other tasks of its instance: an outside kill is as likely as any one of them
    loss = task_lost(lost(rescues=3, max_attempts=10, together=5), how="gone", max_rescues=3)
    assert not loss.charged
    assert loss.verdict == Retry()
    assert loss.error.type == WorkerLost.__name__
    assert loss.error.lost_workers == 4  # every loss is still told
    # only the lone losses count: 9 losses, 3 of them alone, and a 4th lone one condemns it
    many = lost(rescues=8, lone_losses=3, max_attempts=20, together=2)
    assert task_lost(many, how="gone", max_rescues=3).verdict == Retry()
    alone = lost(rescues=8, lone_losses=3, max_attempts=20)
    loss = task_lost(alone, how="gone", max_rescues=3)
    assert (loss.verdict, loss.error.type, loss.charged) == (GiveUp(), PoisonPill.__name__, True)
    assert "(9 lost in all)" in loss.error.message


def test_a_task_handed_back_by_a_live_worker_is_never_charged() -> None:
    # cut off from the database, or a claim's answer lost: the worker lived, nothing was killed
    loss = task_lost(lost(rescues=5, max_attempts=10, worker_died=False), how="x", max_rescues=3)
    assert (loss.charged, loss.verdict, loss.error.type) == (False, Retry(), WorkerLost.__name__)
    # attempts still bound it
    spent = lost(attempt=3, max_attempts=3, worker_died=False)
    assert task_lost(spent, how="x", max_rescues=3).verdict == GiveUp()


def test_a_lost_error_round_trips_through_its_stored_form() -> None:
    error = task_lost(lost(), how="gone", max_rescues=3).error
    assert AttemptError.from_dict(json.loads(json.dumps(error.to_dict()))) == error
    plain = failure("x")
    assert "lost_workers" not in plain.to_dict()  # only the fields a kind of error uses


# -- building a run -----------------------------------------------------------------------------


def test_a_new_run_makes_its_roots_ready_and_leaves_the_rest_waiting() -> None:
    run, changes = started(diamond())
    assert run.status is RunStatus.PENDING
    assert run.remaining_steps == 4
    assert {n: s.status for n, s in run.steps.items()} == {
        "top": StepStatus.READY,
        "left": StepStatus.WAITING,
        "right": StepStatus.WAITING,
        "bottom": StepStatus.WAITING,
    }
    assert [(t.step, t.task_index, t.queue) for t in changes.new_tasks] == [("top", None, "q")]
    assert run.steps["bottom"].remaining_deps == 2


def test_a_root_map_step_gets_one_task_per_element_and_an_empty_one_completes() -> None:
    flow = Workflow("squares")
    flow.map(over=None, name="square")(lambda n: n * n)
    run, changes = started(flow, [3, 4, 5])
    assert [(t.task_index, t.input) for t in changes.new_tasks] == [(0, "3"), (1, "4"), (2, "5")]
    assert run.steps["square"].remaining_tasks == 3

    run, changes = started(flow, [])
    assert changes.new_tasks == []
    assert run.status is RunStatus.COMPLETED
    assert run.output == "[]"


def test_a_map_over_something_else_than_a_list_fails_the_run_with_a_map_input_error() -> None:
    flow = Workflow("squares")
    flow.map(over=None, name="square")(lambda n: n * n)
    run, _ = started(flow, {"not": "a list"})
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert run.error.type == MapInputError.__name__
    assert (run.error.step, run.error.attempt) == ("square", 0)
    assert "needs a list from the workflow input, got dict" in run.error.message


# -- completions ----------------------------------------------------------------------------------


def test_completing_a_step_releases_its_dependents_once_all_their_dependencies_are_done() -> None:
    run, _ = started(diamond())
    reader = Outputs()
    changes = complete(run, "top", 1, reader)
    assert sorted(t.step for t in changes.new_tasks) == ["left", "right"]
    assert changes.queues_with_new_work == {"q"}
    changes = complete(run, "left", 2, reader)
    assert changes.new_tasks == []  # bottom still waits for right
    assert run.steps["bottom"].remaining_deps == 1
    changes = complete(run, "right", 3, reader)
    assert [t.step for t in changes.new_tasks] == ["bottom"]
    changes = complete(run, "bottom", 5, reader)
    assert run.status is RunStatus.COMPLETED
    assert json.loads(run.output or "") == 5  # a single leaf: its output is the run's


def test_a_run_with_several_leaves_outputs_them_by_name() -> None:
    flow = Workflow("fork")
    flow.step(name="a", depends_on=[])(lambda input: 1)
    flow.step(name="b", depends_on=[])(lambda input: 2)
    run, _ = started(flow)
    reader = Outputs()
    complete(run, "a", 1, reader)
    run.steps["a"].output = None  # written in an earlier transaction: read back when needed
    complete(run, "b", 2, reader)
    assert json.loads(run.output or "") == {"a": 1, "b": 2}


def test_a_map_step_completes_with_its_elements_results_in_order() -> None:
    flow = Workflow("squares")
    flow.map(over=None, name="square")(lambda n: n * n)
    run, _ = started(flow, [3, 4])
    reader = Outputs()
    reader.elements["square"] = ["9", "16"]
    changes = Changes()
    tasks_completed({"r1": run}, [TaskDone("r1", "square", 1, "16")], reader, changes)
    assert run.steps["square"].remaining_tasks == 1
    assert run.status is RunStatus.PENDING
    tasks_completed({"r1": run}, [TaskDone("r1", "square", 0, "9")], reader, changes)
    assert run.status is RunStatus.COMPLETED
    assert run.output == "[9,16]"


def test_a_completion_for_a_finished_run_or_step_changes_nothing() -> None:
    run, _ = started(diamond())
    cancel_run(run, Changes())
    changes = complete(run, "top", 1)
    assert changes.runs == {}
    assert changes.new_tasks == []
    run, _ = started(diamond())
    complete(run, "top", 1)
    changes = complete(run, "top", 1)  # a duplicate
    assert changes.new_tasks == []


def test_a_run_that_ran_a_task_is_running() -> None:
    run, _ = started(diamond())
    changes = Changes()
    tasks_ran({"r1": run}, ["r1"], changes)
    assert run.status is RunStatus.RUNNING
    assert "r1" in changes.runs


# -- failures, cancel, resume ---------------------------------------------------------------------


def test_a_step_failing_for_good_fails_its_run_and_cancels_the_rest() -> None:
    run, _ = started(diamond())
    complete(run, "top", 1)
    changes = Changes()
    tasks_failed({"r1": run}, [TaskFailedForGood("r1", "left", None, failure("left"))], changes)
    assert run.status is RunStatus.FAILED
    assert run.steps["left"].status is StepStatus.FAILED
    assert run.steps["right"].status is StepStatus.CANCELLED
    assert run.steps["bottom"].status is StepStatus.CANCELLED
    assert run.steps["top"].status is StepStatus.COMPLETED
    assert changes.cancel_tasks_of == ["r1"]
    assert run.error is not None
    assert (run.error.step, run.error.type, run.error.attempt) == ("left", "KeyError", 3)
    assert run.error.traceback == ""  # it stays with the step's attempts


def test_cancel_closes_unfinished_steps_and_only_an_active_run_is_cancelled() -> None:
    run, _ = started(diamond())
    changes = Changes()
    assert cancel_run(run, changes) is True
    assert run.status is RunStatus.CANCELLED
    assert {s.status for s in run.steps.values()} == {StepStatus.CANCELLED}
    assert changes.cancel_tasks_of == ["r1"]
    assert cancel_run(run, Changes()) is False


def test_resume_reruns_unfinished_steps_only_with_a_fresh_budget() -> None:
    run, _ = started(diamond())
    complete(run, "top", 1)
    tasks_failed({"r1": run}, [TaskFailedForGood("r1", "left", None, failure("left"))], Changes())
    for step in run.steps.values():  # as an engine reads them back: tasks exist for some
        step.task_count = 1 if step.name in ("top", "left", "right") else None
    changes = Changes()
    assert resume_run(run, Outputs(), changes) is True
    assert run.status is RunStatus.PENDING
    assert run.error is None
    assert run.steps["top"].status is StepStatus.COMPLETED
    assert run.steps["left"].status is StepStatus.READY
    assert run.steps["bottom"].status is StepStatus.WAITING
    budgets = {step: budget for _, step, budget, _delay in changes.requeue_tasks_of}
    assert budgets == {"left": 3, "right": 3}
    assert resume_run(run, Outputs(), Changes()) is False  # not failed or cancelled


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.RUNNING, RunStatus.PENDING])
def test_only_failed_or_cancelled_runs_resume(status: RunStatus) -> None:
    run, _ = started(diamond())
    run.status = status
    assert resume_run(run, Outputs(), Changes()) is False
