"""Run ids: UUIDs of version 7 (RFC 9562), whose first 48 bits are the start's Unix time in
milliseconds.

Ids made one after another sort in the order they were made, so that a run's row goes at the
end of the primary key's index instead of at a random page of it: inserting a million runs
touches the index's last pages rather than all of them (fewer pages to read, dirty and write
in full to the write-ahead log after each checkpoint). Within one millisecond, the 12 bits after
the time count up from a random start (the RFC's "method 1"), so ids of one process stay in
order; the remaining 62 bits are random. Any UUID still names a run: ids made before these were
version 4.

A prefix of an id names the ids of one range (:func:`prefix_bounds`), found through the primary
key's index: the command line takes run ids by unique prefix.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence

from pypgflow.errors import AmbiguousRunId, InvalidArgument, RunNotFound

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_run_id() -> str:
    """A new UUIDv7, as text."""
    return new_run_ids(1)[0]


def new_run_ids(count: int) -> list[str]:
    """``count`` new UUIDv7s, as text, in the order they sort: a batch of starts makes its ids
    in one go (one lock, one read of randomness, hex digits sliced rather than an integer
    formatted per id), at a third of the cost of one at a time."""
    global _last_ms, _counter
    # 4 hex digits per id for its counter and variant, then 62 random bits; 3 for a new start
    digits = os.urandom(8 * count + 2).hex()
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            first = int(digits[-3:], 16) >> 1  # a random start, leaving room to count up
        else:  # the same millisecond (or the clock went back): count on from the last id
            ms = _last_ms
            first = _counter + 1
        spans = []  # (millisecond, first counter, how many ids)
        remaining = count
        while remaining:
            if first > 0xFFF:  # 4,096 ids in one millisecond: borrow the next one
                ms += 1
                first = 0
            taken = min(remaining, 0x1000 - first)
            spans.append((ms, first, taken))
            first += taken
            remaining -= taken
        _last_ms, _counter = ms, first - 1
    ids = []
    o = 0
    for ms, first, taken in spans:
        stamp = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        head = f"{stamp[:8]}-{stamp[8:]}-7"
        for counter in range(first, first + taken):
            ids.append(
                f"{head}{counter:03x}-{_VARIANT[digits[o]]}{digits[o + 1 : o + 4]}-"
                f"{digits[o + 4 : o + 16]}"
            )
            o += 16
    return ids


#: the variant digit (RFC 9562: binary 10xx) for a random hex digit, keeping its two low bits
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def run_id_time(run_id: str) -> float | None:
    """When a run with this id was created (Unix seconds, to the millisecond), read from a
    UUIDv7's first 48 bits; None for any other id (an older version 4 one)."""
    digits = run_id.replace("-", "")
    if len(digits) != 32 or digits[12] != "7":
        return None
    try:
        return int(digits[:12], 16) / 1000.0
    except ValueError:
        return None


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """The first and the last run id that start with ``prefix`` (hex digits, hyphens ignored),
    as canonical UUID text: ``"01a2"`` -> ``("01a20000-0000-...", "01a2ffff-ffff-...")``.

    Canonical ids sort as their digits do, as text (SQLite's ids) and as uuids (PostgreSQL's),
    so the ids with a prefix are one range of the primary key's index. InvalidArgument for
    anything but 1 to 32 hex digits.
    """
    digits = prefix.replace("-", "").lower() if isinstance(prefix, str) else ""
    if not digits or len(digits) > 32 or digits.strip("0123456789abcdef"):
        raise InvalidArgument(
            f"{prefix!r} is not a run id nor the start of one (1 to 32 hex digits, e.g. "
            "01a23878-1438)"
        )
    return _canonical(digits.ljust(32, "0")), _canonical(digits.ljust(32, "f"))


def _canonical(digits: str) -> str:
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


#: how many of the ids an ambiguous prefix starts are named in the error
SHOWN_MATCHES = 5


def one_run_id(prefix: str, matches: Sequence[str], *, shown: int = SHOWN_MATCHES) -> str:
    """The one id of ``matches`` (the ids starting with ``prefix``, at most ``shown`` + 1 of
    them); RunNotFound if there is none, AmbiguousRunId naming them if there are several."""
    if len(matches) == 1:
        return matches[0]
    if not matches:
        if len(prefix.replace("-", "")) == 32:
            raise RunNotFound(f"no run with id {prefix}")
        raise RunNotFound(f"no run id starts with {prefix!r}")
    listed = ", ".join(matches[:shown]) + (", ..." if len(matches) > shown else "")
    count = f"more than {shown}" if len(matches) > shown else str(len(matches))
    raise AmbiguousRunId(
        f"{prefix!r} is the start of {count} run ids ({listed}): give more of the id"
    )


def short_ids(ids: Iterable[str], minimum: int = 8) -> dict[str, str]:
    """Each id shortened to the shortest prefix (at least ``minimum`` characters) that tells
    these ids apart. Ids made close together share their first digits (their time), so a fixed
    length may not: runs started within a minute share the first 8."""
    unique = list(dict.fromkeys(ids))
    length = minimum
    while length < 36 and len({i[:length] for i in unique}) < len(unique):
        length += 1
    return {i: i[:length] for i in unique}
