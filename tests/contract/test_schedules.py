"""Cron schedules: checked at definition, stored by workers, listed by any process, and turned
into exactly one run per tick by the leader (its passes driven here with chosen instants)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pypgflow import InvalidArgument, SerializationError, UnknownWorkflow, Workflow
from pypgflow.app import App
from pypgflow.cron import Schedule
from pypgflow.defaults import DEFAULT_CATCH_UP
from pypgflow.engines.base import ScheduleTicks
from pypgflow.leader import Leader
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def report_flow() -> Workflow:
    flow = Workflow("report")
    flow.step(name="build")(lambda input: {"built": input})
    return flow


def tick_of(key: str) -> datetime:
    prefix = key.split(":", 3)  # pypgflow, cron, name, iso instant
    return datetime.fromisoformat(prefix[3])


# -- definitions ------------------------------------------------------------------------------------


def test_invalid_cron_expressions_fail_at_definition(make_app: Callable[..., App]) -> None:
    app = make_app(report_flow())
    for bad in ("", "   ", "* * * *", "* * * * * * *", "61 * * * *", "* 25 * * *", "every day"):
        with pytest.raises(InvalidArgument, match="cron expression"):
            app.schedule("nightly", bad, "report")
    with pytest.raises(InvalidArgument, match="cron expression"):
        app.schedule("nightly", 5, "report")  # type: ignore[arg-type]
    assert app.defined_schedules == {}


def test_crons_that_never_fire_fail_at_definition(make_app: Callable[..., App]) -> None:
    """A date no month has parses, but no tick would ever come: refused, not left to raise at
    every pass of the leader. A date some years have (29 February) is fine."""
    app = make_app(report_flow())
    for never in ("0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *", "0 0 31 11 * 30"):
        with pytest.raises(
            InvalidArgument, match=re.escape(f"cron expression '{never}' never fires")
        ):
            app.schedule("nightly", never, "report")
        with pytest.raises(InvalidArgument, match="never fires"):

            @app.job(cron=never)
            def impossible() -> None: ...

        with pytest.raises(InvalidArgument, match="never fires"):
            Schedule(name="nightly", cron=never, workflow="report", input_json="null")
    assert app.defined_schedules == {}
    assert "impossible" not in app.workflows
    leap = app.schedule("leap", "0 0 29 2 *", "report")
    assert leap.next_tick(datetime(2026, 3, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)


def test_invalid_time_zones_fail_at_definition(make_app: Callable[..., App]) -> None:
    app = make_app(report_flow())
    for bad in ("Mars/Olympus", "", "utc+2", "../../etc/passwd"):
        with pytest.raises(InvalidArgument, match="unknown time zone"):
            app.schedule("nightly", "0 3 * * *", "report", timezone=bad)
    assert app.defined_schedules == {}
    app.schedule("nightly", "0 3 * * *", "report", timezone="Europe/Paris")
    assert app.defined_schedules["nightly"].timezone == "Europe/Paris"


def test_unknown_workflows_and_bad_options_fail_at_definition(
    make_app: Callable[..., App],
) -> None:
    app = make_app(report_flow())
    with pytest.raises(UnknownWorkflow, match=r"no workflow named 'missing'.*registered: report"):
        app.schedule("nightly", "0 3 * * *", "missing")
    with pytest.raises(SerializationError):
        app.schedule("nightly", "0 3 * * *", "report", {"every": timedelta(hours=1)})
    with pytest.raises(InvalidArgument, match="priority"):
        app.schedule("nightly", "0 3 * * *", "report", priority=10)
    with pytest.raises(InvalidArgument, match="queue"):
        app.schedule("nightly", "0 3 * * *", "report", queue="")
    with pytest.raises(InvalidArgument, match="schedule name"):
        app.schedule("", "0 3 * * *", "report")
    assert app.defined_schedules == {}


def test_defining_a_schedule(make_app: Callable[..., App]) -> None:
    app = make_app()
    flow = report_flow()
    defined = app.schedule("nightly", "0 3 * * *", flow, {"format": "pdf"}, priority=2)
    assert app.workflows == {"report": flow}  # a Workflow given is registered
    assert defined == Schedule(
        name="nightly",
        cron="0 3 * * *",
        workflow="report",
        input_json='{"format":"pdf"}',
        queue="default",
        priority=2,
        timezone="UTC",
    )
    # Defining the same again is harmless; a different one under the same name is not.
    assert app.schedule("nightly", "0 3 * * *", flow, {"format": "pdf"}, priority=2) == defined
    with pytest.raises(InvalidArgument, match="another schedule named 'nightly'"):
        app.schedule("nightly", "0 4 * * *", flow, {"format": "pdf"}, priority=2)
    # The queue defaults to the workflow's own (from register), else "default".
    routed = make_app()
    routed.register(report_flow(), queue="reports")
    assert routed.schedule("nightly", "0 3 * * *", "report").queue == "reports"
    assert routed.schedule("urgent", "0 3 * * *", "report", queue="now").queue == "now"


def test_jobs_with_a_cron_schedule(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(cron="*/5 * * * *", queue="maintenance")
    def cleanup() -> str:
        return "clean"

    assert app.defined_schedules["cleanup"] == Schedule(
        name="cleanup",
        cron="*/5 * * * *",
        workflow="cleanup",
        input_json="null",
        queue="maintenance",
    )
    assert cleanup() == "clean"  # still a plain function call
    with pytest.raises(InvalidArgument, match="invalid cron expression"):

        @app.job(cron="*/5 * * *")
        def broken() -> None: ...

    assert "broken" not in app.workflows  # nothing registered by a failed definition
    assert set(app.defined_schedules) == {"cleanup"}


# -- storing and listing ----------------------------------------------------------------------------


def test_workers_store_their_schedules_for_every_process_to_list(
    make_app: Callable[..., App],
) -> None:
    app = make_app(report_flow(), instance_id="worker")
    app.schedule("nightly", "0 3 * * *", "report", {"format": "pdf"}, timezone="Europe/Paris")
    app.schedule("often", "*/10 * * * *", "report", priority=3)
    reader = make_app()  # another process: knows no workflow, no schedule
    assert reader.schedules() == []
    with running_worker(app, lease_ttl=2.0):
        deadline = time.monotonic() + 10
        while len(reader.schedules()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    listed = reader.schedules()
    assert [
        (s.name, s.cron, s.workflow, s.queue, s.priority, s.timezone, s.input) for s in listed
    ] == [
        ("nightly", "0 3 * * *", "report", "default", 0, "Europe/Paris", {"format": "pdf"}),
        ("often", "*/10 * * * *", "report", "default", 3, "UTC", None),
    ]
    nightly = listed[0]
    assert nightly.last_tick_at is None
    assert nightly.next_tick_at is not None
    assert timedelta(0) < nightly.next_tick_at - datetime.now(UTC) <= timedelta(hours=25)
    in_paris = nightly.next_tick_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (in_paris.hour, in_paris.minute, in_paris.second) == (3, 0, 0)


def test_storing_again_keeps_the_last_tick(make_app: Callable[..., App]) -> None:
    app = make_app(report_flow())
    app.schedule("often", "*/10 * * * *", "report")
    leader = Leader(app)
    leader.sync()
    state = app.engine.schedule_states()["often"]
    tick = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    app.engine.record_schedule_ticks([ScheduleTicks("often", tick, tick + timedelta(minutes=10))])
    time.sleep(0.01)
    Leader(app).sync()  # another worker starting: same definition
    again = app.engine.schedule_states()["often"]
    assert again.last_tick_at == tick
    assert again.next_tick_at == tick + timedelta(minutes=10)
    assert again.defined_at == state.defined_at  # unchanged definition: not "defined" again
    # A changed definition keeps the last tick but takes a new next tick and definition time.
    changed = make_app(report_flow())
    changed.schedule("often", "*/20 * * * *", "report")
    Leader(changed).sync()
    after = changed.engine.schedule_states()["often"]
    assert after.last_tick_at == tick
    assert after.next_tick_at != tick + timedelta(minutes=10)
    assert after.defined_at > state.defined_at
    assert [s.cron for s in changed.schedules()] == ["*/20 * * * *"]


def test_deleting_a_stored_schedule(make_app: Callable[..., App]) -> None:
    app = make_app(report_flow())
    app.schedule("nightly", "0 3 * * *", "report")
    app.schedule("often", "*/10 * * * *", "report")
    Leader(app).sync()
    reader = make_app()  # another process, defining none of them
    assert reader.delete_schedule("nightly") is True
    assert [s.name for s in reader.schedules()] == ["often"]
    assert reader.delete_schedule("nightly") is False  # gone already
    assert reader.delete_schedule("never-stored") is False
    assert [s.name for s in app.schedules()] == ["often"]
    # A leader whose app still defines it stores it again, ticking from then.
    Leader(app).tick()
    assert [s.name for s in reader.schedules()] == ["nightly", "often"]


# -- ticks ------------------------------------------------------------------------------------------


def test_a_new_schedule_ticks_from_its_definition(make_app: Callable[..., App]) -> None:
    app = make_app(report_flow())
    app.schedule("every-second", "* * * * * */1", "report", {"n": 1})
    leader = Leader(app)
    leader.sync()
    defined = app.engine.schedule_states()["every-second"].defined_at
    now = defined + timedelta(seconds=3.5)
    next_tick = leader.tick(now)
    ticks = sorted(tick_of(r.idempotency_key or "") for r in app.list_runs())
    first = defined.replace(microsecond=0) + timedelta(seconds=1)
    assert ticks == [first + timedelta(seconds=i) for i in range(len(ticks))]
    assert ticks[-1] <= now < ticks[-1] + timedelta(seconds=1)
    assert len(ticks) in (3, 4)
    assert next_tick == ticks[-1] + timedelta(seconds=1)
    state = app.engine.schedule_states()["every-second"]
    assert (state.last_tick_at, state.next_tick_at) == (ticks[-1], next_tick)
    for run in app.list_runs():
        assert run.input == {"n": 1}
        assert run.scheduled_at == tick_of(run.idempotency_key or "")  # due at its tick
    assert leader.tick(now) == next_tick  # the same instant again: nothing new
    assert len(app.list_runs()) == len(ticks)


def test_each_tick_starts_one_run_whoever_starts_it(make_app: Callable[..., App]) -> None:
    """Two instances both acting as leader (one deposed mid-pass), over the same ticks: each
    tick's run exists once, and the last tick never moves back."""
    app = make_app(report_flow(), instance_id="a")
    app.schedule("minutely", "* * * * *", "report")
    other = make_app(report_flow(), instance_id="b")
    other.schedule("minutely", "* * * * *", "report")
    a, b = Leader(app), Leader(other)
    a.sync()
    defined = app.engine.schedule_states()["minutely"].defined_at
    first_tick = defined.replace(second=0, microsecond=0) + timedelta(minutes=1)
    t = [first_tick + timedelta(minutes=m, seconds=1) for m in range(4)]
    a.tick(t[0])
    b.tick(t[1])
    a.tick(t[1])  # a, deposed, finishes its pass late: starts nothing twice
    b.tick(t[2])
    app.engine.record_schedule_ticks(  # a deposed leader records an old tick, too late
        [
            ScheduleTicks(
                "minutely",
                t[0].replace(second=0, microsecond=0),
                t[1].replace(second=0, microsecond=0),
            )
        ]
    )
    assert app.engine.schedule_states()["minutely"].last_tick_at == t[2].replace(
        second=0, microsecond=0
    )
    b.tick(t[3])
    a.tick(t[3])
    ticks = sorted(tick_of(r.idempotency_key or "") for r in app.list_runs())
    assert ticks == [x.replace(second=0, microsecond=0) for x in t]


def test_missed_ticks_are_caught_up_within_the_window(make_app: Callable[..., App]) -> None:
    app = make_app(report_flow())
    app.schedule("every-10s", "* * * * * */10", "report")
    leader = Leader(app)
    leader.sync()
    defined = app.engine.schedule_states()["every-10s"].defined_at
    # A pass, then nothing for two minutes (a change of leader takes far less): every missed
    # tick is started, late.
    first = leader.tick(defined + timedelta(seconds=11))
    assert first is not None
    leader.tick(defined + timedelta(seconds=131))
    ticks = sorted(tick_of(r.idempotency_key or "") for r in app.list_runs())
    seconds = int(defined.timestamp()) // 10 * 10 + 10  # the first multiple of 10 s after
    expected = [
        datetime.fromtimestamp(t, UTC)
        for t in range(seconds, int((defined + timedelta(seconds=131)).timestamp()) + 1, 10)
    ]
    assert ticks == expected
    assert len(ticks) in (13, 14)


def test_after_a_long_outage_only_the_latest_missed_tick_starts(
    make_app: Callable[..., App],
) -> None:
    app = make_app(report_flow())
    app.schedule("minutely", "* * * * *", "report")
    leader = Leader(app)
    leader.sync()
    defined = app.engine.schedule_states()["minutely"].defined_at
    now = defined.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1)
    leader.tick(now)
    assert len(app.list_runs()) == 1
    later = now + timedelta(seconds=DEFAULT_CATCH_UP + 3600)  # over an hour without a leader
    leader.tick(later)
    ticks = sorted(tick_of(r.idempotency_key or "") for r in app.list_runs())
    assert ticks == [now.replace(second=0, microsecond=0), later.replace(second=0, microsecond=0)]
    leader.tick(later + timedelta(seconds=61))  # and back to one run per tick
    assert len(app.list_runs()) == 3


def test_time_zones_decide_when_ticks_fall(make_app: Callable[..., App]) -> None:
    app = make_app(report_flow())
    app.schedule("paris-9am", "0 9 * * *", "report", timezone="Europe/Paris")
    app.schedule("tokyo-9am", "0 9 * * *", "report", timezone="Asia/Tokyo")
    app.schedule("utc-9am", "0 9 * * *", "report")
    leader = Leader(app)
    leader.sync()
    defined = app.engine.schedule_states()["utc-9am"].defined_at
    # Two days later, at noon UTC: each schedule starts its latest missed tick, 9 o'clock on
    # that day in its own time zone.
    day = (defined + timedelta(days=2)).date()
    leader.tick(datetime(day.year, day.month, day.day, 12, tzinfo=UTC))
    expected = {
        name: datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo(zone)).astimezone(UTC)
        for name, zone in [
            ("paris-9am", "Europe/Paris"),
            ("tokyo-9am", "Asia/Tokyo"),
            ("utc-9am", "UTC"),
        ]
    }
    assert sorted(r.idempotency_key or "" for r in app.list_runs()) == sorted(
        f"pypgflow:cron:{name}:{tick.isoformat()}" for name, tick in expected.items()
    )


# -- one schedule's failure ---------------------------------------------------------------------


def test_a_failing_schedule_does_not_stop_the_others(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A schedule whose ticks raise (here a cron that never fires, defined before definitions
    refused it) is logged, once, and left out of the pass: every other schedule still fires."""
    app = make_app(report_flow())
    app.schedule("every-second", "* * * * * */1", "report", {"n": 1})
    with monkeypatch.context() as patched:
        patched.setattr("pypgflow.cron.check_cron", lambda expression: expression)
        broken = Schedule(name="broken", cron="0 0 31 2 *", workflow="report", input_json="null")
    app.defined_schedules["broken"] = broken
    leader = Leader(app)
    with caplog.at_level("WARNING", logger="pypgflow.leader"):
        leader.sync()  # stores the others
        states = app.engine.schedule_states()
        assert set(states) == {"every-second"}
        now = states["every-second"].defined_at + timedelta(seconds=2.5)
        next_tick = leader.tick(now)
        leader.tick(now + timedelta(seconds=1))
    runs = app.list_runs()
    assert len(runs) >= 2
    assert {run.input["n"] for run in runs} == {1}
    assert next_tick is not None
    assert next_tick > now
    said = [r for r in caplog.records if "'broken' cannot fire" in r.getMessage()]
    assert len(said) == 1  # once while it lasts, not at every pass
    assert "failed to find next date" in said[0].getMessage()
    assert "the other schedules still do" in said[0].getMessage()


def test_a_refused_start_of_one_schedule_does_not_stop_the_others(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    """A tick's key already held by a run of another input (a leader with an older definition
    started it, and was deposed before it recorded the tick): that schedule's starts are refused
    (IdempotencyConflict) and its tick is not recorded; the others' runs start and are recorded."""
    app = make_app(report_flow())
    app.schedule("mine", "* * * * * */1", "report", {"n": 1})
    app.schedule("theirs", "* * * * * */1", "report", {"n": 2})
    leader = Leader(app)
    leader.sync()
    states = app.engine.schedule_states()
    now = max(s.defined_at for s in states.values()) + timedelta(seconds=1.5)
    theirs = app.defined_schedules["theirs"]
    for tick in theirs.due_ticks(states["theirs"].defined_at, now, limit=10):
        app.start("report", {"n": "old"}, idempotency_key=theirs.idempotency_key(tick))
    with caplog.at_level("WARNING", logger="pypgflow.leader"):
        assert leader.tick(now) is not None
    inputs = sorted(str(run.input["n"]) for run in app.list_runs())
    assert "1" in inputs
    assert "2" not in inputs
    after = app.engine.schedule_states()
    assert after["mine"].last_tick_at is not None
    assert after["theirs"].last_tick_at is None
    assert any(
        "'theirs' cannot fire (IdempotencyConflict" in r.getMessage() for r in caplog.records
    )
