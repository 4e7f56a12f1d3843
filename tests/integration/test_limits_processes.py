"""Fleet-wide limits hold under contention: four worker processes share 500 runs of a workflow
whose first step may run 3 at once and whose second takes a token of a rate limit (20 per half
second). Every execution's start and end is recorded by the step itself; at no moment did more
than 3 exports run, and no half second saw more than 20 calls start, while every run completed
with each step run once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.status import RunStatus
from tests.integration import flows
from tests.integration.flows import read_log
from tests.integration.helpers import WorkerProcess, executions, wait_all_finished, wait_ready
from tests.limit_checks import most_at_once, most_in_window

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RUNS = 500


def test_four_processes_never_exceed_a_concurrency_or_a_rate_limit(
    app: App, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    workers = [spawn_worker(f"it-limit-{n}", max_lifetime=200) for n in range(4)]
    wait_ready(app, workers)
    log = str(log_path)
    runs = app.start_many("it_limited", [{"log": log, "i": i, "sleep": 0.005} for i in range(RUNS)])
    wait_all_finished(app, RUNS, timeout=180, workers=workers)

    assert {app.get_run(r.id).status for r in runs[:20]} == {RunStatus.COMPLETED}
    assert {r.status for r in app.list_runs(limit=RUNS)} == {RunStatus.COMPLETED}
    begun = executions(log_path)
    assert len(begun) == 2 * RUNS
    assert set(begun.values()) == {1}  # each step ran once: sent back, a step is not run

    events = read_log(log_path)
    spans: dict[str, list[float]] = {}
    for event in events:
        if event["step"] == "export":
            spans.setdefault(event["run"], []).append(event["t"])
    export_spans = [(min(ts), max(ts)) for ts in spans.values()]
    assert len(export_spans) == RUNS
    assert most_at_once(export_spans) <= flows.EXPORTS
    assert most_at_once(export_spans) == flows.EXPORTS  # the limit was reached, not avoided

    calls = [e["t"] for e in events if e["step"] == "call" and e["event"] == "begin"]
    limit, per = flows.CALLS
    assert most_in_window(calls, per) <= limit
    assert max(calls) - min(calls) >= (RUNS / limit - 1) * per  # the rate held them back
    assert len({e["instance"] for e in events}) == 4  # every process took part
