from __future__ import annotations

import datetime as dt
import posixpath
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.store.layout import DatasetKeys, compression_of, decode_segment, encode_segment, part_name


def test_keys() -> None:
    keys = DatasetKeys("main", "shop", "orders", dt.date(2026, 11, 22))
    assert keys.prefix == "main/shop/orders/dt=2026-11-22"
    assert keys.part(0, "lz4") == "main/shop/orders/dt=2026-11-22/part-00000.tsv.lz4"
    assert keys.part(12, "gzip").endswith("/part-00012.tsv.gz")
    assert keys.part(3, "none").endswith("/part-00003.tsv")
    assert keys.success.endswith("/_SUCCESS")
    assert keys.manifest.endswith("/manifest.json")
    assert keys.schema.endswith("/schema.sql")


def test_hostile_names_are_encoded() -> None:
    assert encode_segment("a b/c`d;e") == "a%20b%2Fc%60d%3Be"
    assert encode_segment("naïve") == "na%C3%AFve"
    assert encode_segment("A-Za_z0.9~") == "A-Za_z0.9~"


def test_dot_segments_are_encoded() -> None:
    """``.`` and ``..`` would resolve to the folder itself or its parent."""
    assert encode_segment(".") == "%2E"
    assert encode_segment("..") == "%2E%2E"
    # Any other name keeps exactly quote(name, safe=""): the layout is unchanged.
    for name in ("...", "a.", ".a", ".hidden", "\u00a0", "\u200b", " a"):
        assert encode_segment(name) == quote(name, safe=""), name
    assert DatasetKeys("main", "..", ".", dt.date(2026, 11, 1)).prefix == "main/%2E%2E/%2E/dt=2026-11-01"


def test_empty_name_has_no_segment() -> None:
    with pytest.raises(ValueError):
        encode_segment("")


NAMES = st.text(min_size=1, max_size=64) | st.sampled_from([".", "..", "...", "%2E", "%2E%2E", ".%2E", "a."])


@given(NAMES)
def test_segment_round_trips_and_is_safe(name: str) -> None:
    encoded = encode_segment(name)
    assert "/" not in encoded and encoded not in ("", ".", "..")
    assert decode_segment(encoded) == name
    assert unquote(encoded) == name  # any percent-decoder reads it back
    assert all(c.isascii() and (c.isalnum() or c in "_.-~%") for c in encoded)


@given(NAMES, NAMES, NAMES, NAMES)
def test_every_dataset_stays_under_its_own_prefix(db: str, table: str, other_db: str, other_table: str) -> None:
    """Resolving the keys as paths changes nothing, and distinct names never share a prefix."""
    date = dt.date(2026, 11, 1)
    keys = DatasetKeys("main", db, table, date)
    assert posixpath.normpath(keys.part(0, "lz4")) == keys.part(0, "lz4")
    assert keys.prefix.split("/") == ["main", encode_segment(db), encode_segment(table), "dt=2026-11-01"]
    other = DatasetKeys("main", other_db, other_table, date)
    if (db, table) != (other_db, other_table):
        table_folder = keys.prefix.rsplit("/", 1)[0] + "/"
        assert not other.part(0, "lz4").startswith(table_folder)


@given(NAMES, NAMES)
def test_distinct_names_have_distinct_segments(a: str, b: str) -> None:
    assert (encode_segment(a) == encode_segment(b)) == (a == b)


def test_compression_of() -> None:
    assert compression_of(part_name(0, "lz4")) == "lz4"
    assert compression_of(part_name(0, "gzip")) == "gzip"
    assert compression_of(part_name(0, "none")) == "none"
