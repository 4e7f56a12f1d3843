"""`pypgflow demo`: two small workflows run in-process, with their progress shown as they run.

1. ``llm_request``, the seed's example: a linear chain receive -> select_model -> call_llm ->
   publish, in which ``call_llm`` fails once (a simulated rate limit) and is retried with
   ``retry="step"`` after a short backoff.
2. ``document_stats``, a fan-out/fan-in DAG: ``split`` a text into chunks, ``count`` the words of
   every chunk concurrently (a map step), ``merge`` the counts, while ``detect_language`` runs as a
   parallel branch; ``report`` joins both.

The library itself never prints: the demo shows progress by attaching a logging handler to the
``pypgflow`` logger and reading the context every record carries (``event``, ``step``, ``attempt``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.executor import execute
from pypgflow.workflow import Workflow

TEXT = (
    "Workflows are graphs of steps. Each step is a plain Python function. "
    "Independent steps run at the same time, failed steps are retried with backoff, "
    "and every step runs under a timeout. Durable execution on PostgreSQL comes next."
)


class RateLimited(Exception):
    """The simulated model provider asks us to slow down."""


@dataclass
class DemoRun:
    """One workflow run of the demo."""

    workflow: str
    run_id: str
    result: Any
    elapsed: float
    step_runs: int = 0
    retries: int = 0


@dataclass
class DemoSummary:
    """What :func:`run_demo` did: its runs, and totals over them."""

    runs: list[DemoRun] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def step_runs(self) -> int:
        return sum(run.step_runs for run in self.runs)

    @property
    def retries(self) -> int:
        return sum(run.retries for run in self.runs)


# -- the workflows --------------------------------------------------------------------------------


def llm_request_workflow(pace: float = 1.0) -> Workflow:
    """The seed's linear example. ``pace`` scales every simulated delay (0 makes them instant)."""
    calls = {"call_llm": 0}

    def receive(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.1 * pace)
        return {**request, "prompt": request["prompt"].strip()}

    def select_model(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.1 * pace)
        model = "large" if len(request["prompt"]) > 40 else "small"
        return {**request, "model": model}

    def call_llm(request: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        calls["call_llm"] += 1
        ctx.logger.info("asking the %s model (attempt %d)", request["model"], ctx.attempt)
        time.sleep(0.25 * pace)
        if calls["call_llm"] == 1:
            raise RateLimited("429 Too Many Requests: slow down")
        words = request["prompt"].rstrip("?").split()
        return {**request, "completion": f"A short answer about {words[-1]}."}

    def publish(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.1 * pace)
        return {
            "request_id": request["request_id"],
            "model": request["model"],
            "completion": request["completion"],
            "published": True,
        }

    return Workflow.from_steps(
        "llm_request",
        [
            ("receive", receive),
            ("select_model", select_model),
            ("call_llm", call_llm),
            ("publish", publish),
        ],
        backoff=Backoff(base=0.3 * pace, factor=2.0, jitter=0.0),
        timeout=5.0,
    )


def document_stats_workflow(pace: float = 1.0) -> Workflow:
    """A fan-out/fan-in DAG with a map step and a parallel async branch."""
    flow = Workflow("document_stats", timeout=5.0)

    @flow.step
    def split(input: dict[str, Any]) -> list[str]:
        time.sleep(0.05 * pace)
        sentences = [s.strip() for s in input["text"].split(".") if s.strip()]
        return sentences

    @flow.map(over=split)
    def count(sentence: str, ctx: StepContext) -> int:
        time.sleep(0.2 * pace)  # all chunks are counted at the same time
        return len(sentence.split())

    @flow.step
    def merge(counts: list[int]) -> dict[str, int]:
        return {"chunks": len(counts), "words": sum(counts)}

    @flow.step(depends_on=[])
    async def detect_language(input: dict[str, Any]) -> str:
        await asyncio.sleep(0.3 * pace)  # runs while the chunks are counted
        return "en" if " the " in f" {input['text'].lower()} " else "unknown"

    @flow.step(depends_on=[merge, detect_language])
    def report(merge: dict[str, int], detect_language: str) -> dict[str, Any]:
        return {**merge, "language": detect_language}

    return flow


# -- showing progress -----------------------------------------------------------------------------


class _Progress(logging.Handler):
    """Turns pypgflow's log records into progress lines, and counts steps and retries."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(logging.DEBUG)
        self.out = out
        self.step_runs = 0
        self.retries = 0
        self.run_id = ""
        self.run_started = time.time()  # the same clock as LogRecord.created
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        step = getattr(record, "step", None)
        index = getattr(record, "task_index", None)
        where = f"{step}[{index}]" if index is not None else str(step)
        attempt = getattr(record, "attempt", None)
        line: str | None = None
        if record.name == "pypgflow.step":
            line = f"    .. {where}: {record.getMessage()}"
        elif event == "workflow.started":
            self.run_id = str(getattr(record, "run_id", ""))
            self.run_started = record.created
            line = f"  run {self.run_id[:8]} started"
        elif event == "step.succeeded":
            self.step_runs += 1
            again = f" (attempt {attempt})" if attempt and attempt > 1 else ""
            line = f"    ok {where:<16} took {getattr(record, 'elapsed', 0.0):.2f} s{again}"
        elif event == "step.failed":
            reason = record.getMessage().split(": ", 1)[-1]
            line = f"    !! {where:<16} attempt {attempt} failed: {reason}"
        elif event in ("step.retrying", "workflow.retrying"):
            self.retries += 1
            line = f"    -> retrying {where} in {getattr(record, 'delay', 0.0):.2f} s"
        elif event == "workflow.failed":
            line = f"  run failed: {record.getMessage()}"
        if line is not None:
            if line.startswith("    "):  # a step's line: when it happened, since the run started
                line = f"  {record.created - self.run_started:5.2f}s{line[2:]}"
            with self._lock:
                print(line, file=self.out, flush=True)


def run_demo(*, out: TextIO | None = None, pace: float = 1.0) -> DemoSummary:
    """Run both demo workflows in-process, print their progress and a summary to ``out``
    (standard output by default), and return the summary.

    ``pace`` scales the simulated work and backoff (1.0 takes about two seconds).
    """
    stream = out if out is not None else sys.stdout
    summary = DemoSummary()
    logger = logging.getLogger("pypgflow")
    progress = _Progress(stream)
    previous_level = logger.level
    logger.addHandler(progress)
    logger.setLevel(logging.DEBUG)

    def show(text: str = "") -> None:
        print(text, file=stream, flush=True)

    show("pypgflow demo: two workflows, run in-process (nothing is stored yet)")
    started = time.perf_counter()
    try:
        runs: list[tuple[str, Workflow, Any, dict[str, Any]]] = [
            (
                "a linear chain; call_llm fails once and is retried alone (retry='step')",
                llm_request_workflow(pace),
                {"request_id": "req-1", "prompt": "What is a durable workflow?"},
                {"retry": "step"},
            ),
            (
                "a DAG: split -> count each chunk (map) -> merge, with detect_language in parallel",
                document_stats_workflow(pace),
                {"text": TEXT},
                {},
            ),
        ]
        for title, flow, input, options in runs:
            show()
            show(f"{flow.name}: {title}")
            progress.step_runs = progress.retries = 0
            run_started = time.perf_counter()
            result = execute(flow, input, **options)
            elapsed = time.perf_counter() - run_started
            show(f"  done in {elapsed:.2f} s -> {_brief(result)}")
            summary.runs.append(
                DemoRun(
                    workflow=flow.name,
                    run_id=progress.run_id,
                    result=result,
                    elapsed=elapsed,
                    step_runs=progress.step_runs,
                    retries=progress.retries,
                )
            )
    finally:
        logger.removeHandler(progress)
        logger.setLevel(previous_level)
    summary.elapsed = time.perf_counter() - started

    show()
    show("Summary")
    show(f"  runs       {len(summary.runs)} succeeded")
    show(f"  step runs  {summary.step_runs} (map elements count one each)")
    show(f"  retries    {summary.retries}")
    timings = ", ".join(f"{run.workflow} {run.elapsed:.2f} s" for run in summary.runs)
    show(f"  time       {summary.elapsed:.2f} s ({timings})")
    show()
    show("Next:")
    show("  make test                                    run the whole test suite")
    show("  .venv/bin/python bench/executor_overhead.py  measure the executor's cost per step")
    show("  .venv/bin/pypgflow --help                    see the command line")
    show("  then read GETTING_STARTED.md to write and run your own workflows")
    return summary


def _brief(value: Any, limit: int = 140) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":  # pragma: no cover
    run_demo()
