"""Progress: runs followed as they move, a line printed for every change seen (a run started, an
attempt started or failed, a step completed or skipped, a run finished), with the time since the
start.

``pypgflow demo`` shows its runs with it, and ``pypgflow start --wait`` the run it started. It
reads the runs with :meth:`App.get_run`, so it follows runs executed by any worker, anywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from pypgflow.app import App
from pypgflow.errors import AttemptError
from pypgflow.records import RunInfo, StepInfo
from pypgflow.status import RunStatus, StepStatus
from pypgflow.workflow import resolve_options


@dataclass
class _Seen:
    """What has been shown of one step so far."""

    attempts: int = 0
    errors: int = 0
    status: StepStatus = StepStatus.WAITING


class Progress:
    """Polls the runs of ``labels`` (run id -> what to call it) and prints a line to ``out`` for
    every change it sees; ``started`` is the ``time.perf_counter()`` the times count from. (A
    step that starts and ends between two polls shows only as completed.)"""

    def __init__(self, app: App, out: TextIO, labels: dict[str, str], started: float) -> None:
        self.app = app
        self.out = out
        self.labels = labels
        self.started = started
        self.seen: dict[tuple[str, str], _Seen] = {}
        self.running: set[str] = set()
        self.finished: dict[str, RunInfo] = {}
        self.width = max(len(label) for label in labels.values())

    def header(self) -> None:
        self._print(f"{'time':>6}  {'run':<{self.width}}  {'step':<18} attempt  status      took")

    def poll(self) -> bool:
        """Look at every unfinished run once; True when all have finished."""
        for run_id in self.labels:
            if run_id in self.finished:
                continue
            info = self.app.get_run(run_id)
            if run_id not in self.running and info.status is not RunStatus.PENDING:
                self.running.add(run_id)
                self._line(run_id, "(run)", "", "started", "")
            for step in info.steps:
                self._step(info, step)
            if info.status.finished:
                self.finished[run_id] = info
                took = took_text(info.duration)
                outcome = info.status.value
                if info.status is RunStatus.FAILED and info.error:
                    outcome += f": {info.error.type}: {info.error.message}"
                self._line(run_id, "(run)", "", outcome, took)
        return len(self.finished) == len(self.labels)

    def _step(self, info: RunInfo, step: StepInfo) -> None:
        seen = self.seen.setdefault((info.id, step.name), _Seen())
        name = f"{step.name} [x{step.task_count}]" if step.is_map else step.name
        for error in step.errors[seen.errors :]:
            why = _why(self.app, info.workflow, step, error)
            self._line(info.id, _where(step, error), str(error.attempt), "failed", "", why)
        seen.errors = len(step.errors)
        if step.status is StepStatus.READY and step.attempts > seen.attempts:
            self._line(info.id, name, str(step.attempts), "running", "")
        if step.status is StepStatus.COMPLETED and seen.status is not StepStatus.COMPLETED:
            self._line(info.id, name, str(step.attempts), "completed", took_text(step.duration))
        if step.status is StepStatus.SKIPPED and seen.status is not StepStatus.SKIPPED:
            self._line(info.id, name, "", "skipped", "")
        seen.attempts = max(seen.attempts, step.attempts)
        seen.status = step.status

    def _line(
        self, run_id: str, step: str, attempt: str, status: str, took: str, note: str = ""
    ) -> None:
        now = time.perf_counter() - self.started
        label = self.labels[run_id]
        text = (
            f"{now:5.2f}s  {label:<{self.width}}  {step:<18} {attempt:>7}  {status:<9}  {took:>5}"
        )
        self._print(f"{text}  {note}".rstrip())

    def _print(self, text: str) -> None:
        print(f"  {text}", file=self.out, flush=True)


def _where(step: StepInfo, error: AttemptError) -> str:
    return error.where if step.is_map else step.name


def _why(app: App, workflow: str, step: StepInfo, error: AttemptError) -> str:
    """The error, and what comes next: for the step's latest error, what its state says
    (failed for good, or a retry due at a time); else, if the app knows the workflow, what its
    options predict (a retry, or no attempts left)."""
    flow = app.workflows.get(workflow)
    options = (
        resolve_options(flow, flow.steps[step.name])
        if flow is not None and step.name in flow.steps
        else None
    )
    exhausted = options is not None and error.attempt >= options.max_attempts
    if step.errors and step.errors[-1] == error:
        if step.status is StepStatus.FAILED:
            then = "no attempts left" if exhausted else "not retried: failed for good"
            return f"{error.type}: {error.message}; {then}"
        if step.status is StepStatus.READY and step.due_at is not None:
            wait = max(0.0, (step.due_at - datetime.now(UTC)).total_seconds())
            return f"{error.type}: {error.message}; retry in {wait:.2f} s"
    retry = ""
    if options is not None:
        if exhausted:
            retry = "; no attempts left"
        else:
            retry = f"; retry in {options.backoff.delay(error.attempt):.2f} s"
    return f"{error.type}: {error.message}{retry}"


def took_text(seconds: float | None) -> str:
    """A duration as the progress lines show it: ``0.25s`` (nothing if unknown)."""
    return "" if seconds is None else f"{seconds:.2f}s"
