"""CRC-32C: the C version equals the definition, chained or whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker.store import checksum
from tracker.store.checksum import crc32c, reference_crc32c


def test_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_matches_reference_and_chains(data: bytes, cut: int) -> None:
    cut = min(cut, len(data))
    assert crc32c(data) == reference_crc32c(data)
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)
    assert crc32c(memoryview(bytearray(data))) == crc32c(data)


def test_accelerated() -> None:
    assert checksum._c_crc32c is not None
