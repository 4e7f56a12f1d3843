"""Retention: how long finished runs and offline instances are kept (the leader prunes them,
see :mod:`pypgflow.leader`), checked when defined rather than at the first pass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from pypgflow import defaults
from pypgflow.errors import InvalidArgument

__all__ = ["DEFAULT_RETENTION", "Pruned", "Retention", "seconds"]


def seconds(value: float | timedelta, what: str, *, positive: bool = False) -> float:
    """``value`` as seconds (a number or a timedelta), else InvalidArgument naming ``what``."""
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not math.isfinite(number)
        or number < 0
        or (positive and number == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise InvalidArgument(
            f"{what} must be a number of seconds {bound} or a timedelta, got {value!r}"
        )
    return float(number)


@dataclass(frozen=True)
class Retention:
    """How long finished runs are kept, and how the leader prunes them.

    ``completed``: completed and cancelled runs, after they finished (7 days). ``failed``: failed
    runs, kept longer for inspection and retry (30 days). ``instances``: instances offline for
    this long are removed (an hour). Ages are seconds or timedeltas. ``batch`` runs are deleted
    per transaction, ``pause`` seconds apart; the leader prunes every ``interval`` seconds.
    """

    completed: float | timedelta = defaults.KEEP_COMPLETED
    failed: float | timedelta = defaults.KEEP_FAILED
    instances: float | timedelta = defaults.KEEP_OFFLINE_INSTANCES
    batch: int = defaults.PRUNE_BATCH
    pause: float = defaults.PRUNE_PAUSE
    interval: float = defaults.PRUNE_INTERVAL

    def __post_init__(self) -> None:
        self.completed_seconds  # noqa: B018 - validates
        self.failed_seconds  # noqa: B018
        self.instances_seconds  # noqa: B018
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise InvalidArgument(f"retention batch must be an integer >= 1, got {self.batch!r}")
        seconds(self.pause, "retention pause")
        seconds(self.interval, "retention interval", positive=True)

    @property
    def completed_seconds(self) -> float:
        return seconds(self.completed, "retention of completed runs")

    @property
    def failed_seconds(self) -> float:
        return seconds(self.failed, "retention of failed runs")

    @property
    def instances_seconds(self) -> float:
        return seconds(self.instances, "retention of offline instances")


#: the default retention: 7 days for completed and cancelled runs, 30 for failed ones
DEFAULT_RETENTION = Retention()


@dataclass(frozen=True)
class Pruned:
    """What one retention pass deleted, and in how many batches (statements) of runs."""

    runs: int = 0
    batches: int = 0
    instances: int = 0
