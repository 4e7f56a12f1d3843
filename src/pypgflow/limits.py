"""Fleet-wide limits: concurrency (of a step, of whole runs, of a queue) and rate limits.

A limit is a *gate* that a claimed task must pass before it runs, decided by the database for
every worker at once (see ``Engine.admit``): a concurrency gate admits a task while fewer than
its capacity hold it (a step's or a queue's tasks running, or a workflow's runs unfinished); a
rate gate admits a task while fewer than its limit of tasks were admitted in the last ``per``
seconds (a sliding window, never a bucket that allows a burst of twice the limit). A task that
is not admitted goes back to the queue without its attempt counted, holding no slot: due again
when a holder of its gate ends (or after :data:`GATE_RECHECK` seconds at the latest), or, for
a rate gate, when the window allows.

Gate keys say what they count: ``queue:NAME``, ``step:WORKFLOW:STEP[:KEY]``,
``run:WORKFLOW[:KEY]`` and ``rate:NAME[:KEY]``, where KEY is the JSON form of what a
``concurrency_key`` or ``rate_limit_key`` function returned for the run's input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pypgflow.errors import InvalidArgument

#: what a gate counts: the tasks holding it (running), the runs holding it (unfinished), or
#: the admissions of the last ``per`` seconds
GateKind = Literal["task", "run", "rate"]

#: seconds after which a task sent back by a full concurrency gate is due again at the latest
#: (a holder's end makes it due at once; this is for holders lost with their worker)
GATE_RECHECK = 30.0

#: a rate gate's margin: a task is admitted only when the window before it, lengthened by this
#: much (or by 1% of ``per`` if longer), holds fewer admissions than the limit, so that the
#: moments between an admission and the step's call cannot let limit + 1 calls start within
#: ``per`` (a worker admits again a task it could not start within the margin)
RATE_MARGIN = 0.05


def rate_margin(per: float) -> float:
    """The margin of a rate gate with that window (see :data:`RATE_MARGIN`)."""
    return max(RATE_MARGIN, per / 100)


@dataclass(frozen=True)
class Gate:
    """One limit a task must pass: its key, what it counts, and how many it admits (per
    ``per`` seconds, for a rate gate)."""

    key: str
    kind: GateKind
    capacity: int
    per: float = 0.0


@dataclass(frozen=True)
class RateLimit:
    """A rate limit declared on an App (``app.rate_limit(name, limit, per=)``): at most
    ``limit`` admissions in any ``per`` seconds, shared by every worker."""

    name: str
    limit: int
    per: float


@dataclass(frozen=True)
class GateRequest:
    """A claimed task to admit: its attempt (the running one), its run, its gates."""

    task_id: int
    attempt: int
    run_id: str
    gates: tuple[Gate, ...]


@dataclass(frozen=True)
class Deferred:
    """A task a full gate sent back to the queue: due again in ``delay`` seconds at the latest,
    waiting for the gate ``gate``."""

    gate: str
    delay: float


@dataclass
class Admission:
    """What an admission decided: the tasks that may run, and those sent back."""

    admitted: set[int] = field(default_factory=set)
    deferred: dict[int, Deferred] = field(default_factory=dict)


def decide(
    requests: Sequence[GateRequest],
    holders: Mapping[str, Sequence[tuple[int | None, str]]],
    token_ages: Mapping[str, Sequence[float]],
) -> tuple[Admission, list[tuple[str, GateRequest]], list[str]]:
    """Which of ``requests`` (in claim order) pass all their gates, given each gate's current
    holders ((task id or None, run id)) and its tokens' ages in seconds (every one within its
    window): the admission, the holders to add ((key, request): a task holder, or a run holder
    for a ``run`` gate), and the rate tokens to take (a key per token). Pure: the engine reads
    the state under the gates' locks and writes what this returns."""
    admission = Admission()
    held = {key: len(rows) for key, rows in holders.items()}
    runs = {key: {run_id for _, run_id in rows} for key, rows in holders.items()}
    ages = {key: sorted(values, reverse=True) for key, values in token_ages.items()}
    new_holders: list[tuple[str, GateRequest]] = []
    tokens: list[str] = []
    for request in requests:
        blocked: Deferred | None = None
        for gate in request.gates:
            if gate.kind == "task" and held.get(gate.key, 0) >= gate.capacity:
                blocked = Deferred(gate.key, GATE_RECHECK)
            elif gate.kind == "run":
                holding = runs.setdefault(gate.key, set())
                if request.run_id not in holding and len(holding) >= gate.capacity:
                    blocked = Deferred(gate.key, GATE_RECHECK)
            elif gate.kind == "rate":
                window = gate.per + rate_margin(gate.per)
                taken = [age for age in ages.get(gate.key, []) if age < window]  # oldest first
                if len(taken) >= gate.capacity:
                    # due when enough of the oldest have left the window
                    blocked = Deferred(
                        gate.key, max(window - taken[len(taken) - gate.capacity], 0.001)
                    )
            if blocked is not None:
                break
        if blocked is not None:
            admission.deferred[request.task_id] = blocked
            continue
        admission.admitted.add(request.task_id)
        for gate in request.gates:
            if gate.kind == "task":
                held[gate.key] = held.get(gate.key, 0) + 1
                new_holders.append((gate.key, request))
            elif gate.kind == "run":
                if request.run_id not in runs[gate.key]:
                    runs[gate.key].add(request.run_id)
                    new_holders.append((gate.key, request))
            else:
                ages.setdefault(gate.key, []).append(0.0)
                tokens.append(gate.key)
    return admission, new_holders, tokens


def room_left(
    requests: Sequence[GateRequest],
    holders: Mapping[str, Sequence[tuple[int | None, str]]],
    new_holders: Sequence[tuple[str, GateRequest]],
) -> dict[str, int]:
    """The room each concurrency gate of ``requests`` has left once an admission's
    ``new_holders`` hold it, counting every holder still holding (``holders``, with the
    outcomes on their way). Where there is room, as many waiting tasks are due at once: a
    holder's end wakes one waiter, but a worker may have let a task of its own in first, the
    waiter then sent back, and room would stay empty until GATE_RECHECK."""
    kinds = {g.key: g for r in requests for g in r.gates if g.kind != "rate"}
    room: dict[str, int] = {}
    for key, gate in kinds.items():
        held = list(holders.get(key, ())) + [
            (r.task_id, r.run_id) for k, r in new_holders if k == key
        ]
        used = len({run_id for _, run_id in held}) if gate.kind == "run" else len(held)
        room[key] = gate.capacity - used
    return room


def check_capacity(where: str, value: Any, *, what: str = "concurrency") -> int:
    """``value`` if it is a positive integer, else InvalidArgument naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{where}: {what} must be an integer >= 1, got {value!r}")
    return value


def check_period(where: str, per: Any) -> float:
    """A rate limit's window as seconds (a number > 0 or a timedelta), else InvalidArgument."""
    seconds = per.total_seconds() if isinstance(per, timedelta) else per
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 < seconds <= 366 * 86400
    ):
        raise InvalidArgument(
            f"{where}: per must be a number of seconds > 0 (at most a year) or a timedelta, "
            f"got {per!r}"
        )
    return float(seconds)


def key_part(value: Any) -> str:
    """What a key function returned, as the end of a gate key (its JSON form, so that 1 and
    "1" are different keys and a dict's order does not matter)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"a limit's key must be JSON, got {value!r}") from exc


def describe_gate(key: str) -> str:
    """A waiting step's gate, in words (what ``StepInfo.waiting_for`` says)."""
    kind, _, rest = key.partition(":")
    if kind == "rate":
        return f"a token of rate limit {rest}"
    if kind == "queue":
        return f"a slot of queue {rest!r} (its concurrency limit)"
    if kind == "run":
        return f"a run slot of workflow {rest} (its concurrency limit)"
    return f"a concurrency slot of step {rest}"


__all__ = [
    "GATE_RECHECK",
    "RATE_MARGIN",
    "Admission",
    "Deferred",
    "Gate",
    "GateKind",
    "GateRequest",
    "RateLimit",
    "check_capacity",
    "check_period",
    "decide",
    "describe_gate",
    "key_part",
    "rate_margin",
    "room_left",
]
