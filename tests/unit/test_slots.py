"""A worker's slots: what to claim, claiming ahead only while steps are short, and the tasks
claimed ahead taking freed slots in order."""

from __future__ import annotations

from pypgflow.engines.base import ClaimedTask
from pypgflow.slots import CLAIM_AHEAD_BELOW, Slots


def task(task_id: int) -> ClaimedTask:
    return ClaimedTask(task_id, "r", "s", None, "w", 1, 3, None, None, {})


def test_a_queue_of_short_steps_claims_as_many_ahead_as_it_has_slots() -> None:
    slots = Slots({"q": 3})
    assert slots.room("q") == 6  # 3 free slots, 3 ahead
    for _ in range(3):
        slots.started("q")
    assert not slots.free("q")
    for n in range(3):
        slots.wait("q", task(n))
    assert slots.room("q") == 0
    assert not slots.has_room()
    # a freed slot is taken by the oldest task claimed ahead
    following = slots.finished("q", 0.001)
    assert following is not None
    assert following.id == 0
    assert slots.waiting_ids() == {1, 2}
    assert slots.room("q") == 2  # one free slot claimed ahead... and room for two more


def test_a_queue_of_long_steps_claims_only_for_its_free_slots() -> None:
    slots = Slots({"q": 2})
    slots.started("q")
    for _ in range(40):  # the moving average follows the recent durations
        slots.started("q")
        slots.finished("q", CLAIM_AHEAD_BELOW * 10)
    assert slots.room("q") == 1
    for _ in range(40):
        slots.started("q")
        slots.finished("q", 0.0)
    assert slots.room("q") == 3  # short again: claims ahead again


def test_tasks_claimed_ahead_can_be_pruned_and_given_up() -> None:
    slots = Slots({"a": 1, "b": 1})
    slots.wait("a", task(1))
    slots.wait("b", task(2))
    slots.wait("b", task(3))
    slots.drop_waiting({2})  # 2 was cancelled before it started
    assert slots.waiting_ids() == {1, 3}
    assert slots.clear_waiting() == {1, 3}
    assert list(slots.waiting()) == []
    assert slots.finished("a", 0.0) is None
