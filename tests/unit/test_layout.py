from __future__ import annotations

import datetime as dt
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from tracker.store.layout import DatasetKeys, compression_of, encode_segment, part_name


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
    assert encode_segment("..") == ".."  # harmless as a key segment inside the prefix
    assert encode_segment("naïve") == "na%C3%AFve"
    assert encode_segment("A-Za_z0.9~") == "A-Za_z0.9~"


@given(st.text(min_size=1, max_size=64))
def test_segment_round_trips_and_is_safe(name: str) -> None:
    encoded = encode_segment(name)
    assert "/" not in encoded
    assert unquote(encoded) == name
    assert all(c.isascii() and (c.isalnum() or c in "_.-~%") for c in encoded)


def test_compression_of() -> None:
    assert compression_of(part_name(0, "lz4")) == "lz4"
    assert compression_of(part_name(0, "gzip")) == "gzip"
    assert compression_of(part_name(0, "none")) == "none"
