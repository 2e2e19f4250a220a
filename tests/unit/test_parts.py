"""S3 part sizes and concurrency: any object size fits S3's limits, memory stays bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker.config import S3Config
from tracker.store.s3 import MAX_PART_BYTES, MAX_PARTS, MiB, base_part_size, part_size_for, parts_in_flight

S3_MAX_OBJECT = 5 * 1024**4  # 5 TiB
MIN_PART = 5 * MiB


def capacity(base: int) -> int:
    """Bytes that 10,000 parts starting at ``base`` hold."""
    return sum(part_size_for(i, base) for i in range(MAX_PARTS))


@given(st.integers(0, S3_MAX_OBJECT), st.integers(5, 5120), st.integers(1, 64))
def test_every_object_size_fits_in_10000_parts(size: int, part_mb: int, concurrency: int) -> None:
    config = S3Config(part_size_mb=part_mb, upload_concurrency=concurrency)
    base = base_part_size(config, size)
    assert MIN_PART <= base <= MAX_PART_BYTES
    assert all(MIN_PART <= part_size_for(i, base) <= MAX_PART_BYTES for i in (0, 1999, 2000, MAX_PARTS - 1))
    assert capacity(base) >= size


def test_an_underestimated_object_still_fits_a_terabyte() -> None:
    # size_hint 0 (unknown): parts double every 2,000, so ~1 TB fits at the default 16 MiB
    assert capacity(base_part_size(S3Config(), 0)) >= 10**12


@given(st.integers(0, S3_MAX_OBJECT), st.integers(5, 5120), st.integers(1, 64))
def test_memory_in_flight_stays_within_the_configured_budget(size: int, part_mb: int, concurrency: int) -> None:
    config = S3Config(part_size_mb=part_mb, upload_concurrency=concurrency)
    base = base_part_size(config, size)
    slots = parts_in_flight(config, base)
    assert 1 <= slots <= concurrency
    assert slots == 1 or slots * base <= concurrency * part_mb * MiB


def test_huge_units_get_fewer_parts_in_flight() -> None:
    config = S3Config(part_size_mb=16, upload_concurrency=4)
    assert parts_in_flight(config, base_part_size(config, 10**9)) == 4
    assert parts_in_flight(config, base_part_size(config, 5 * 1024**4)) == 1
