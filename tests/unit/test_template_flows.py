"""The etl, map_reduce, saga and report templates run in-process (pypgflow.execute): their
graphs, their defaults, the functions they are given, and how they fail."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pypgflow import App, Backoff, InvalidArgument, NonRetryable, WorkflowFailed, execute
from pypgflow.errors import WorkflowDefinitionError
from pypgflow.templates import (
    Action,
    etl_workflow,
    map_reduce_workflow,
    report_workflow,
    saga_workflow,
    schedule_report,
)
from pypgflow.templates.etl import DEMO_ROWS
from tests.http_answers import http_answers

pytestmark = pytest.mark.timeout(30)

QUICK = Backoff(base=0.0, jitter=0.0)


async def no_wait(delay: float) -> None:
    pass


def run(flow: Any, input: Any = None) -> Any:
    return execute(flow, input, retry="step", sleep=no_wait)


# -- etl -----------------------------------------------------------------------------------------


def test_etl_cleans_the_demo_rows_by_default() -> None:
    flow = etl_workflow(batch_size=3)
    assert list(flow.steps) == ["extract", "batches", "transform", "load"]
    assert flow.steps["transform"].is_map
    out = run(flow)
    assert out["loaded"] == 3  # the row without a name is dropped
    assert out["rows"][0] == {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"}
    assert [row["id"] for row in out["rows"]] == [1, 2, 4]


def test_etl_transforms_one_batch_per_task_and_loads_them_in_order() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def double(row: int) -> int | None:
        with lock:
            calls.append(threading.get_ident())
        return None if row % 5 == 0 else row * 2

    loaded: list[list[int]] = []
    flow = etl_workflow(
        lambda input: list(range(1, input + 1)),
        double,
        lambda rows: loaded.append(rows) or len(rows),
        name="numbers",
        batch_size=4,
    )
    assert run(flow, 10) == 8
    assert loaded == [[2, 4, 6, 8, 12, 14, 16, 18]]
    assert len(calls) == 10
    assert execute(flow, 10, retry="step") == 8
    with pytest.raises(InvalidArgument, match="batch_size"):
        etl_workflow(batch_size=0)


def test_an_extract_that_is_not_a_list_fails_at_once() -> None:
    with pytest.raises(WorkflowFailed) as failed:
        run(etl_workflow(lambda input: {"rows": 1}))
    assert (failed.value.step, failed.value.attempts) == ("extract", 1)
    with pytest.raises(WorkflowFailed):
        run(etl_workflow(), {"rows": "not a list"})
    assert run(etl_workflow(), {"rows": []}) == {"loaded": 0, "rows": []}
    assert len(DEMO_ROWS) == 4


# -- map_reduce ----------------------------------------------------------------------------------


def test_map_reduce_counts_the_words_of_files_and_urls(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one two three")
    (tmp_path / "b.txt").write_text("four, five!")
    with http_answers() as server:
        server.answer(200, "six seven eight nine")
        sources = [str(tmp_path / "a.txt"), f"file://{tmp_path / 'b.txt'}", server.url + "/c"]
        out = run(map_reduce_workflow(), sources)
    assert out == {
        "sources": 3,
        "words": 9,
        "by_source": {sources[0]: 3, sources[1]: 2, sources[2]: 4},
    }
    assert run(map_reduce_workflow(), {"sources": [sources[0]]})["words"] == 3


def test_map_reduce_fails_at_once_for_a_missing_file_or_a_refused_url(tmp_path: Path) -> None:
    with pytest.raises(WorkflowFailed) as missing:
        run(map_reduce_workflow(), [str(tmp_path / "nowhere.txt")])
    assert (missing.value.step, missing.value.attempts) == ("map", 1)
    assert "no such file" in missing.value.errors[-1].message
    with http_answers() as server:
        server.answer(404)
        with pytest.raises(WorkflowFailed) as refused:
            run(map_reduce_workflow(), [server.url + "/gone"])
        assert refused.value.errors[-1].type == "RequestRejected"
        server.script[:] = [(503, {}, ""), (200, {}, "back again")]
        assert run(map_reduce_workflow(backoff=QUICK), [server.url + "/busy"])["words"] == 2
    for bad in ("one.txt", [1, 2], [""], {"files": []}):
        with pytest.raises(WorkflowFailed) as failed:
            run(map_reduce_workflow(), bad)
        assert (failed.value.step, failed.value.attempts) == ("sources", 1)


def test_map_reduce_takes_a_mapper_and_a_reducer() -> None:
    flow = map_reduce_workflow(len, sorted, name="lengths")
    assert run(flow, ["ccc", "a", "bb"]) == [1, 2, 3]


# -- saga ----------------------------------------------------------------------------------------


class Trip:
    """Actions that record what they did and undid; ``fail`` names the ones that fail and
    how: ``"for good"`` (NonRetryable) or a number of transient failures before success."""

    def __init__(self, **fail: str | int) -> None:
        self.fail = fail
        self.log: list[str] = []
        self.calls: dict[str, int] = {}

    def action(self, name: str, undo: bool = True) -> Action:
        def act(input: Any, results: dict[str, Any]) -> str:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.log.append(f"do {name} after {sorted(results)}")
            how = self.fail.get(name)
            if how == "for good":
                raise NonRetryable(f"{name} refused")
            if isinstance(how, int) and self.calls[name] <= how:
                raise ConnectionError(f"{name} unreachable")
            return f"{name}#1"

        def compensate(input: Any, result: Any) -> str:
            self.log.append(f"undo {name} ({result})")
            return f"undid {result}"

        return Action(name, act, compensate if undo else None)

    def saga(self, **options: Any) -> Any:
        return saga_workflow(
            [self.action("flight"), self.action("hotel"), self.action("car", undo=False),
             self.action("charge")],
            backoff=QUICK, **options,
        )  # fmt: skip


def test_a_saga_that_succeeds_returns_every_result_and_undoes_nothing() -> None:
    trip = Trip()
    flow = trip.saga()
    assert list(flow.steps) == [
        "flight", "hotel", "car", "charge", "verdict", "undo_charge", "undo_hotel",
        "undo_flight", "finish",
    ]  # fmt: skip
    out = run(flow, {"to": "Lisbon"})
    assert out == {"flight": "flight#1", "hotel": "hotel#1", "car": "car#1", "charge": "charge#1"}
    assert trip.log == [
        "do flight after []",
        "do hotel after ['flight']",
        "do car after ['flight', 'hotel']",
        "do charge after ['car', 'flight', 'hotel']",
    ]


def test_a_failed_action_undoes_the_completed_ones_in_reverse_and_fails_the_run() -> None:
    trip = Trip(charge="for good")
    with pytest.raises(WorkflowFailed) as failed:
        run(trip.saga(name="trip"), {"to": "Lisbon"})
    assert trip.log[-2:] == ["undo hotel (hotel#1)", "undo flight (flight#1)"]  # car: no undo
    assert trip.calls["charge"] == 1  # NonRetryable: not retried
    assert failed.value.step == "finish"
    error = failed.value.errors[-1]
    assert error.type == "SagaFailed"
    assert error.message == (
        "saga 'trip' failed at action 'charge': NonRetryable: charge refused; "
        "compensated: hotel, flight"
    )


def test_a_transient_failure_is_retried_before_the_saga_gives_up() -> None:
    trip = Trip(hotel=2)  # two failures, then it works: within 3 attempts
    assert run(trip.saga(), None)["hotel"] == "hotel#1"
    assert trip.calls["hotel"] == 3
    assert not any(line.startswith("undo") for line in trip.log)

    stubborn = Trip(hotel=5)  # more failures than attempts: given up, then compensated
    with pytest.raises(WorkflowFailed) as failed:
        run(stubborn.saga(max_attempts=2), None)
    assert stubborn.calls["hotel"] == 2
    assert sorted(stubborn.calls) == ["flight", "hotel"]
    assert [line for line in stubborn.log if line.startswith("undo")] == ["undo flight (flight#1)"]
    assert "failed at action 'hotel': ConnectionError: hotel unreachable" in str(failed.value)


def test_a_failure_of_the_first_action_compensates_nothing() -> None:
    trip = Trip(flight="for good")
    with pytest.raises(WorkflowFailed, match="compensated: nothing"):
        run(trip.saga(), None)
    assert trip.log == ["do flight after []"]


def test_a_compensation_that_keeps_failing_fails_the_run_at_its_step() -> None:
    def refuse(input: Any, result: Any) -> None:
        raise ConnectionError("cannot release")

    def boom(input: Any, results: dict[str, Any]) -> None:
        raise NonRetryable("no")

    flow = saga_workflow(
        [Action("a", lambda i, r: 1, refuse), Action("b", boom)],
        backoff=QUICK,
        compensation_attempts=2,
    )
    with pytest.raises(WorkflowFailed) as failed:
        run(flow, None)
    assert (failed.value.step, failed.value.attempts) == ("undo_a", 2)


def test_a_saga_checks_its_actions() -> None:
    ok = Action("a", lambda i, r: 1)
    for bad, message in (
        ([], "at least one"),
        ([ok, ok], "two actions are named 'a'"),
        ([Action("not-an-id", lambda i, r: 1)], "Python identifier"),
        ([Action("verdict", lambda i, r: 1)], "Python identifier"),
        (["a"], "takes Actions"),
        ([Action("a", 3)], "plain function"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgument, match=message):
            saga_workflow(bad)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="duplicate"):
        saga_workflow([Action("undo_b", lambda i, r: 1), Action("b", lambda i, r: 1, print)])


def test_the_demo_saga_fails_where_its_input_says() -> None:
    assert run(saga_workflow(), {}) == {
        "reserve_flight": "FL-1",
        "reserve_hotel": "HT-2",
        "charge_card": "CH-3",
    }
    with pytest.raises(WorkflowFailed, match="compensated: reserve_hotel, reserve_flight"):
        run(saga_workflow(), {"fail_at": "charge_card"})


# -- report --------------------------------------------------------------------------------------


def test_a_report_gathers_renders_and_delivers() -> None:
    out = run(report_workflow(), {"title": "Ops", "figures": {"runs": 3, "failed_runs": 0}})
    assert out == {
        "delivered": "log",
        "characters": len("Ops\n===\nruns         3\nfailed_runs  0"),
    }
    sent: list[str] = []
    flow = report_workflow(
        lambda input: [1, 2],
        lambda figures: f"total {sum(figures)}",
        lambda text: sent.append(text) or "sent",
        name="totals",
    )
    assert run(flow) == "sent"
    assert sent == ["total 3"]
    with pytest.raises(WorkflowFailed) as failed:
        run(report_workflow(render=lambda gathered: 42))
    assert failed.value.step == "render"


def test_schedule_report_registers_the_workflow_and_its_schedule(tmp_path: Path) -> None:
    with App(f"sqlite:///{tmp_path / 'r.db'}") as app:
        flow = report_workflow(name="weekly")
        defined = schedule_report(
            app, flow, "0 9 * * 1", input={"title": "Week"}, timezone="Europe/Paris"
        )
        assert app.workflows["weekly"] is flow
        assert app.defined_schedules["weekly"] == defined
        assert (defined.cron, defined.workflow, defined.timezone) == (
            "0 9 * * 1",
            "weekly",
            "Europe/Paris",
        )
        assert defined.input_json == '{"title":"Week"}'
        default = schedule_report(app, schedule="daily")
        assert (default.workflow, default.cron) == ("report", "0 8 * * *")
        with pytest.raises(InvalidArgument, match="cron"):
            schedule_report(app, report_workflow(name="bad"), "every day")
