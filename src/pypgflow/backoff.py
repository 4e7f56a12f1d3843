"""One retry policy, shared by the in-process executor and the durable engines.

The default follows the seed design: 1 s, 10 s, 100 s, 1000 s, ... capped at an hour, with a little
jitter so that many failing steps do not all come back at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from pypgflow import defaults
from pypgflow.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: the delay after failed attempt *n* is ``base * factor ** (n - 1)``.

    ``max`` caps the delay (jitter included); ``jitter`` is a fraction (0 to 1) by which each delay
    is spread at random, up or down, so retries of many runs do not arrive together. With the
    default ``Backoff()`` the delays are about 1 s, 10 s, 100 s, 1000 s, then 3600 s.
    """

    base: float = defaults.DEFAULT_BACKOFF_BASE
    factor: float = defaults.DEFAULT_BACKOFF_FACTOR
    max: float = defaults.DEFAULT_BACKOFF_MAX
    jitter: float = defaults.DEFAULT_BACKOFF_JITTER

    def __post_init__(self) -> None:
        for field_name in ("base", "factor", "max", "jitter"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgument(f"Backoff {field_name} must be a number, got {value!r}")
        if not self.base >= 0:
            raise InvalidArgument(f"Backoff base must be >= 0, got {self.base!r}")
        if not self.factor >= 1:
            raise InvalidArgument(f"Backoff factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.max <= defaults.MAX_DELAY:
            raise InvalidArgument(
                f"Backoff max must be from 0 to {defaults.MAX_DELAY:.0f} s (100 years), got "
                f"{self.max!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument(f"Backoff jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next one."""
        if attempt < 1:
            raise InvalidArgument(f"attempt numbers start at 1, got {attempt!r}")
        try:
            delay = self.base * self.factor ** (attempt - 1)
        except OverflowError:
            delay = self.max
        delay = min(delay, self.max)
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * rand() - 1.0)
        # ``max`` is a hard cap: jitter spreads capped delays downwards only.
        return min(max(0.0, delay), self.max)

    def to_dict(self) -> dict[str, float]:
        return {"base": self.base, "factor": self.factor, "max": self.max, "jitter": self.jitter}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Backoff:
        return cls(**{key: float(value) for key, value in data.items()})


#: the backoff of a step, a call and a workflow that set none
DEFAULT_BACKOFF = Backoff()
