"""Run ids are UUIDs of version 7: the time of the start in their first 48 bits, in order
however fast they are made, and random in the rest."""

from __future__ import annotations

import threading
import time
import uuid

from pypgflow.ids import new_run_id, new_run_ids, prefix_bounds, short_ids


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


def test_a_batch_of_ids_is_as_many_made_one_by_one() -> None:
    before = time.time_ns() // 1_000_000
    # more than the 4,096 ids one millisecond holds: the batch borrows the next ones
    batch = new_run_ids(10_000)
    after = new_run_id()
    assert len(batch) == 10_000
    assert len(set(batch)) == 10_000
    assert sorted(batch, key=uuid.UUID) == batch == sorted(batch)
    assert batch[-1] < after  # the next id counts on from the batch's last
    values = [uuid.UUID(text) for text in batch]
    assert all(
        str(v) == t and v.version == 7 and v.variant == uuid.RFC_4122
        for v, t in zip(values, batch, strict=True)
    )
    assert values[0].int >> 80 >= before
    assert new_run_ids(0) == []
    # the 62 bits after the variant are random: no two batches share them
    tails = {text[19:] for text in batch + new_run_ids(1000)}
    assert len(tails) == 11_000


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


def test_a_prefix_is_the_range_of_the_ids_it_starts() -> None:
    assert prefix_bounds("01a2") == (
        "01a20000-0000-0000-0000-000000000000",
        "01a2ffff-ffff-ffff-ffff-ffffffffffff",
    )
    assert prefix_bounds("01A2-38") == prefix_bounds("01a238")
    run_id = new_run_id()
    assert prefix_bounds(run_id) == (run_id, run_id)
    for length in range(1, 37):
        lo, hi = prefix_bounds(run_id[:length])
        assert lo <= run_id <= hi
        assert str(uuid.UUID(lo)) == lo
        assert str(uuid.UUID(hi)) == hi


def test_short_ids_tell_ids_made_together_apart() -> None:
    ids = [new_run_id() for _ in range(50)]
    assert len({i[:8] for i in ids}) < len(ids)  # one time: a fixed 8 digits cannot
    short = short_ids(ids)
    assert len(set(short.values())) == len(ids)
    assert all(run_id.startswith(short[run_id]) for run_id in ids)
    assert len({len(s) for s in short.values()}) == 1
    assert short_ids(["0123456789", "abcdefghij"]) == {
        "0123456789": "01234567",
        "abcdefghij": "abcdefgh",
    }
