"""Leadership: the leader lease at the engine level (acquire, renew, expiry, takeover, release,
one winner among racers), and workers electing one leader among themselves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from pypgflow import InvalidArgument, Workflow
from pypgflow.app import App
from pypgflow.leader import LEADER_LEASE, Leader
from pypgflow.retention import Retention
from pypgflow.worker import Worker
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def idle_flow() -> Workflow:
    flow = Workflow("idle")
    flow.step(name="noop")(lambda input: input)
    return flow


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# -- the engine verbs -------------------------------------------------------------------------------


def test_acquire_renew_and_release(make_app: Callable[..., App]) -> None:
    engine = make_app().engine
    assert engine.lease_holder("leader") is None
    assert engine.acquire_lease("leader", "a", 10.0) is True
    holder = engine.lease_holder("leader")
    assert holder is not None
    assert holder[0] == "a"
    assert 9.0 < holder[1] <= 10.0
    assert engine.acquire_lease("leader", "b", 10.0) is False  # held by a: refused
    assert engine.lease_holder("leader") == (
        "a",
        pytest.approx(holder[1], abs=1.0),
    )  # and unchanged
    assert engine.acquire_lease("leader", "a", 30.0) is True  # renewed, and extended
    renewed = engine.lease_holder("leader")
    assert renewed is not None
    assert renewed[0] == "a"
    assert renewed[1] > 25.0
    assert engine.release_lease("leader", "b") is False  # not b's to release
    assert engine.lease_holder("leader") is not None
    assert engine.release_lease("leader", "a") is True
    assert engine.lease_holder("leader") is None
    assert engine.release_lease("leader", "a") is False  # already released
    assert engine.acquire_lease("leader", "b", 10.0) is True  # free at once after a release
    assert engine.acquire_lease("other", "a", 10.0) is True  # leases are independent
    assert engine.lease_holder("leader") == ("b", pytest.approx(10.0, abs=1.0))


def test_an_expired_lease_is_taken_over(make_app: Callable[..., App]) -> None:
    engine = make_app().engine
    assert engine.acquire_lease("leader", "a", 0.3)
    assert not engine.acquire_lease("leader", "b", 5.0)
    time.sleep(0.4)
    assert engine.lease_holder("leader") is None  # expired: nobody holds it
    assert engine.acquire_lease("leader", "b", 5.0) is True  # taken over
    assert engine.acquire_lease("leader", "a", 5.0) is False  # a's renewal comes too late
    assert engine.release_lease("leader", "a") is False  # nor can a release it any more
    assert engine.lease_holder("leader") == ("b", pytest.approx(5.0, abs=1.0))


def test_racing_acquirers_have_one_winner(make_app: Callable[..., App]) -> None:
    app = make_app()
    engine = app.engine
    engine.lease_holder("leader")  # open the pool, check the schema
    for round_ in range(5):
        barrier = threading.Barrier(8)
        won: list[str] = []
        lock = threading.Lock()

        def race(
            holder: str,
            barrier: threading.Barrier = barrier,
            won: list[str] = won,
            lock: threading.Lock = lock,
        ) -> None:
            barrier.wait()
            if engine.acquire_lease("leader", holder, 0.5):
                with lock:
                    won.append(holder)

        threads = [threading.Thread(target=race, args=(f"r{round_}-{i}",)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert len(won) == 1, won
        holder = engine.lease_holder("leader")
        assert holder is not None
        assert holder[0] == won[0]
        engine.release_lease("leader", won[0])


# -- workers electing a leader --------------------------------------------------------------------


def test_one_worker_leads_and_another_takes_over_when_it_stops(
    make_app: Callable[..., App],
) -> None:
    flow = idle_flow()
    apps = [make_app(flow, instance_id=f"w{i}") for i in range(3)]
    with (
        running_worker(apps[0], lease_ttl=2.0) as w0,
        running_worker(apps[1], lease_ttl=2.0) as w1,
    ):
        workers = [w0, w1]
        wait_until(lambda: any(w.is_leader for w in workers), 5, "a leader")
        time.sleep(0.8)  # a few renewals: still one leader, the same one
        leaders = [w for w in workers if w.is_leader]
        assert len(leaders) == 1
        leader = leaders[0]
        holder = apps[2].engine.lease_holder(LEADER_LEASE)
        assert holder is not None
        assert holder[0] == leader.instance_id
        infos = {i.instance_id: i.leader for i in apps[2].instances()}
        assert infos == {"w0": leader is w0, "w1": leader is w1}
        follower = w1 if leader is w0 else w0
        leader.stop()  # graceful: the lease is released, the follower leads at once
        stopped = time.monotonic()
        wait_until(lambda: follower.is_leader, 2.0, "the follower to lead")
        assert time.monotonic() - stopped < 1.5
        wait_until(lambda: not leader.is_leader, 5.0, "the stopped worker to stop leading")
    assert apps[2].engine.lease_holder(LEADER_LEASE) is None  # released by the last one too


def test_a_leader_that_cannot_renew_stops_leading_by_its_own_clock(
    make_app: Callable[..., App],
) -> None:
    """Its lease taken over (as if it had been paused past its expiry), the old leader stops
    believing it leads at its next renewal."""
    flow = idle_flow()
    app = make_app(flow, instance_id="paused")
    other = make_app(instance_id="other")
    with running_worker(app, lease_ttl=0.9) as worker:
        wait_until(lambda: worker.is_leader, 5, "the worker to lead")
        other.engine.release_lease(LEADER_LEASE, "paused")  # as if it had expired
        assert other.engine.acquire_lease(LEADER_LEASE, "other", 30.0)
        wait_until(lambda: not worker.is_leader, 2.0, "the worker to notice")
        time.sleep(0.5)
        assert not worker.is_leader
    holder = other.engine.lease_holder(LEADER_LEASE)
    assert holder == ("other", pytest.approx(30.0, abs=5.0))  # a follower releases nothing


def test_leadership_options_are_checked(make_app: Callable[..., App]) -> None:
    app = make_app(idle_flow())
    for bad in (0, -1.0, float("nan"), float("inf"), "15", True):
        with pytest.raises(InvalidArgument, match="lease_ttl"):
            Worker(app, lease_ttl=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="retention"):
        Worker(app, retention=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="batch"):
        Retention(batch=0)
    with pytest.raises(InvalidArgument, match="failed runs"):
        Retention(failed=-1)
    assert Worker(app, lease_ttl=3, retention=None).leader.lease_ttl == 3.0
    assert Leader(app).retention == Retention()
