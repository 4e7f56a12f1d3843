"""Leadership and cron across real worker processes (``tests.integration.leader_proc``), on
PostgreSQL and on a shared SQLite file: a killed leader is replaced within one lease period, and
a per-second schedule gets exactly one run per tick, without gaps, while three instances come
and go."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.leader import LEADER_LEASE
from tests.integration.helpers import wait_for
from tests.integration.leader_proc import LeaderProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LEASE_TTL = 1.5


@pytest.fixture
def observer(database_url: str) -> Iterator[App]:
    """The test's own App: it reads what the instances do."""
    with App(database_url, instance_id="observer") as app:
        yield app


@pytest.fixture
def spawn(database_url: str, tmp_path: Path) -> Iterator[Callable[[str], LeaderProcess]]:
    """``spawn(instance_id)``: a started leader_proc; every one is killed at teardown, and its
    stderr echoed so that a failing test shows what the instances logged."""
    started: list[LeaderProcess] = []

    def start(instance_id: str) -> LeaderProcess:
        process = LeaderProcess(database_url, instance_id, tmp_path, LEASE_TTL)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()
        for process in started:
            sys.stderr.write(f"----- {process} stderr -----\n{process.stderr()}\n")


def lease_holder(app: App) -> str | None:
    holder = app.engine.lease_holder(LEADER_LEASE)
    return None if holder is None else holder[0]


def registered(app: App) -> set[str]:
    return {instance.instance_id for instance in app.instances()}


def start_all(
    app: App, spawn: Callable[[str], LeaderProcess], names: list[str]
) -> dict[str, LeaderProcess]:
    processes = {name: spawn(name) for name in names}

    def ready() -> bool:
        for process in processes.values():
            if not process.alive():
                raise AssertionError(f"{process} exited early:\n{process.stderr()}")
        return set(names) <= registered(app) and lease_holder(app) is not None

    wait_for(ready, timeout=20, what=f"instances {names} to register and one to lead")
    return processes


def new_leader(app: App, old: str, *, timeout: float) -> tuple[str, float]:
    """Wait for a holder other than ``old``: (its id, seconds waited)."""
    began = time.monotonic()
    holder = wait_for(
        lambda: (h := lease_holder(app)) is not None and h != old and h,
        timeout=timeout,
        what=f"a leader other than {old}",
        interval=0.01,
    )
    return str(holder), time.monotonic() - began


def test_a_killed_leader_is_replaced_within_one_lease_period(
    observer: App, spawn: Callable[[str], LeaderProcess]
) -> None:
    app = observer
    processes = start_all(app, spawn, ["lp-a", "lp-b", "lp-c"])
    first = lease_holder(app)
    assert first in processes
    time.sleep(1.0)  # a few renewals: the same leader
    assert lease_holder(app) == first

    processes[first].kill()  # kill -9: no release, the lease must run out
    second, failover = new_leader(app, first, timeout=LEASE_TTL + 3)
    assert second in processes
    assert second != first
    assert failover <= LEASE_TTL + 0.5, failover
    sys.stderr.write(f"failover after kill -9: {failover:.3f} s (lease {LEASE_TTL} s)\n")
    # it logs so just after its lease is written, which the observer may see first
    wait_for(
        lambda: "is now the leader" in processes[second].stderr(),
        timeout=2,
        what=f"{second} to log that it leads",
    )

    # A graceful stop releases the lease: the last instance leads at once.
    assert processes[second].stop() == 0
    stopped = time.monotonic()
    third, handover = new_leader(app, second, timeout=LEASE_TTL + 3)
    assert third not in (first, second)
    assert time.monotonic() - stopped < 1.0, handover
    assert "released the leader lease" in processes[second].stderr()
    time.sleep(LEASE_TTL)  # and it stays the leader, alone
    assert lease_holder(app) == third


def test_cron_ticks_run_exactly_once_across_instances_and_a_leader_kill(
    observer: App, spawn: Callable[[str], LeaderProcess]
) -> None:
    app = observer
    processes = start_all(app, spawn, ["cron-a", "cron-b", "cron-c"])
    first = lease_holder(app)
    assert first is not None
    time.sleep(3.3)
    processes[first].kill()  # mid-way, at an arbitrary point of its pass
    killed_at = datetime.now().astimezone()
    second, _ = new_leader(app, first, timeout=LEASE_TTL + 3)
    time.sleep(3.6)
    survivors = [p for name, p in processes.items() if name != first]
    for process in survivors:
        assert process.stop() == 0, process.stderr()
    stopped_at = datetime.now().astimezone()

    runs = sorted(observer.list_runs(limit=10_000), key=lambda r: r.scheduled_at or r.created_at)
    keys = [run.idempotency_key or "" for run in runs]
    assert len(keys) == len(set(keys))  # (the unique index guarantees it)
    ticks = [datetime.fromisoformat(key.split(":", 3)[3]) for key in keys]
    assert ticks == [run.scheduled_at for run in runs]  # each run is due at its tick
    assert ticks == sorted(set(ticks))  # one run per tick
    defined_at = observer.engine.schedule_states()["every-second"].defined_at
    # No gap: every second from the first tick after the schedule was defined...
    first_tick = defined_at.replace(microsecond=0) + timedelta(seconds=1)
    assert ticks[0] == first_tick
    expected = [first_tick + timedelta(seconds=i) for i in range(len(ticks))]
    assert ticks == expected
    # ... to the last before the instances stopped (at most a tick missing at that edge), across
    # the kill of the leader.
    assert ticks[0] < killed_at - timedelta(seconds=2)
    assert ticks[-1] >= stopped_at - timedelta(seconds=2.5)
    assert len(ticks) >= 7

    # Several instances started them: the first leader, then its successor (catching up the
    # ticks missed while the lease ran out).
    started_by = {
        name: process.stderr().count("cron: schedule 'every-second'")
        for name, process in processes.items()
    }
    assert started_by[first] >= 2, started_by
    assert started_by[second] >= 2, started_by
    assert "started run" in processes[second].stderr()
    # The runs were carried out (but those the killed instance held when it died).
    completed = [run for run in runs if run.status.value == "completed"]
    assert len(completed) >= len(ticks) - 4, [run.status for run in runs]
