"""Inputs and idempotency keys fuzzed with Hypothesis, on every engine: a start either stores
its run, whose input reads back as the same JSON value, or raises one of pypgflow's documented
errors (under PypgflowError) and writes nothing, for one start as for a batch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.errors import PypgflowError

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

odd_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "\ufeff", "\u2028", "'; DROP TABLE runs; --", "\\u0000", "𝄞", "\ud7ff"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def known_elsewhere(value: Any) -> bool:
    """Cases handled on another branch (issue 14's input validation and number handling in
    serialization): NUL characters (PostgreSQL's jsonb refuses them), non-finite floats, and
    floats of 1e16 or more (jsonb writes them without an exponent or a point: they read back
    as integers)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, float):
        return not math.isfinite(value) or abs(value) >= 1e16
    if isinstance(value, list):
        return any(known_elsewhere(v) for v in value)
    if isinstance(value, dict):
        return any(known_elsewhere(k) or known_elsewhere(v) for k, v in value.items())
    return False


def echo() -> Workflow:
    flow = Workflow("echo")
    flow.step(name="only")(lambda input: input)
    return flow


@FUZZ
@given(value=values, key=st.one_of(st.none(), odd_text))
def test_a_start_stores_its_input_or_refuses_it_whole(
    make_app: Callable[..., App], value: Any, key: str | None
) -> None:
    assume(not known_elsewhere(value) and not known_elsewhere(key))
    app = _app(make_app)
    before = len(app.list_runs(limit=1000))
    try:
        run = app.start("echo", value, idempotency_key=key)
    except PypgflowError:
        assert len(app.list_runs(limit=1000)) == before  # nothing half-written
        return
    info = app.get_run(run.id)
    assert info is not None
    assert info.input == value
    assert info.idempotency_key == key


@FUZZ
@given(batch=st.lists(values, min_size=1, max_size=5))
def test_a_batch_of_starts_is_stored_whole_or_not_at_all(
    make_app: Callable[..., App], batch: list[Any]
) -> None:
    assume(not known_elsewhere(batch))
    app = _app(make_app)
    before = len(app.list_runs(limit=1000))
    try:
        runs = app.start_many("echo", batch)
    except PypgflowError:
        assert len(app.list_runs(limit=1000)) == before
        return
    assert [app.get_run(r.id).input for r in runs] == batch  # type: ignore[union-attr]


_apps: dict[int, App] = {}


def _app(make_app: Callable[..., App]) -> App:
    """One app per test (the fixture's database), made at its first example."""
    key = id(make_app)
    if key not in _apps:
        _apps.clear()
        _apps[key] = make_app(echo())
    return _apps[key]
