"""Run ids are UUIDs of version 7: the time of the start in their first 48 bits, in order
however fast they are made, and random in the rest."""

from __future__ import annotations

import threading
import time
import uuid

from pypgflow.ids import new_run_id


def test_a_run_id_is_a_version_7_uuid_of_now() -> None:
    before = time.time_ns() // 1_000_000
    text = new_run_id()
    after = time.time_ns() // 1_000_000
    value = uuid.UUID(text)
    assert str(value) == text  # the canonical spelling: lower-case hex, hyphens at 8-4-4-4-12
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after + 1


def test_run_ids_sort_in_the_order_they_were_made() -> None:
    ids = [new_run_id() for _ in range(20_000)]  # many in the same millisecond
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    assert sorted(ids, key=uuid.UUID) == ids  # as PostgreSQL's uuid compares them


def test_threads_making_ids_at_once_get_distinct_ones() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_run_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in made for i in ids]
    assert len(set(every)) == len(every)
    for ids in made:
        assert sorted(ids) == ids
