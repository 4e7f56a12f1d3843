"""Public inputs fuzzed with Hypothesis, no database: workflow definitions (names, depends_on),
cron expressions and time zones, database URLs. Whatever they are given, they either work or
raise one of pypgflow's documented errors (under PypgflowError) naming the problem, and a
declaration that fails leaves the workflow as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pypgflow import Workflow, execute
from pypgflow.cron import Schedule, check_cron
from pypgflow.engines import engine_for_url
from pypgflow.engines.sqlite.url import parse_url
from pypgflow.errors import PypgflowError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: names as people write them, and as they should not
names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["a", "b", "c", "step-1", "x.y", " ", "", "ü", "a b", "__init__", "ctx"]),
)


@FUZZ
@given(
    workflow=names,
    steps=st.lists(
        st.tuples(names, st.one_of(st.none(), st.lists(names, max_size=3)), st.booleans()),
        max_size=6,
    ),
)
def test_a_workflow_declaration_works_or_says_what_is_wrong(
    workflow: str, steps: list[tuple[str, list[str] | None, bool]]
) -> None:
    try:
        flow = Workflow(workflow)
    except PypgflowError:
        return
    declared: list[str] = []
    for name, depends_on, use_earlier in steps:
        if use_earlier and declared and depends_on is not None:
            depends_on = [*depends_on[:1], declared[-1]]  # often a real dependency
        before = dict(flow.steps)
        try:
            flow.step(name=name, depends_on=depends_on)(lambda input: input)
        except PypgflowError:
            assert dict(flow.steps) == before  # nothing half-declared
            continue
        declared.append(name)
    try:
        flow.validate()
    except PypgflowError:
        return
    # A workflow that validates runs: every step passes the input on.
    result = execute(flow, 7)
    leaves = [s for s in flow.steps if not any(s in d.depends_on for d in flow.steps.values())]
    assert result == (7 if len(leaves) == 1 else dict.fromkeys(leaves, 7))


crons = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.sampled_from(
            ["*", "*/5", "0", "59", "60", "1-5", "5-1", "L", "?", "MON", "JAN", "#", ","]
        ),
        min_size=4,
        max_size=7,
    ).map(" ".join),
)


@FUZZ
@given(cron=crons, zone=st.sampled_from(["UTC", "Europe/Paris", "Mars/Base", "", "utc"]))
def test_a_cron_schedule_is_checked_or_refused(cron: str, zone: str) -> None:
    try:
        check_cron(cron)
        schedule = Schedule(name="s", cron=cron, workflow="w", input_json="null", timezone=zone)
    except PypgflowError:
        return
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # a DST change in Paris that night
    tick = schedule.next_tick(now)
    assert tick > now
    ticks = schedule.due_ticks(now - timedelta(days=2), now, limit=3)
    assert ticks == sorted(ticks)
    assert all(now - timedelta(days=2) < t <= now for t in ticks)


@FUZZ
@given(
    url=st.one_of(
        st.text(max_size=40),
        st.builds(
            "{}://{}{}".format,
            st.sampled_from(["sqlite", "SQLite", "postgresql", "postgres", "mysql", "http"]),
            st.text(max_size=20),
            st.text(max_size=20),
        ),
    )
)
def test_a_database_url_names_an_engine_or_says_why_not(url: str) -> None:
    if url.lower().startswith("sqlite:"):
        try:  # parsed only: an engine would create the file
            path, _options = parse_url(url)
        except PypgflowError:
            return
        assert path
        return
    try:
        engine = engine_for_url(url)  # a PostgreSQL engine does not connect until it is used
    except PypgflowError:
        return
    engine.close()
