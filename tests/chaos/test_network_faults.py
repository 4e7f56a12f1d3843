"""(3) Network faults between one worker and PostgreSQL, through a loopback TCP proxy
(tests/integration/proxy.py), under load shared with a second worker connected directly:

- cut: every connection reset and new ones refused;
- stall: nothing forwarded either way for a while, connections kept (what was sent meanwhile,
  outcomes included, arrives late, after the steps were rescued);
- half-open: the server's side closed, the worker's side kept open and never answered.

For each, for longer than ``stale_after``: the cut-off worker stops its steps within
``stale_after`` (plus a heartbeat), claims nothing meanwhile, comes back by itself once the
network does, and nothing it sends late changes a finished step (the audit triggers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pypgflow.app import App
from tests.chaos import audit
from tests.chaos.conftest import Figures
from tests.chaos.harness import HEARTBEAT, STALE_AFTER, Fleet, run_statuses, wait_finished
from tests.integration import flows
from tests.integration.flows import read_log
from tests.integration.helpers import WorkerProcess, postgres_only, wait_for, wait_ready
from tests.integration.proxy import TcpProxy

pytestmark = [
    pytest.mark.chaos,
    postgres_only("a TCP proxy stands between a worker and a PostgreSQL server; SQLite is a file"),
    pytest.mark.timeout(300),
]

LONG_RUNS, LONG_SECONDS = 6, 3 * STALE_AFTER
SHORT_RUNS, SHORT_SECONDS = 400, 0.2
RUNS = LONG_RUNS + SHORT_RUNS
OUTAGE = STALE_AFTER + 4.0
#: the proxied worker's PostgreSQL answer_timeout: how it notices a half-open connection
ANSWER_TIMEOUT = 2 * STALE_AFTER


@pytest.mark.parametrize("fault", ["cut", "stall", "half_open"])
def test_a_worker_cut_off_by_the_network_stops_its_steps_and_comes_back(
    fault: str,
    app: App,
    database_url: str,
    log_path: Path,
    spawn_worker: Callable[..., WorkerProcess],
    figures: Figures,
) -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        fleet = Fleet(spawn_worker, "net", {"queues": ["default=10"]})
        (cut_off,) = fleet.start(url=proxy.url_for(database_url), answer_timeout=ANSWER_TIMEOUT)
        wait_ready(app, [cut_off], timeout=60)
        log = str(log_path)
        # Long steps running behind the proxy when the network fails (long there only: quick
        # once rescued), then short ones on both workers, finishing meanwhile (their outcomes
        # on their way when it does)
        app.start_many(
            flows.slow,
            [
                {"log": log, "seconds": LONG_SECONDS, "slow_on": cut_off.instance_id, "i": i}
                for i in range(LONG_RUNS)
            ],
        )
        wait_for(
            lambda: len(read_log(log_path)) >= LONG_RUNS,
            timeout=30,
            what="the long steps to begin behind the proxy",
        )
        (direct,) = fleet.start()
        wait_ready(app, [cut_off, direct], timeout=60)
        app.start_many(
            flows.slow,
            [{"log": log, "seconds": SHORT_SECONDS, "i": i} for i in range(SHORT_RUNS)],
        )
        wait_for(
            lambda: (
                sum(1 for e in read_log(log_path) if e["instance"] == cut_off.instance_id)
                >= LONG_RUNS + 10
            ),
            timeout=60,
            what="the worker behind the proxy to run short steps too",
        )
        getattr(proxy, fault)()
        faulted_at = time.time()
        wait_for(
            lambda: "abandoning the" in cut_off.stderr(),
            timeout=STALE_AFTER + 3 * HEARTBEAT + 5,
            what="the cut-off worker to abandon its steps",
        )
        time.sleep(max(0.0, faulted_at + OUTAGE - time.time()))
        proxy.restore()
        restored_at = time.time()
        wait_for(
            lambda: "the database is reachable again" in cut_off.stderr(),
            timeout=60,
            what="the cut-off worker to come back by itself",
        )
        back_after = time.time() - restored_at
        wait_finished(app, RUNS, timeout=240, fleet=fleet)

        # It works again: alone on the queue, it runs what comes next.
        assert direct.stop(timeout=30) == 0
        fleet.alive.remove(direct)
        after = app.start_many(flows.one, [{"log": log, "i": i} for i in range(20)])
        for run in after:
            run.result(timeout=60)
        events = read_log(log_path)
        mine = [e for e in events if e["instance"] == cut_off.instance_id]
        stopped = [e["t"] - faulted_at for e in mine if e["event"] == "cancelled"]
        abandoned_at = faulted_at + min(stopped, default=0.0)
        # between the fault and the abandonment it does not know yet; after it, it claims nothing
        begun_while_away = [
            e for e in mine if e["event"] == "begin" and abandoned_at < e["t"] < restored_at
        ]
        found = audit.verdict(database_url)
        assert cut_off.stop(timeout=30) == 0
        stderr = cut_off.stderr()

    bound = STALE_AFTER + HEARTBEAT
    figures.add(
        f"{fault}: {LONG_RUNS} runs of {LONG_SECONDS:g} s and {SHORT_RUNS} of {SHORT_SECONDS:g} s "
        f"on 2 workers x 10 slots, one behind the proxy cut off "
        f"for {OUTAGE:g} s (stale_after={STALE_AFTER:g} s): its {len(stopped)} running steps "
        f"stopped {min(stopped, default=float('nan')):.1f}-{max(stopped, default=float('nan')):.1f}"
        f" s after the fault (bound {bound:g} s); begun after that until the network was back: {len(begun_while_away)}; "
        f"back {back_after:.1f} s after the network (answer_timeout={ANSWER_TIMEOUT:g} s); "
        f"late overwrites (audit): "
        f"{len(found.late_overwrites)}; completions recorded once: "
        f"{found.tasks - len(found.tasks_not_completed_once)}/{found.tasks}"
    )
    assert stopped, "no step was running behind the proxy when the network failed"
    assert max(stopped) <= bound + 0.5
    assert begun_while_away == []
    assert found.violations() == []
    assert run_statuses(app) == {"completed": RUNS + len(after)}
    assert {e["instance"] for e in events if e["run"] in {r.id for r in after}} == {
        cut_off.instance_id
    }
    assert "Traceback" not in stderr
