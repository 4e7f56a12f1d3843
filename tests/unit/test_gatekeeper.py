"""A worker's side of fleet-wide limits (admission.Gatekeeper), with the engine's admission
faked: how many tasks it claims while a gate is full of its own steps, when the tasks claimed
ahead are admitted, and where they wait when other workers hold the gate; and the room an
admission leaves in its gates (limits.room_left)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pypgflow import Workflow
from pypgflow.admission import AHEAD_OF_GATE, Gatekeeper
from pypgflow.context import context_logger
from pypgflow.engines.base import ClaimedTask
from pypgflow.limits import GATE_RECHECK, Admission, Deferred, Gate, GateRequest, room_left
from pypgflow.slots import Slots

CAP = 2
flow = Workflow("gated")


@flow.step(concurrency=CAP)
def export(input: Any) -> Any:
    return input


def claimed(*ids: int) -> list[ClaimedTask]:
    return [ClaimedTask(i, f"run-{i}", "export", None, "gated", 1, 3, None, None, {}) for i in ids]


class Fleet:
    """The engine's side: a gate of CAP, some of it held by other workers."""

    def __init__(self, held_elsewhere: int = 0) -> None:
        self.held_elsewhere = held_elsewhere
        self.admitted: set[int] = set()
        self.calls: list[list[int]] = []

    async def admit(self, requests: Sequence[GateRequest]) -> Admission:
        self.calls.append([r.task_id for r in requests])
        admission = Admission()
        for request in requests:
            if self.held_elsewhere + len(self.admitted) < CAP:
                self.admitted.add(request.task_id)
                admission.admitted.add(request.task_id)
            else:
                admission.deferred[request.task_id] = Deferred(request.gates[0].key, GATE_RECHECK)
        return admission


def keeper(fleet: Fleet, slots: Slots, running: list[ClaimedTask]) -> Gatekeeper:
    def start(task: ClaimedTask, queue: str) -> None:
        running.append(task)

    return Gatekeeper(
        slots,
        queue_limits={},
        rate_limits={},
        workflow_of=lambda task: flow,
        failed=lambda task, exc, verdict: None,  # type: ignore[arg-type,return-value]
        running=lambda: iter(running),
        admit=fleet.admit,
        start=start,
        fail=lambda outcome: None,
        on_room=lambda: None,
        on_lost=lambda: None,
        log=context_logger("test"),
    )


def test_tasks_claimed_ahead_of_a_full_gate_wait_for_the_worker_s_own_steps() -> None:
    async def scenario() -> None:
        slots, fleet = Slots({"default": 10}), Fleet()
        running: list[ClaimedTask] = []
        gates = keeper(fleet, slots, running)
        assert gates.claim_size("default") == slots.room("default") == 20  # no gate full yet
        loop = asyncio.create_task(gates.run(lambda: False))
        assert gates.gated("default", claimed(1, 2, 3)) == []  # all wait for their gate
        await asyncio.sleep(0.01)
        assert [t.id for t in running] == [1, 2]  # the gate admits 2; task 3 was sent back
        assert gates.caps == {"default": CAP}
        assert slots.unadmitted("default") == 0
        # task 3 sent back: maybe others hold the gate too; nothing is claimed ahead
        assert gates.claim_size("default") == 0

        def end(task: ClaimedTask) -> None:
            running.remove(task)
            fleet.admitted.discard(task.id)
            gates.step_ended(task, "default")

        end(running[0])
        assert gates.claim_size("default") == 1
        gates.gated("default", claimed(4))
        await asyncio.sleep(0.01)
        assert [t.id for t in running] == [2, 4]  # all it asked for was admitted: its own gate
        # the gate is full of this worker's steps: it claims AHEAD_OF_GATE gates' worth ahead
        assert gates.claim_size("default") == AHEAD_OF_GATE * CAP
        gates.gated("default", claimed(5, 6, 7, 8))
        await asyncio.sleep(0.01)
        assert slots.unadmitted("default") == 4
        assert len(fleet.calls) == 2  # nothing asked: no room
        assert gates.claim_size("default") == 0
        # one of its steps ends: room for one, admitted at once
        end(running[0])
        await asyncio.sleep(0.01)
        assert fleet.calls[-1] == [5]
        assert [t.id for t in running] == [4, 5]
        loop.cancel()

    asyncio.run(scenario())


def test_a_gate_held_elsewhere_sends_what_waits_here_to_the_queue() -> None:
    async def scenario() -> None:
        slots, fleet = Slots({"default": 10}), Fleet(held_elsewhere=CAP)
        running: list[ClaimedTask] = []
        gates = keeper(fleet, slots, running)
        gates.caps["default"] = CAP  # learnt earlier
        loop = asyncio.create_task(gates.run(lambda: False))
        gates.gated("default", claimed(1, 2, 3, 4, 5))
        await asyncio.sleep(0.01)
        # room for CAP by this worker's count: those sent back show others hold the gate,
        # and the rest claimed ahead go to the engine too, to wait in the queue
        assert fleet.calls == [[1, 2], [3, 4, 5]]
        assert gates.crowded == {"default"}
        assert running == []
        assert slots.unadmitted("default") == 0
        loop.cancel()

    asyncio.run(scenario())


def test_room_left_counts_tasks_for_a_step_gate_and_runs_for_a_workflow_gate() -> None:
    step = Gate("step:w:s", "task", 3)
    runs = Gate("run:w", "run", 2)
    rate = Gate("rate:api", "rate", 5, 1.0)
    new = GateRequest(9, 1, "run-c", (step, runs, rate))
    holders = {
        "step:w:s": [(1, "run-a")],
        "run:w": [(None, "run-a"), (2, "run-a")],  # one run, however many of its tasks
    }
    room = room_left([new], holders, [("step:w:s", new), ("run:w", new)])
    assert room == {"step:w:s": 1, "run:w": 0}  # rate gates have windows, not room
