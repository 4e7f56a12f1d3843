"""Model-based tests of the durable rules, on every engine: Hypothesis drives random sequences of
start, claim, complete, fail, time out, late outcomes, release, cancel, retry (resume) and rescue
through the engine's verbs (no worker: every step is deterministic), and after each one the
stored state, read through the public reads (``get_run``, its ``StepInfo``s, ``run_tasks``),
must equal a plain-Python model of the rules below: statuses of runs, steps and tasks, attempts,
attempt budgets, rescues, errors by kind, outputs.

The workflow is a chain of two steps (``first`` → ``second``), two attempts each; a rescue
condemns a step as a poison pill at its second lone loss (``max_rescues=1``). Each example gets
a queue and instance ids of its own, so that examples never see each other's work on the test's
fresh database."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.base import ClaimedTask, Completed, Failed
from pypgflow.errors import AttemptError
from pypgflow.orchestration import GiveUp, Retry
from pypgflow.status import RunStatus, StepStatus, TaskStatus

pytestmark = pytest.mark.timeout(120)

STEPS = ("first", "second")
ATTEMPTS = 2
MAX_RESCUES = 1
MAX_RUNS = 4
_examples = itertools.count()


def chain() -> Workflow:
    flow = Workflow("model", max_attempts=ATTEMPTS)
    flow.step(name="first")(lambda input: input)
    flow.step(name="second")(lambda first: first)
    return flow


# -- the model ----------------------------------------------------------------------------------


@dataclass
class MTask:
    status: TaskStatus = TaskStatus.QUEUED
    attempt: int = 0
    max_attempts: int = ATTEMPTS
    rescues: int = 0
    lone: int = 0
    instance: str | None = None
    errors: list[str] = field(default_factory=list)
    output: Any = None


@dataclass
class MStep:
    status: StepStatus = StepStatus.WAITING
    task: MTask | None = None


@dataclass
class MRun:
    id: str
    status: RunStatus = RunStatus.PENDING
    error: str | None = None
    output: Any = None
    steps: dict[str, MStep] = field(default_factory=lambda: {name: MStep() for name in STEPS})

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.PENDING, RunStatus.RUNNING)

    def make_ready(self, name: str) -> None:
        self.steps[name] = MStep(StepStatus.READY, MTask())

    def fail(self, name: str, error: str) -> None:
        """A step fails for good: so does the run, and its other unfinished work is cancelled."""
        self.steps[name].status = StepStatus.FAILED
        self.status, self.error = RunStatus.FAILED, error
        self.close()

    def close(self) -> None:
        for step in self.steps.values():
            if step.status in (StepStatus.WAITING, StepStatus.READY):
                step.status = StepStatus.CANCELLED
            task = step.task
            if task is not None and task.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                task.status = TaskStatus.CANCELLED

    def ran(self) -> None:
        """An outcome was recorded: a pending run is running (claims do not write runs)."""
        if self.status is RunStatus.PENDING:
            self.status = RunStatus.RUNNING


class StateModel(RuleBasedStateMachine):
    """The engine beside the model; ``app`` is set by the test, per engine."""

    app: App

    def __init__(self) -> None:
        super().__init__()
        n = next(_examples)
        self.queue = f"model-{n}"
        self.live = f"live-{n}"
        self.ghost = f"ghost-{n}"  # never registered: lost as soon as it claims
        self.runs: dict[str, MRun] = {}
        self.claimed: list[ClaimedTask] = []  # every claim's answer, stale ones included
        self.claimed_by: dict[tuple[int, int], str] = {}  # (task id, attempt): its instance
        self.flow = chain()

    @initialize()
    def register_the_live_instance(self) -> None:
        self.app.engine.register_instance(
            self.live, hostname="model", pid=1, queues={self.queue: 10}
        )

    def teardown(self) -> None:
        self.app.engine.deregister_instance(self.live)

    # -- what the model knows of held tasks -------------------------------------------------

    def current(self, task: ClaimedTask) -> bool:
        """Whether this claim's attempt is still the running one (its outcome counts)."""
        mine = self.runs[task.run_id].steps[task.step].task
        return (
            mine is not None
            and mine.status is TaskStatus.RUNNING
            and mine.attempt == task.attempt
            and mine.instance == self._instance_of(task)
        )

    def _instance_of(self, task: ClaimedTask) -> str:
        return self.claimed_by[task.id, task.attempt]

    def held(self) -> list[ClaimedTask]:
        # a task released and claimed again by the same instance is the same attempt again
        # (release gives the attempt back): one answer per task
        return list({t.id: t for t in self.claimed if self.current(t)}.values())

    def stale(self) -> list[ClaimedTask]:
        return [t for t in self.claimed if not self.current(t)]

    # -- rules ------------------------------------------------------------------------------

    @precondition(lambda self: len(self.runs) < MAX_RUNS)
    @rule(value=st.integers(0, 9))
    def start(self, value: int) -> None:
        run = self.app.start(self.flow, value, queue=self.queue)
        model = MRun(run.id)
        model.make_ready("first")
        self.runs[run.id] = model

    @rule(ghost=st.booleans(), limit=st.integers(1, 3))
    def claim(self, ghost: bool, limit: int) -> None:
        instance = self.ghost if ghost else self.live
        claimable = {
            (run.id, name)
            for run in self.runs.values()
            for name, step in run.steps.items()
            if step.task is not None and step.task.status is TaskStatus.QUEUED
        }
        tasks = self.app.engine.claim_tasks(
            self.queue, limit, instance_id=instance, workflows=["model"]
        )
        assert len(tasks) == min(limit, len(claimable))
        for task in tasks:
            assert (task.run_id, task.step) in claimable
            mine = self.runs[task.run_id].steps[task.step].task
            assert mine is not None
            mine.status, mine.attempt, mine.instance = (
                TaskStatus.RUNNING,
                mine.attempt + 1,
                instance,
            )
            assert task.attempt == mine.attempt
            self.claimed_by[task.id, task.attempt] = instance
            self.claimed.append(task)

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.held()))
        output = {"step": task.step, "attempt": task.attempt}
        result = self.app.engine.finish_tasks([Completed(task, json.dumps(output))])
        assert result.accepted == 1
        run = self.runs[task.run_id]
        run.ran()
        step = run.steps[task.step]
        assert step.task is not None
        step.task.status, step.task.output = TaskStatus.COMPLETED, output
        step.status = StepStatus.COMPLETED
        if task.step == "first":
            run.make_ready("second")
        else:
            run.status, run.output = RunStatus.COMPLETED, output

    @precondition(lambda self: self.held())
    @rule(data=st.data(), kind=st.sampled_from(["ValueError", "StepTimeout"]), retry=st.booleans())
    def fail(self, data: st.DataObject, kind: str, retry: bool) -> None:
        """A failed or timed-out attempt, retried while attempts remain (or given up at once,
        as a non-retryable failure is)."""
        task = data.draw(st.sampled_from(self.held()))
        run = self.runs[task.run_id]
        mine = run.steps[task.step].task
        assert mine is not None
        again = retry and task.attempt < mine.max_attempts
        error = AttemptError(
            step=task.step, attempt=task.attempt, type=kind, message="x", traceback=""
        )
        verdict = Retry(delay=0.0) if again else GiveUp()
        assert self.app.engine.finish_tasks([Failed(task, error, verdict)]).accepted == 1
        run.ran()
        mine.errors.append(kind)
        if again:
            mine.status = TaskStatus.QUEUED
        else:
            mine.status = TaskStatus.FAILED
            run.fail(task.step, kind)

    @precondition(lambda self: self.stale())
    @rule(data=st.data(), complete=st.booleans())
    def late_outcome(self, data: st.DataObject, complete: bool) -> None:
        """The outcome of an attempt that is no longer the running one changes nothing."""
        task = data.draw(st.sampled_from(self.stale()))
        error = AttemptError(
            step=task.step, attempt=task.attempt, type="E", message="", traceback=""
        )
        outcome = Completed(task, "1") if complete else Failed(task, error, GiveUp())
        assert self.app.engine.finish_tasks([outcome]).accepted == 0

    @precondition(lambda self: any(self._instance_of(t) == self.live for t in self.held()))
    @rule()
    def release(self) -> None:
        """A graceful shutdown hands the live instance's tasks back, their attempt not counted."""
        held = [t for t in self.held() if self._instance_of(t) == self.live]
        released = self.app.engine.release_tasks([t.id for t in held], instance_id=self.live)
        assert released == len(held)
        for task in held:
            mine = self.runs[task.run_id].steps[task.step].task
            assert mine is not None
            mine.status, mine.attempt = TaskStatus.QUEUED, mine.attempt - 1

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        run = self.runs[data.draw(st.sampled_from(sorted(self.runs)))]
        assert self.app.cancel(run.id) is run.active
        if run.active:
            run.status = RunStatus.CANCELLED
            run.close()

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        run = self.runs[data.draw(st.sampled_from(sorted(self.runs)))]
        resumable = run.status in (RunStatus.FAILED, RunStatus.CANCELLED)
        assert self.app.retry(run.id) is resumable
        if not resumable:
            return
        run.status, run.error = RunStatus.PENDING, None
        for name, step in run.steps.items():
            if step.status is StepStatus.COMPLETED:
                continue
            if name == "second" and run.steps["first"].status is not StepStatus.COMPLETED:
                step.status = StepStatus.WAITING
            elif step.task is None:
                run.make_ready(name)
            else:  # its task again, with a fresh budget of attempts
                step.status = StepStatus.READY
                task = step.task
                task.status, task.max_attempts = TaskStatus.QUEUED, task.attempt + ATTEMPTS

    @rule(limit=st.integers(1, 2))
    def ghost_claims_then_is_lost(self, limit: int) -> None:
        """The commonest way to lose work, in one rule so that sequences reach poison pills."""
        self.claim(ghost=True, limit=limit)
        self.rescue()

    @rule()
    def rescue(self) -> None:
        """The ghost is lost: each of its running tasks is queued again, or fails for good when
        no attempt is left (WorkerLost), or at its second loss while alone (PoisonPill)."""
        self.app.engine.rescue_tasks(stale_after=3600.0, max_rescues=MAX_RESCUES, rescuer=self.live)
        lost = [
            (run, name, step.task)
            for run in self.runs.values()
            for name, step in run.steps.items()
            if step.task is not None
            and step.task.status is TaskStatus.RUNNING
            and step.task.instance == self.ghost
        ]
        for run, name, task in lost:
            alone = len(lost) == 1
            task.rescues += 1
            task.lone += alone
            if alone and task.lone > MAX_RESCUES:
                kind = "PoisonPill"
            elif task.attempt >= task.max_attempts:
                kind = "WorkerLost"
            else:
                task.status = TaskStatus.QUEUED
                task.errors.append("WorkerLost")
                continue
            event(f"a rescue fails a step: {kind}")  # --hypothesis-show-statistics
            task.errors.append(kind)
            task.status = TaskStatus.FAILED
            if run.active:
                run.fail(name, kind)

    # -- the stored state equals the model's -------------------------------------------------

    @invariant()
    def stored_state_is_the_models(self) -> None:
        for run in self.runs.values():
            info = self.app.get_run(run.id)
            assert info is not None
            assert info.status is run.status, run
            assert (info.error.type if info.error else None) == run.error
            assert info.output == run.output
            steps = {s.name: s for s in info.steps}
            for name, model in run.steps.items():
                task = model.task
                stored = steps[name]
                assert stored.status is model.status, (name, run)
                assert stored.attempts == (task.attempt if task else 0), (name, run)
                assert [e.type for e in stored.errors] == (task.errors if task else [])
                completed = model.status is StepStatus.COMPLETED
                assert stored.output == (task.output if completed and task else None)
            tasks = {t.step: t for t in self.app.engine.run_tasks(run.id)}
            assert set(tasks) == {n for n, s in run.steps.items() if s.task is not None}
            for name, stored_task in tasks.items():
                task = run.steps[name].task
                assert task is not None
                seen = (stored_task.status, stored_task.attempt, stored_task.max_attempts)
                assert seen == (task.status, task.attempt, task.max_attempts), (name, run)
                assert stored_task.rescues == task.rescues
                assert [e.type for e in stored_task.errors] == task.errors


def test_stored_state_follows_the_model_of_the_rules(make_app: Callable[..., App]) -> None:
    app = make_app(chain())

    class Machine(StateModel):
        pass

    Machine.app = app
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )
