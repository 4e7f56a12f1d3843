"""Runs found by the start of their id (``app.resolve_run_id``), as the command line takes them:
a unique prefix names its run, an ambiguous one names the runs it could mean, an unknown one says
so, and anything but hex digits is refused before the database is asked."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pypgflow import InvalidArgument, RunNotFound, Workflow
from pypgflow.app import App
from pypgflow.errors import AmbiguousRunId
from pypgflow.ids import SHOWN_MATCHES, short_ids

pytestmark = pytest.mark.timeout(30)


def echo() -> Workflow:
    flow = Workflow("echo")
    flow.step(name="echo")(lambda input: input)
    return flow


def test_a_unique_prefix_names_its_run(make_app: Callable[..., App]) -> None:
    flow = echo()
    app = make_app(flow)
    ids = [run.id for run in app.start_many(flow, list(range(3)))]
    shortest = short_ids(ids)
    for run_id in ids:
        assert app.resolve_run_id(run_id) == run_id
        assert app.resolve_run_id(run_id.upper()) == run_id
        assert app.resolve_run_id(run_id.replace("-", "")) == run_id
        assert app.resolve_run_id(run_id[:35]) == run_id
        assert app.resolve_run_id(shortest[run_id]) == run_id
        assert app.resolve_run_id(shortest[run_id].replace("-", "")) == run_id


def test_an_ambiguous_prefix_names_the_runs_it_could_mean(make_app: Callable[..., App]) -> None:
    flow = echo()
    app = make_app(flow)
    ids = sorted(run.id for run in app.start_many(flow, list(range(SHOWN_MATCHES + 2))))
    # UUIDv7: made at the same time, they share a long start
    common = next(ids[0][:n] for n in range(36, 0, -1) if all(i[:n] == ids[0][:n] for i in ids))
    assert len(common) >= 8
    with pytest.raises(AmbiguousRunId) as caught:
        app.resolve_run_id(common)
    message = str(caught.value)
    assert f"{common!r} is the start of more than {SHOWN_MATCHES} run ids" in message
    assert ", ...): give more of the id" in message
    assert all(run_id in message for run_id in ids[:SHOWN_MATCHES])
    assert not any(run_id in message for run_id in ids[SHOWN_MATCHES:])
    assert isinstance(caught.value, InvalidArgument)


def test_two_runs_told_apart_by_their_last_digit(make_app: Callable[..., App]) -> None:
    flow = echo()
    app = make_app(flow)
    ids = sorted(run.id for run in app.start_many(flow, list(range(40))))
    first, second = ids[0], ids[1]  # the first two in order: both in the range of their prefix
    common = next(n for n in range(36) if first[n] != second[n])
    with pytest.raises(AmbiguousRunId) as caught:
        app.resolve_run_id(first[:common])
    assert first in str(caught.value)
    assert second in str(caught.value)
    assert app.resolve_run_id(first[: common + 1]) == first  # the smallest: alone in its range


def test_an_unknown_prefix_or_id_is_not_found(make_app: Callable[..., App]) -> None:
    flow = echo()
    app = make_app(flow)
    (run,) = app.start_many(flow, [1])
    other = "f" if run.id[0] != "f" else "e"
    with pytest.raises(RunNotFound, match=f"no run id starts with '{other}'"):
        app.resolve_run_id(other)
    missing = other * 8 + run.id[8:]
    with pytest.raises(RunNotFound, match=f"no run with id {missing}"):
        app.resolve_run_id(missing)


@pytest.mark.parametrize("bad", ["", "-", "xyz", "01a2 3", "0" * 33, "01a23878-1438-7454-b3c0-zz"])
def test_anything_but_hex_digits_is_refused(make_app: Callable[..., App], bad: str) -> None:
    app = make_app(echo())
    with pytest.raises(InvalidArgument, match="is not a run id nor the start of one"):
        app.resolve_run_id(bad)
