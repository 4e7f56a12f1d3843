"""What the tests of fleet-wide limits check of recorded executions: how many ran at once, and how
many started within a window."""

from __future__ import annotations

from collections.abc import Iterable


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The most of these (start, end) spans that overlap at one moment (an end at the same
    moment as a start counts first)."""
    edges = sorted((t, delta) for began, ended in spans for t, delta in ((began, 1), (ended, -1)))
    running = most = 0
    for _, delta in edges:
        running += delta
        most = max(most, running)
    return most


def most_in_window(starts: Iterable[float], per: float) -> int:
    """The most of these start times within any interval of length ``per``."""
    ordered = sorted(starts)
    most = first = 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= per:
            first += 1
        most = max(most, last - first + 1)
    return most
