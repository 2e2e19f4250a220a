"""lz4 for raw datasets: any split of the input reads back whole, and a small object leaves in one piece."""

from __future__ import annotations

import lz4.frame
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.store.compress import compressor, decompressor


def pieces(chunks: list[bytes]) -> list[bytes]:
    """What the compressor hands the upload, in order, leaving out the empty (nothing is written for them)."""
    c = compressor("lz4")
    out = [c.compress(chunk) for chunk in chunks] + [c.flush()]
    return [piece for piece in out if piece]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=40_000), max_size=6))
def test_any_split_reads_back_whole_with_the_standard_reader_and_ours(chunks: list[bytes]) -> None:
    stored = b"".join(pieces(chunks))
    assert lz4.frame.decompress(stored) == b"".join(chunks)
    d = decompressor("lz4")
    assert d.decompress(stored) == b"".join(chunks)
    d.finish()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=5_000), max_size=5))
def test_a_small_object_is_one_write(chunks: list[bytes]) -> None:
    """Under one 64 KiB block the frame's header waits for the block: one write, not a 7-byte one first."""
    assert len(pieces(chunks)) == 1
