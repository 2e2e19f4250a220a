"""Which units of a run are batched: runs of small one-unit tables, in priority order."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from tracker.dump.batched import BATCH_UNIT_BYTES, BATCH_UNITS, Batch, Job, batchable, group
from tracker.dump.columns import TableInfo
from tracker.dump.plan import TablePlan, Unit, wants_ranges
from tracker.replicaset.batches import _rows
from tracker.store.layout import DatasetKeys

DATE = dt.date(2026, 11, 1)


def plan(index: int, units: int, size: int) -> TablePlan:
    info = TableInfo("db", f"t{index}", "InnoDB", size, 3, ())
    return TablePlan(
        info=info,
        keys=DatasetKeys("ns", "db", f"t{index}", DATE),
        columns=[],
        schema="",
        units=[Unit("db", f"t{index}", i, None, size // units) for i in range(units)],
    )


def jobs_of(shapes: list[tuple[int, int]]) -> list[Job]:
    plans = [plan(i, units, size) for i, (units, size) in enumerate(shapes)]
    return [Job(p, u) for p in plans for u in p.units]


shapes = st.lists(
    st.tuples(st.integers(1, 3), st.sampled_from([0, 100, BATCH_UNIT_BYTES, BATCH_UNIT_BYTES + 1, 10**10])),
    max_size=120,
)


@given(shapes)
def test_grouping_keeps_every_job_once_in_order(shapes: list[tuple[int, int]]) -> None:
    jobs = jobs_of(shapes)
    flat = [j for item in group(jobs) for j in (item.jobs if isinstance(item, Batch) else [item])]
    assert flat == jobs


@given(shapes)
def test_batches_hold_two_to_batch_units_small_one_unit_tables(shapes: list[tuple[int, int]]) -> None:
    grouped = group(jobs_of(shapes))
    for item in grouped:
        if isinstance(item, Batch):
            assert 2 <= len(item.jobs) <= BATCH_UNITS
            assert all(batchable(j.plan) for j in item.jobs)
    # A batchable job left single has no batchable neighbour left single: runs are batched.
    for before, after in zip(grouped, grouped[1:]):
        if isinstance(before, Job) and isinstance(after, Job):
            assert not (batchable(before.plan) and batchable(after.plan))


def test_what_is_batchable() -> None:
    assert batchable(plan(0, 1, 0))
    assert batchable(plan(0, 1, BATCH_UNIT_BYTES))
    assert not batchable(plan(0, 1, BATCH_UNIT_BYTES + 1))  # a large unit would hold the batch's claims
    assert not batchable(plan(0, 2, 100))  # finished by whichever host does its last unit


def test_small_tables_plan_without_a_key_walk() -> None:
    small = TableInfo("db", "t", "InnoDB", 16384, 3, ())
    big = TableInfo("db", "t", "InnoDB", 5 * 1024**3, 10**7, ())
    assert not wants_ranges(small, 1024)
    assert wants_ranges(big, 1024)
    assert not wants_ranges(big, 0)  # chunk_mb 0: never split


def test_row_constructors() -> None:
    assert _rows(2, 3) == "(%s, %s), (%s, %s), (%s, %s)"
    assert _rows(1, 1) == "(%s)"
