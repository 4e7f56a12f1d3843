"""Backoff: the delay sequence, the cap, jitter, validation and serialisation."""

from __future__ import annotations

from typing import Any

import pytest

from pypgflow import Backoff, InvalidArgument
from pypgflow.backoff import DEFAULT_BACKOFF
from pypgflow.defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT


def test_defaults_follow_the_seed_design() -> None:
    assert Backoff() == Backoff(base=1.0, factor=10.0, max=3600.0, jitter=0.1)
    assert Backoff() == DEFAULT_BACKOFF
    assert DEFAULT_MAX_ATTEMPTS == 3
    assert DEFAULT_TIMEOUT == 30.0


def test_delays_grow_by_the_factor_and_stop_at_the_cap() -> None:
    backoff = Backoff(jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 10.0, 100.0, 1000.0, 3600.0, 3600.0]


def test_huge_attempt_numbers_are_capped_not_overflowing() -> None:
    assert Backoff(jitter=0.0).delay(10_000) == 3600.0


@pytest.mark.parametrize(("rand", "scale"), [(0.0, 0.9), (0.5, 1.0), (1.0, 1.1)])
def test_jitter_spreads_the_delay_up_or_down(rand: float, scale: float) -> None:
    backoff = Backoff(base=2.0, factor=3.0, jitter=0.1)
    assert backoff.delay(2, rand=lambda: rand) == pytest.approx(6.0 * scale)


def test_jitter_never_goes_past_the_cap() -> None:
    backoff = Backoff(base=100.0, max=50.0, jitter=0.5)
    assert backoff.delay(1, rand=lambda: 1.0) == 50.0
    assert backoff.delay(1, rand=lambda: 0.0) == 25.0


def test_random_jitter_stays_within_bounds() -> None:
    backoff = Backoff(base=10.0, jitter=0.2)
    delays = {backoff.delay(1) for _ in range(200)}
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(delays) > 1  # it is really random


def test_zero_base_means_no_wait() -> None:
    assert Backoff(base=0.0).delay(5) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": -1.0}, "base must be >= 0"),
        ({"base": float("nan")}, "base must be >= 0"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"max": -1.0}, "max must be from 0 to"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1"),
        ({"base": "1"}, "base must be a number"),
        ({"factor": None}, "factor must be a number"),
        ({"jitter": True}, "jitter must be a number"),
    ],
)
def test_invalid_backoff(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Backoff(**kwargs)


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(InvalidArgument, match="attempt numbers start at 1"):
        Backoff().delay(0)


def test_round_trip_through_a_dict() -> None:
    backoff = Backoff(base=0.5, factor=2.0, max=30.0, jitter=0.0)
    assert backoff.to_dict() == {"base": 0.5, "factor": 2.0, "max": 30.0, "jitter": 0.0}
    assert Backoff.from_dict(backoff.to_dict()) == backoff
    assert Backoff.from_dict({"base": 2}) == Backoff(base=2.0)


def test_backoff_is_immutable_and_hashable() -> None:
    backoff = Backoff()
    with pytest.raises(AttributeError):
        backoff.base = 2.0  # type: ignore[misc]
    assert {backoff: 1}[Backoff()] == 1
