"""On PostgreSQL an admission whose tasks each pass one concurrency gate of tasks is decided by
one statement, in one round trip, instead of reading the holders and writing what
``limits.decide`` chose. Both ways give the same admission and leave the same rows: the same
scenario runs through each, on workflows of their own."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pypgflow import Workflow
from pypgflow.admission import gates_for, request_of
from pypgflow.app import App
from pypgflow.engines.base import ClaimedTask, Completed
from pypgflow.engines.gates import STALE_HOLDERS_KEPT
from pypgflow.limits import Admission

pytestmark = pytest.mark.timeout(60)


def limited(name: str, capacity: int = 3) -> Workflow:
    flow = Workflow(name)

    @flow.step(concurrency=capacity, concurrency_key=lambda run_input: run_input["k"])
    def export(input: dict[str, Any]) -> int:
        return int(input["i"])

    return flow


def outcome(admission: Admission, order: dict[int, int]) -> tuple[list[int], list[tuple[int, str]]]:
    """An admission told by the runs' inputs (task ids differ between the two workflows)."""
    admitted = sorted(order[t] for t in admission.admitted)
    deferred = sorted((order[t], d.gate.rsplit(":", 1)[-1]) for t, d in admission.deferred.items())
    return admitted, deferred


def play(app: App, flow: Workflow) -> list[Any]:
    """Claims and admissions of 14 runs on two keys, with outcomes on their way and holders that
    hold no more; what each admission decided, then the rows left."""
    engine = app.engine
    app.start_many(flow, [{"i": i, "k": "ab"[i % 2]} for i in range(14)])
    tasks: list[ClaimedTask] = engine.claim_tasks(
        "default", 14, instance_id="t", workflows=[flow.name]
    )
    order = {t.id: t.run_input["i"] for t in tasks}
    ordered = sorted(tasks, key=lambda t: t.run_input["i"])
    requests = [
        request_of(t.gated(gates_for(t, flow, queue_limits={}, rate_limits={}))) for t in ordered
    ]
    told = []
    # 8 tasks: 3 of each key admitted, the rest sent back
    first = engine.admit(requests[:8])
    told.append(outcome(first, order))
    # an outcome on its way frees its slot for this worker's next admission
    on_its_way = {min(first.admitted)}
    told.append(outcome(engine.admit(requests[8:11], finished=on_its_way), order))
    # a holder whose task runs no more (handed back) holds its gate no more
    engine.release_tasks(sorted(first.admitted)[-1:], instance_id="t")
    told.append(outcome(engine.admit(requests[11:]), order))
    with psycopg.connect(app.url) as conn:
        holders = conn.execute(
            "SELECT split_part(h.key, ':', 4), (t.input->>'i')::int FROM pypgflow.gate_holders h"
            " JOIN pypgflow.runs t ON t.id = h.run_id WHERE h.key LIKE %s ORDER BY 1, 2",
            (f"step:{flow.name}:%",),
        ).fetchall()
        rows = conn.execute(
            "SELECT (r.input->>'i')::int, t.status, t.attempt, split_part(t.gate_wait, ':', 4)"
            " FROM pypgflow.tasks t JOIN pypgflow.runs r ON r.id = t.run_id"
            " WHERE r.workflow = %s ORDER BY 1",
            (flow.name,),
        ).fetchall()
    return [told, holders, rows]


def test_the_one_statement_admission_decides_and_writes_as_decide_does(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_statement, two_steps = limited("adm_one"), limited("adm_two")
    with App(pg_url, workflows=[one_statement, two_steps]) as app:
        engine = app.engine
        calls: list[int] = []
        real = type(engine)._admit_one_gate_each

        def counted(self: Any, requests: Any, finished: Any) -> Admission:
            calls.append(len(requests))
            return real(self, requests, finished)

        monkeypatch.setattr(type(engine), "_admit_one_gate_each", counted)
        fast = play(app, one_statement)
        assert calls == [8, 3, 3]  # every admission went through the statement
        monkeypatch.setattr(type(engine), "_admit_one_gate_each", lambda *_: None)
        general = play(app, two_steps)
    assert fast == general
    told, holders, rows = fast
    # runs alternate keys a and b; each key admits 3 at once
    assert told[0] == ([0, 1, 2, 3, 4, 5], [(6, '"a"'), (7, '"b"')])
    # run 0's outcome (key a) is on its way: room for run 8 (key a), none for run 10
    assert told[1] == ([8], [(9, '"b"'), (10, '"a"')])
    # run 5's task (key b) was handed back: room for run 11 (key b) only
    assert told[2] == ([11], [(12, '"a"'), (13, '"b"')])
    # 3 + 3 + 1 + 1 admitted; run 5's holder went with its hand-back
    assert [i for _, i in holders] == [0, 2, 4, 8, 1, 3, 11]
    waiting = [(i, gate) for i, status, _, gate in rows if status == "queued" and gate]
    assert [i for i, _ in waiting] == [6, 7, 9, 10, 12, 13]


def test_stale_holders_are_dropped_by_the_statement_once_enough_are_there(pg_url: str) -> None:
    flow = limited("adm_stale", capacity=1000)
    with App(pg_url, workflows=[flow]) as app:
        engine = app.engine
        runs = STALE_HOLDERS_KEPT + 2

        def admit(tasks: list[ClaimedTask]) -> Admission:
            gated = [t.gated(gates_for(t, flow, queue_limits={}, rate_limits={})) for t in tasks]
            return engine.admit([request_of(t) for t in gated])

        def holders() -> int:
            with psycopg.connect(app.url) as conn:
                row = conn.execute("SELECT count(*) FROM pypgflow.gate_holders").fetchone()
            assert row is not None
            return int(row[0])

        app.start_many(flow, [{"i": i, "k": "a"} for i in range(runs + 1)])
        tasks = engine.claim_tasks("default", runs, instance_id="t", workflows=[flow.name])
        admitted = admit(tasks)
        assert len(admitted.admitted) == runs
        gated = [t.gated(gates_for(t, flow, queue_limits={}, rate_limits={})) for t in tasks]
        engine.finish_tasks([Completed(t, "1") for t in gated])  # none holds any more
        assert holders() == runs
        last = engine.claim_tasks("default", 1, instance_id="t", workflows=[flow.name])
        assert admit(last).admitted == {last[0].id}
        assert holders() == 1  # the stale ones dropped, the new one written
