"""What the fault scenarios share: a fleet of worker processes to kill and replace, reading the
step log for repeated executions and reassignment times, and percentiles."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pypgflow.app import App
from pypgflow.status import RunStatus
from tests.integration.flows import read_log
from tests.integration.helpers import WorkerProcess, is_sqlite, query, wait_ready

#: worker timings of the scenarios: shorter than the library's (30 s and 5 s) to keep each
#: scenario minutes long; every bound printed is computed from them
STALE_AFTER = 5.0
HEARTBEAT = 1.0
POLL = 0.5

Key = tuple[str, str, Any]  # (run id, step, map element index or None)


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Fleet:
    """Worker processes started with ``spawn`` (the ``spawn_worker`` fixture), killed and
    replaced by the scenario; ``kills`` keeps (instance id, time.time()) of every kill."""

    spawn: Callable[..., WorkerProcess]
    prefix: str
    options: dict[str, Any] = field(default_factory=dict)
    alive: list[WorkerProcess] = field(default_factory=list)
    kills: list[tuple[str, float]] = field(default_factory=list)
    started: int = 0

    def start(self, count: int = 1, **extra: Any) -> list[WorkerProcess]:
        """Start ``count`` workers with the fleet's options and ``extra`` (e.g. ``url=``)."""
        new = []
        for _ in range(count):
            options = {
                "stale_after": STALE_AFTER,
                "heartbeat_interval": HEARTBEAT,
                "poll_interval": POLL,
                "max_lifetime": 900.0,
                **self.options,
                **extra,
            }
            worker = self.spawn(f"{self.prefix}-{self.started}", **options)
            self.started += 1
            new.append(worker)
        self.alive += new
        return new

    def kill(self, worker: WorkerProcess) -> float:
        """SIGKILL ``worker``: the time of the kill."""
        at = time.time()
        worker.kill()
        self.alive.remove(worker)
        self.kills.append((worker.instance_id, at))
        return at

    def check_alive(self) -> None:
        for worker in self.alive:
            if not worker.alive():
                raise AssertionError(f"{worker} exited by itself:\n{worker.stderr()[-3000:]}")


def key_of(event: dict[str, Any]) -> Key:
    return (event["run"], event["step"], event.get("index"))


def repeated_executions(log: Path) -> tuple[int, int]:
    """(executions begun, of which repeats: begun again for a (run, step, element))."""
    begins = [key_of(e) for e in read_log(log) if e["event"] == "begin"]
    return len(begins), len(begins) - len(set(begins))


def reassign_times(log: Path, kills: list[tuple[str, float]]) -> tuple[list[float], int]:
    """For each step running on a killed worker when it was killed (begun, not ended): seconds
    from the kill to its next begin elsewhere. Also how many were never begun again."""
    events = read_log(log)
    ended = {(key_of(e), e["attempt"], e["instance"]) for e in events if e["event"] != "begin"}
    begins_by_key: dict[Key, list[dict[str, Any]]] = collections.defaultdict(list)
    for event in events:
        if event["event"] == "begin":
            begins_by_key[key_of(event)].append(event)
    times: list[float] = []
    never = 0
    for instance, killed_at in kills:
        for key, begins in begins_by_key.items():
            for begun in begins:
                if begun["instance"] != instance or begun["t"] > killed_at:
                    continue
                if (key, begun["attempt"], instance) in ended:
                    continue
                later = [b["t"] for b in begins if b["t"] > killed_at and b["instance"] != instance]
                if later:
                    times.append(min(later) - killed_at)
                else:
                    never += 1
    return times, never


def ended_then_repeated(log: Path, kills: list[tuple[str, float]]) -> int:
    """Executions that ended on a worker before it was killed and began again elsewhere after
    the kill: their outcome was still on its way to the database (outcomes are written in
    batches), so the step ran again, as a step running at the kill does."""
    events = read_log(log)
    begins: dict[Key, list[float]] = collections.defaultdict(list)
    for event in events:
        if event["event"] == "begin":
            begins[key_of(event)].append(event["t"])
    count = 0
    for instance, killed_at in kills:
        for event in events:
            if event["event"] != "end" or event["instance"] != instance:
                continue
            if event["t"] < killed_at and any(t > killed_at for t in begins[key_of(event)]):
                count += 1
    return count


def total_rescues(url: str, run_id: str | None = None) -> int:
    """Lost attempts recorded (tasks.rescues summed), of every run or of one."""
    table = "tasks" if is_sqlite(url) else "pypgflow.tasks"
    rows = query(url, f"SELECT run_id, rescues FROM {table}")
    return sum(int(n) for run, n in rows if run_id is None or str(run) == run_id)


def run_statuses(app: App) -> collections.Counter[str]:
    return collections.Counter(r.status.value for r in app.list_runs(limit=1_000_000))


def wait_finished(app: App, count: int, timeout: float, fleet: Fleet | None = None) -> float:
    """Until ``count`` runs exist and all are finished: the time.time() it happened."""
    finished = {RunStatus.COMPLETED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value}
    deadline = time.monotonic() + timeout
    while True:
        if fleet is not None:
            fleet.check_alive()
        statuses = run_statuses(app)
        if sum(statuses.values()) >= count and set(statuses) <= finished:
            return time.time()
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not finished after {timeout:g} s: {dict(statuses)}")
        time.sleep(0.2)


__all__ = ["wait_ready"]
