"""(7) Cron exactly-once while the leader is killed: three instances of an app with a per-second
schedule; every few seconds the leader is SIGKILLed and a new instance started in its place, for
two minutes. Every tick from the schedule's definition to the end has exactly one run (none
missed, none twice), and every tick's run completes."""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.leader import LEADER_LEASE
from tests.chaos.conftest import Figures
from tests.chaos.harness import STALE_AFTER, percentile, run_statuses, wait_finished
from tests.integration.helpers import wait_for
from tests.integration.leader_proc import LeaderProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

DURATION = float(os.environ.get("PYPGFLOW_CHAOS_CRON_SECONDS", "120"))
LEASE_TTL = 1.5
INSTANCES = 3


@pytest.fixture
def observer(database_url: str) -> Iterator[App]:
    with App(database_url, instance_id="observer") as app:
        yield app


@pytest.fixture
def spawn(database_url: str, tmp_path: Path) -> Iterator[Callable[[str], LeaderProcess]]:
    started: list[LeaderProcess] = []

    def start(instance_id: str) -> LeaderProcess:
        process = LeaderProcess(
            database_url,
            instance_id,
            tmp_path,
            LEASE_TTL,
            max_lifetime=DURATION + 300,
            stale_after=STALE_AFTER,
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()
        for process in started:
            if process.stderr().count("Traceback"):
                sys.stderr.write(f"----- {process} stderr -----\n{process.stderr()}\n")


def leader(app: App) -> str | None:
    holder = app.engine.lease_holder(LEADER_LEASE)
    return None if holder is None else holder[0]


def test_cron_exactly_once_while_the_leader_is_killed_every_few_seconds(
    observer: App, spawn: Callable[[str], LeaderProcess], figures: Figures
) -> None:
    rng = random.Random(os.environ.get("PYPGFLOW_CHAOS_SEED"))
    processes = {f"cron-{i}": spawn(f"cron-{i}") for i in range(INSTANCES)}
    started = INSTANCES
    wait_for(lambda: leader(observer) is not None, timeout=30, what="a leader")
    began = time.monotonic()
    kills: list[str] = []
    failovers: list[float] = []
    while time.monotonic() - began < DURATION:
        time.sleep(rng.uniform(3.0, 6.0))
        for name, process in processes.items():
            assert process.alive(), f"{name} exited by itself:\n{process.stderr()[-3000:]}"
        holder = leader(observer)
        if holder is None or holder not in processes:
            continue  # between leaders: the next round kills the next one
        processes.pop(holder).kill()
        killed = time.monotonic()
        kills.append(holder)
        name = f"cron-{started}"
        started += 1
        processes[name] = spawn(name)
        wait_for(
            lambda old=holder: (h := leader(observer)) is not None and h != old,
            timeout=LEASE_TTL + 10,
            what=f"a leader after {holder}",
            interval=0.02,
        )
        failovers.append(time.monotonic() - killed)
    for process in processes.values():
        assert process.stop() == 0, process.stderr()[-3000:]
    stopped_at = datetime.now().astimezone()

    runs = sorted(observer.list_runs(limit=100_000), key=lambda r: r.scheduled_at or r.created_at)
    keys = [run.idempotency_key or "" for run in runs]
    ticks = [datetime.fromisoformat(key.split(":", 3)[3]) for key in keys]
    assert ticks, "the schedule started no run"
    defined_at = observer.engine.schedule_states()["every-second"].defined_at
    first_tick = defined_at.replace(microsecond=0) + timedelta(seconds=1)
    expected: list[datetime] = []
    while not expected or expected[-1] + timedelta(seconds=1) <= ticks[-1]:
        expected.append(first_tick + timedelta(seconds=len(expected)))
    missing = sorted(set(expected) - set(ticks))
    twice = len(ticks) - len(set(ticks))
    # The runs the killed instances held are rescued (stale_after) and finish: every tick's run
    # completes, with one more worker to finish the last ones.
    finisher = spawn(f"cron-{started}")
    wait_finished(observer, len(runs), timeout=STALE_AFTER * 6 + 60)
    finisher.stop()
    statuses = run_statuses(observer)
    figures.add(
        f"{DURATION:g} s of a per-second schedule, {INSTANCES} instances, the leader SIGKILLed "
        f"every 3-6 s and replaced: {len(kills)} leaders killed; failover p50 "
        f"{percentile(failovers, 50):.2f} s, max {max(failovers, default=float('nan')):.2f} s "
        f"(lease {LEASE_TTL:g} s)"
    )
    figures.add(
        f"ticks from the definition to the last: {len(expected)}; runs {len(runs)}; missed "
        f"{len(missing)}; started twice {twice}; the last tick {(stopped_at - ticks[-1]).total_seconds():.1f} s "
        f"before the stop; runs {dict(statuses)}"
    )
    assert len(kills) >= DURATION / 6 - 2
    assert missing == []
    assert twice == 0
    assert ticks[-1] >= stopped_at - timedelta(seconds=3)
    assert statuses == {"completed": len(runs)}
