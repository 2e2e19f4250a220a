"""zstd for raw datasets: streaming round trips, the standard tool, truncation and corruption."""

from __future__ import annotations

import subprocess

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.config import COMPRESSIONS
from tracker.store.compress import compressor, decompressor
from tracker.store.layout import compression_of, part_name


def compress_chunks(chunks: list[bytes]) -> bytes:
    c = compressor("zstd")
    return b"".join(c.compress(chunk) for chunk in chunks) + c.flush()


def decompress_in_steps(data: bytes, step: int) -> bytes:
    d = decompressor("zstd")
    out = b"".join(d.decompress(data[i : i + step]) for i in range(0, len(data), step))
    d.finish()
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8), st.integers(min_value=1, max_value=5000))
def test_any_chunking_round_trips(chunks: list[bytes], step: int) -> None:
    assert decompress_in_steps(compress_chunks(chunks), step) == b"".join(chunks)


def test_concatenated_frames_read_whole_like_the_tool() -> None:
    first, second = compress_chunks([b"a\tb\n" * 1000]), compress_chunks([b"\x00\\N\n"])
    for step in (1, 7, 1 << 20):
        assert decompress_in_steps(first + second, step) == b"a\tb\n" * 1000 + b"\x00\\N\n"


def test_an_empty_object_is_one_valid_frame() -> None:
    data = compress_chunks([])
    assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == b""
    assert decompress_in_steps(data, 1) == b""


@pytest.mark.parametrize("cut", [1, 3, 100])
def test_a_truncated_object_is_an_error(cut: int) -> None:
    data = compress_chunks([bytes(range(256)) * 400])
    d = decompressor("zstd")
    d.decompress(data[:-cut])
    with pytest.raises(ValueError, match="truncated zstd frame"):
        d.finish()


def test_corrupt_data_raises_value_error() -> None:
    with pytest.raises(ValueError, match="corrupt zstd data"):
        decompressor("zstd").decompress(b"definitely not a zstd frame")


def test_frames_are_checksum_free_and_level_is_cheap() -> None:
    """No frame checksum (the manifest's CRC-32C covers the object); the frame header says so."""
    data = compress_chunks([b"x" * 100_000])
    params = zstandard.get_frame_parameters(data)
    assert params.has_checksum is False
    assert len(data) < 1000


def test_the_standard_tool_reads_it() -> None:
    """``zstd`` (Debian package, installed by scripts/install.sh) decodes tracker's objects."""
    payload = bytes(range(256)) * 1000 + b"tail\n"
    result = subprocess.run(["zstd", "-d", "-c"], input=compress_chunks([payload[:1000], payload[1000:]]),
                            capture_output=True, check=True)
    assert result.stdout == payload


def test_layout_and_config_know_zstd() -> None:
    assert "zstd" in COMPRESSIONS
    assert part_name(3, "zstd") == "part-00003.tsv.zst"
    assert compression_of("main/db/t/dt=2026-11-01/part-00003.tsv.zst") == "zstd"
