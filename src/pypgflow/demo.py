"""`pypgflow demo`: two example workflows run durably, with their progress shown as they run.

1. ``llm_request``, the seed's example: a linear chain receive -> select_model -> call_llm ->
   publish, in which ``call_llm`` fails on its first attempt (a simulated rate limit) and succeeds
   when retried after a short backoff.
2. ``document_stats``, a fan-out/fan-in DAG: ``split`` a text into chunks, ``count`` the words of
   every chunk concurrently (a map step), ``merge`` the counts, while ``detect_language`` runs as a
   parallel branch; ``report`` joins both.

:func:`run_demo` stores the runs in a database (by default the SQLite file ``pypgflow-demo.db`` in
the working directory), runs a :class:`~pypgflow.worker.Worker` on a thread of this process, and
follows the runs with :class:`~pypgflow.progress.Progress`, printing a line whenever a step
changes. The runs stay in the database afterwards, for ``pypgflow runs`` and ``pypgflow run ID``
(or any unique start of the id, as the progress lines show it).
:func:`create_app` is the same app for the command line (``pypgflow worker pypgflow.demo:create_app``).

The library itself never prints; this module does, because it is a demonstration.

It is read as one example, top to bottom: the two workflows, the app, and the runs they make.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pypgflow.app import App
from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.ids import short_ids
from pypgflow.progress import Progress, took_text
from pypgflow.records import StepInfo
from pypgflow.status import RunStatus, StepStatus
from pypgflow.worker import Worker
from pypgflow.workflow import Workflow

#: Where the demo stores its runs unless told otherwise: a file in the working directory.
DEMO_DATABASE_URL = "sqlite:///pypgflow-demo.db"
POLL_INTERVAL = 0.1
#: Seconds between the arrivals of two runs of the same workflow (scaled by ``pace``).
ARRIVAL = 0.6

PROMPTS = (
    "What is a durable workflow?",
    "  Explain exponential backoff to a new engineer in two sentences.  ",
    "Why run independent steps at the same time?",
)
DOCUMENTS = (
    "Workflows are graphs of steps. Each step is a plain Python function. "
    "Independent steps run at the same time, failed steps are retried with backoff, "
    "and every step runs under a timeout. The runs are stored in the database.",
    "A worker claims the steps that are ready. It records what they return. "
    "When a worker stops, the steps it held go back to the queue.",
)


class RateLimited(Exception):
    """The simulated model provider asks us to slow down."""


# -- the workflows --------------------------------------------------------------------------------


def llm_request_workflow(pace: float = 1.0) -> Workflow:
    """The seed's linear example. ``pace`` scales every simulated delay (0 makes them instant).

    ``call_llm`` fails on the first attempt of every run and succeeds on the second: the attempt
    number comes from the step context, so this holds for durable runs across processes too.
    """

    def receive(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.05 * pace)
        return {**request, "prompt": request["prompt"].strip()}

    def select_model(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.08 * pace)
        model = "large" if len(request["prompt"]) > 40 else "small"
        return {**request, "model": model}

    def call_llm(request: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        ctx.logger.info("asking the %s model (attempt %d)", request["model"], ctx.attempt)
        if ctx.attempt == 1:
            time.sleep(0.1 * pace)
            raise RateLimited("429 Too Many Requests: slow down")
        time.sleep((0.2 if request["model"] == "large" else 0.15) * pace)
        words = request["prompt"].rstrip("?.").split()
        return {**request, "completion": f"A short answer about {words[-1]}."}

    def publish(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.06 * pace)
        return {
            "request_id": request.get("request_id"),
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
        backoff=Backoff(base=0.2 * pace, factor=2.0, jitter=0.0),
        timeout=10.0,
    )


def document_stats_workflow(pace: float = 1.0) -> Workflow:
    """A fan-out/fan-in DAG with a map step and a parallel async branch."""
    flow = Workflow("document_stats", timeout=10.0)

    @flow.step
    def split(input: dict[str, Any]) -> list[str]:
        time.sleep(0.05 * pace)
        return [s.strip() for s in input["text"].split(".") if s.strip()]

    @flow.map(over=split)
    def count(chunk: str) -> int:
        words = chunk.split()
        time.sleep(min(0.2, 0.1 + 0.005 * len(words)) * pace)  # the chunks run at the same time
        return len(words)

    @flow.step
    def merge(counts: list[int]) -> dict[str, int]:
        time.sleep(0.05 * pace)
        return {"chunks": len(counts), "words": sum(counts)}

    @flow.step(depends_on=[])
    async def detect_language(input: dict[str, Any]) -> str:
        await asyncio.sleep(0.15 * pace)  # runs while the chunks are counted
        return "en" if " the " in f" {input['text'].lower()} " else "unknown"

    @flow.step(depends_on=[merge, detect_language])
    def report(merge: dict[str, int], detect_language: str) -> dict[str, Any]:
        return {**merge, "language": detect_language}

    return flow


def create_app(database_url: str | None = None, *, pace: float = 1.0) -> App:
    """An App with the demo's workflows registered, for ``pypgflow worker pypgflow.demo:create_app``
    and ``pypgflow start pypgflow.demo:create_app llm_request ...``.

    The database: ``database_url``, else PYPGFLOW_DATABASE_URL (which the command line's
    ``--database-url`` sets), else the demo's file ``pypgflow-demo.db`` in the working directory.
    """
    url = database_url or os.environ.get(DATABASE_URL_ENV) or DEMO_DATABASE_URL
    app = App(url)
    app.register(llm_request_workflow(pace))
    app.register(document_stats_workflow(pace))
    return app


# -- what the demo did ----------------------------------------------------------------------------


@dataclass
class DemoRun:
    """One run of the demo, as stored once the demo ended."""

    label: str
    workflow: str
    run_id: str
    status: RunStatus
    result: Any
    duration: float | None
    steps_executed: int
    retries: int


@dataclass
class DemoSummary:
    """What :func:`run_demo` did: its runs (only those this call started), and totals over them."""

    database_url: str
    database_path: Path | None  # the SQLite file, None for PostgreSQL
    runs: list[DemoRun] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def completed(self) -> int:
        return sum(run.status is RunStatus.COMPLETED for run in self.runs)

    @property
    def succeeded(self) -> bool:
        return bool(self.runs) and self.completed == len(self.runs)

    @property
    def steps_executed(self) -> int:
        return sum(run.steps_executed for run in self.runs)

    @property
    def retries(self) -> int:
        return sum(run.retries for run in self.runs)

    def of(self, workflow: str) -> list[DemoRun]:
        return [run for run in self.runs if run.workflow == workflow]


def _executed(step: StepInfo) -> int:
    """Step executions: one per completed task (a map step has one per element), plus every
    failed attempt."""
    done = (step.task_count or 0) if step.is_map else 1
    return (done if step.status is StepStatus.COMPLETED else 0) + len(step.errors)


def _retries(step: StepInfo) -> int:
    """Failed attempts that were followed by another attempt."""
    return len(step.errors) - (1 if step.status is StepStatus.FAILED else 0)


# -- the demo -------------------------------------------------------------------------------------


def run_demo(
    database_url: str | None = None,
    *,
    out: TextIO | None = None,
    pace: float = 1.0,
    llm_requests: int = 3,
    documents: int = 2,
    timeout: float = 60.0,
) -> DemoSummary:
    """Run the demo: store ``llm_requests`` runs of ``llm_request`` and ``documents`` runs of
    ``document_stats`` in ``database_url`` (default: ``sqlite:///pypgflow-demo.db``, in the working
    directory; migrated first), execute them with a worker on a thread of this process, print
    their progress and a summary to ``out`` (standard output by default), and return the summary.

    ``pace`` scales the simulated work and backoff (1.0 takes two or three seconds). Runs that
    have not finished after ``timeout`` seconds are left in the database, and counted as not
    completed.
    """
    stream = out if out is not None else sys.stdout
    url = database_url or DEMO_DATABASE_URL

    def show(text: str = "") -> None:
        print(text, file=stream, flush=True)

    app = create_app(url, pace=pace)
    path = _sqlite_path(app)
    summary = DemoSummary(database_url=url, database_path=path)
    worker_errors: list[BaseException] = []
    try:
        where = f"SQLite file {path}" if path is not None else _redacted(url)
        show(f"pypgflow demo: durable workflows stored in {where}, worker in this process")
        applied = app.migrate()
        show(
            f"  schema     migrated (applied {', '.join(map(str, applied))})"
            if applied
            else "  schema     already up to date"
        )
        worker = Worker(
            app,
            {"default": 10},
            poll_interval=0.2,
            shutdown_timeout=2.0,
            install_signal_handlers=False,
        )

        def work() -> None:
            try:
                worker.run()
            except BaseException as exc:  # shown after the runs, not lost in a thread
                worker_errors.append(exc)

        thread = threading.Thread(target=work, name="pypgflow-demo-worker", daemon=True)
        started = time.perf_counter()
        thread.start()
        show(f"  worker     {app.instance_id}, queue default with 10 slots")
        try:
            # Requests arrive one after another: each is started now, due a little later.
            llm_runs = [
                app.start(
                    "llm_request",
                    {"request_id": f"req-{i + 1}", "prompt": PROMPTS[i % len(PROMPTS)]},
                    delay=ARRIVAL * i * pace,
                )
                for i in range(llm_requests)
            ]
            doc_runs = [
                app.start(
                    "document_stats",
                    {"text": DOCUMENTS[i % len(DOCUMENTS)]},
                    delay=ARRIVAL * (i + 0.5) * pace,
                )
                for i in range(documents)
            ]
            show(
                f"  started    {len(llm_runs)} runs of llm_request: receive -> select_model -> "
                "call_llm -> publish"
            )
            show("             (call_llm hits a rate limit on its first attempt and is retried)")
            show(
                f"             {len(doc_runs)} runs of document_stats: split -> count each chunk "
                "(map) -> merge, detect_language in parallel -> report"
            )
            show(
                f"             each due {ARRIVAL * pace / 2:g} s after the one before "
                "(start(..., delay=...)), as if arriving over time"
            )
            show()
            # Started together, the runs share their first digits: shown as short as unique.
            short = short_ids(run.id for run in [*llm_runs, *doc_runs])
            labels = {run.id: f"llm-{i + 1} {short[run.id]}" for i, run in enumerate(llm_runs)}
            labels |= {run.id: f"doc-{i + 1} {short[run.id]}" for i, run in enumerate(doc_runs)}
            progress = Progress(app, stream, labels, started)
            progress.header()
            deadline = time.monotonic() + timeout
            while not progress.poll():
                if worker_errors or not thread.is_alive():
                    break
                if time.monotonic() >= deadline:
                    show(f"  gave up waiting after {timeout:g} s")
                    break
                time.sleep(POLL_INTERVAL)
            summary.elapsed = time.perf_counter() - started
        finally:
            worker.stop()
            thread.join(timeout=10.0)
        for exc in worker_errors:
            show(f"The worker stopped with an error: {type(exc).__name__}: {exc}")
        for run in [*llm_runs, *doc_runs]:
            info = app.get_run(run.id)
            summary.runs.append(
                DemoRun(
                    label=labels[run.id].split()[0],
                    workflow=info.workflow,
                    run_id=info.id,
                    status=info.status,
                    result=info.output,
                    duration=info.duration,
                    steps_executed=sum(_executed(step) for step in info.steps),
                    retries=sum(_retries(step) for step in info.steps),
                )
            )
    finally:
        app.close()
    _show_summary(summary, show)
    return summary


def _show_summary(summary: DemoSummary, show: Any) -> None:
    show()
    status = "completed" if summary.succeeded else "completed (see the failures above)"
    show(
        f"Summary: {summary.completed} of {len(summary.runs)} runs {status} in "
        f"{summary.elapsed:.2f} s; {summary.steps_executed} steps executed, "
        f"{summary.retries} retries"
    )
    show(f"  {'workflow':<16}{'runs':>5}{'steps':>7}{'retries':>9}  time per run")
    for workflow in dict.fromkeys(run.workflow for run in summary.runs):
        runs = summary.of(workflow)
        durations = [run.duration for run in runs if run.duration is not None]
        timing = f"{min(durations):.2f}-{max(durations):.2f} s" if durations else "-"
        show(
            f"  {workflow:<16}{len(runs):>5}{sum(r.steps_executed for r in runs):>7}"
            f"{sum(r.retries for r in runs):>9}  {timing}"
        )
    show()
    for run in summary.runs:
        show(f"  {run.label:<6} {run.run_id}  {took_text(run.duration):>5}  {_outcome(run)}")
    show()
    prog = _program()
    url = summary.database_url
    option = f"--database-url {shlex.quote(url) if _redacted(url) == url else 'URL'}"
    if summary.database_path is not None:
        show(f"The runs are stored in {summary.database_path}: they outlive this process.")
    else:
        show(f"The runs are stored in {_redacted(url)}: they outlive this process.")
    example = summary.runs[0].run_id if summary.runs else "RUN_ID"
    show("Next, try:")
    show(f"  {prog} {option} runs")
    show(f"  {prog} {option} run {example}")
    show("      (a run's steps, attempts and the rate-limit error of its first call_llm)")
    show(f"  {prog} {option} worker pypgflow.demo:create_app")
    show("      (a worker for the demo's workflows; then, in another terminal:)")
    show(
        f"  {prog} {option} start pypgflow.demo:create_app llm_request "
        """--input '{"prompt": "Why?"}' --wait"""
    )
    if summary.database_path is not None:
        show(f"  {prog} demo --database-url postgresql://postgres@127.0.0.1:5432/postgres")
        show("      (the same on PostgreSQL: your own apps move by changing the URL, too)")
    show("Then read GETTING_STARTED.md to write and run your own workflows.")


def _sqlite_path(app: App) -> Path | None:
    path = getattr(app.engine, "path", None)
    if path is None or str(path) == ":memory:":
        return None
    return Path(path).resolve()


def _redacted(url: str) -> str:
    """The URL without its password, if it has one."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _program() -> str:
    """How to call pypgflow again: ``pypgflow`` when it is on the PATH, else as it was called."""
    called = sys.argv[0] if sys.argv else ""
    if Path(called).name == "pypgflow" and not shutil.which("pypgflow"):
        return called
    return "pypgflow"


def _outcome(run: DemoRun, limit: int = 90) -> str:
    """A run's result in a few words."""
    result = run.result
    if run.status is not RunStatus.COMPLETED:
        text = run.status.value
    elif run.workflow == "llm_request" and isinstance(result, dict):
        text = f"{result.get('model')} model: {result.get('completion')!r}"
    elif run.workflow == "document_stats" and isinstance(result, dict):
        text = (
            f"{result.get('chunks')} chunks, {result.get('words')} words, "
            f"language {result.get('language')!r}"
        )
    else:
        text = repr(result)
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0 if run_demo().succeeded else 1)
