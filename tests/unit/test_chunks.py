"""Key ranges: cut points, predicates, and literals that cannot carry SQL."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.dump.chunks import BadPlan, ChunkKey, KeyColumn, KeyRange, integer_boundaries, ranges_from, wanted_ranges

ID = KeyColumn("id", "bigint")
NAME = KeyColumn("na`me", "varchar", "utf8mb4", "utf8mb4_general_ci")
BLOB_KEY = KeyColumn("b", "varbinary")
WHEN = KeyColumn("t", "datetime")


@given(st.integers(-(2**63), 2**64), st.integers(0, 2**64), st.integers(1, 5000))
def test_integer_cuts_split_the_span_evenly(low: int, width: int, parts: int) -> None:
    high = low + width
    cuts = integer_boundaries(low, high, parts)
    if width + 1 < parts or parts == 1:
        assert cuts == []
        return
    assert len(cuts) == parts - 1
    bounds = [low, *cuts, high + 1]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    assert min(sizes) >= 1  # strictly increasing, every range non-empty in key space
    assert max(sizes) - min(sizes) <= 1


def test_wanted_ranges() -> None:
    mib = 1024 * 1024
    assert wanted_ranges(10 * mib, 0) == 1  # chunking off
    assert wanted_ranges(10 * mib, 10) == 1
    assert wanted_ranges(10 * mib + 1, 10) == 2
    assert wanted_ranges(1000 * mib, 100) == 10
    assert wanted_ranges(0, 1) == 1


def test_ranges_are_consecutive_and_open_at_both_ends() -> None:
    ranges = ranges_from(["id"], [("10",), ("20",)])
    assert [(r.lower, r.upper) for r in ranges] == [(None, ("10",)), (("10",), ("20",)), (("20",), None)]
    assert ranges_from(["id"], []) == [KeyRange(("id",), None, None)]


def test_single_column_predicate() -> None:
    key = ChunkKey("PRIMARY", (ID,))
    assert KeyRange(("id",), ("10",), ("20",)).predicate(key) == "`id` >= 10 AND `id` < 20"
    assert KeyRange(("id",), None, ("-5",)).predicate(key) == "`id` < -5"
    assert KeyRange(("id",), None, None).predicate(key) == "TRUE"


def test_composite_predicate_is_lexicographic() -> None:
    key = ChunkKey("PRIMARY", (ID, NAME))
    predicate = KeyRange(("id", "na`me"), ("1", "61"), ("2", "")).predicate(key)
    literal_a = "_utf8mb4 X'61' COLLATE utf8mb4_general_ci"
    literal_empty = "_utf8mb4 X'' COLLATE utf8mb4_general_ci"
    assert predicate == (
        f"(`id` > 1 OR (`id` = 1 AND `na``me` >= {literal_a}))"
        f" AND (`id` < 2 OR (`id` = 2 AND `na``me` < {literal_empty}))"
    )


def test_a_range_may_bound_only_a_prefix_of_the_key() -> None:
    key = ChunkKey("PRIMARY", (ID, NAME))
    assert KeyRange(("id",), ("7",), None).predicate(key) == "`id` >= 7"
    with pytest.raises(BadPlan):
        KeyRange(("na`me",), ("61",), None).predicate(key)


def test_literals_by_type() -> None:
    assert BLOB_KEY.literal("00FF") == "X'00FF'"
    assert WHEN.literal("2026-11-01 00:00:00.000001") == "'2026-11-01 00:00:00.000001'"
    assert KeyColumn("d", "decimal").literal("-12.50") == "-12.50"
    assert KeyColumn("f", "double").literal("1.5e300") == "1.5e300"


@pytest.mark.parametrize(
    "column, value",
    [
        (ID, "1 OR 1=1"),
        (ID, "1.5"),
        (NAME, "6'"),
        (NAME, "616"),  # odd length: not hex of whole bytes
        (NAME, "6g"),
        (BLOB_KEY, "X'00'"),
        (WHEN, "2026-11-01'; DROP TABLE t; --"),
        (KeyColumn("d", "decimal"), "1e5; SELECT 1"),
    ],
)
def test_hostile_values_are_refused(column: KeyColumn, value: str) -> None:
    with pytest.raises(BadPlan):
        column.literal(value)


def test_hostile_collation_is_refused() -> None:
    with pytest.raises(BadPlan):
        KeyColumn("s", "varchar", "utf8mb4", "x; DROP TABLE t").literal("61")


def test_range_json_round_trip() -> None:
    r = KeyRange(("id", "na`me"), ("1", "61"), None)
    assert KeyRange.from_json(r.to_json()) == r


def counter(keys: list[int]):
    """Exact row counts over a known key set, as (estimate, empty) probes on text bounds."""
    import bisect

    ordered = sorted(keys)

    def count(lower: str, upper: str | None) -> int:
        end = len(ordered) if upper is None else bisect.bisect_left(ordered, int(upper))
        return end - bisect.bisect_left(ordered, int(lower))

    return count, lambda lower, upper: count(lower, upper) == 0


def text_cuts(low: int, high: int, parts: int) -> list[str]:
    return [str(c) for c in integer_boundaries(low, high, parts)]


def test_clusters_and_gaps_are_skewed_dense_keys_are_not() -> None:
    from tracker.dump.chunks import skewed

    count, empty = counter(list(range(1, 100_001)))
    assert not skewed(text_cuts(1, 100_000, 10), "1", 10_000, count, empty)
    # a cluster holding most rows, and a sprinkle over the rest of the span: no range is empty
    clustered = list(range(0, 9000)) + list(range(10**9, 10**12, 10**9))
    count, _ = counter(clustered)
    assert skewed(text_cuts(0, max(clustered), 10), "0", len(clustered) // 10, count, lambda a, b: False)
    # two clusters far apart: the ranges between them are empty, whatever the estimates say
    gaps = list(range(0, 1000)) + list(range(10**15, 10**15 + 1000))
    _, empty = counter(gaps)
    assert skewed(text_cuts(0, max(gaps), 4), "0", 500, lambda a, b: 1, empty)


@given(
    st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(5000, 1, 1)),
    st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=365 * 4000)),
    st.integers(2, 50),
)
def test_datetime_cuts_increase_and_read_back(low: dt.datetime, width: dt.timedelta, parts: int) -> None:
    from tracker.dump.chunks import _even_cuts, even_scale

    high = low + width
    scale = even_scale(KeyColumn("t", "datetime"))
    assert scale is not None
    cuts = _even_cuts(scale, low.isoformat(sep=" "), high.isoformat(sep=" "), parts)
    values = [dt.datetime.fromisoformat(c) for c in cuts]
    assert values == sorted(set(values)) and all(low < v <= high for v in values)
    assert all(WHEN.literal(c) == f"'{c}'" for c in cuts)


def test_dates_and_zero_dates() -> None:
    from tracker.dump.chunks import _even_cuts, even_scale

    date_scale = even_scale(KeyColumn("d", "date"))
    assert date_scale is not None
    assert _even_cuts(date_scale, "2026-01-01", "2026-01-05", 2) == ["2026-01-03"]
    assert _even_cuts(date_scale, "0000-00-00", "2026-01-05", 2) == []  # walked instead
    assert even_scale(KeyColumn("s", "varchar", "utf8mb4", "utf8mb4_bin")) is None


@given(st.binary(max_size=20), st.binary(max_size=20), st.integers(2, 200), st.sampled_from([128, 256]))
def test_probe_points_lie_between_the_ends_in_byte_order(a: bytes, b: bytes, count: int, radix: int) -> None:
    from tracker.dump.chunks import probe_points

    low, high = min(a, b), max(a, b)
    if radix == 128:
        low, high = bytes(min(x, 127) for x in low), bytes(min(x, 127) for x in high)
        low, high = min(low, high), max(low, high)
    points = probe_points(low, high, count, radix)
    assert len(points) == count - 1
    assert points == sorted(points)
    common = len(os.path.commonprefix([low, high]))
    width = common + 8

    def padded(value: bytes) -> bytes:
        return value[:width].ljust(width, b"\0")

    assert all(p.startswith(low[:common]) for p in points)
    assert all(padded(low) <= padded(p) <= padded(high) for p in points)
    if radix == 128:
        assert all(byte < 128 for p in points for byte in p)


def test_probe_points_spread_over_what_differs() -> None:
    from tracker.dump.chunks import probe_points

    points = probe_points(b"user-000001", b"user-999999", 10, 128)
    assert all(p.startswith(b"user-") for p in points)
    assert len({p[5:6] for p in points}) >= 8  # spread over the digit after the shared prefix


def test_group_cuts_balance_estimates_and_refuse_a_cluster() -> None:
    from tracker.dump.chunks import group_cuts

    keys = [f"{i:02X}" for i in range(1, 40)]
    assert group_cuts(keys, [10] * 40, 4) == ["0A", "14", "1E"]
    assert group_cuts(keys, [10] * 20 + [50_000] + [10] * 19, 4) is None  # one segment holds nearly all
