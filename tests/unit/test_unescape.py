"""The NUL un-escaper equals its byte-by-byte definition on every input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.dump import unescape
from tracker.dump.unescape import NulUnescaper, reference_unescape, unescape_inplace, unescape_into, unescape_nuls


def outfile_escape(raw: bytes) -> bytes:
    """What OUTFILE writes for a field value (tab/newline terminators)."""
    out = bytearray()
    for byte in raw:
        if byte == 0:
            out += b"\\0"
        elif byte in (0x5C, 0x09, 0x0A):
            out += bytes((0x5C, byte))
        else:
            out.append(byte)
    return bytes(out)


def _escape_keep_nul(raw: bytes) -> bytearray:
    out = bytearray()
    for byte in raw:
        if byte in (0x5C, 0x09, 0x0A):
            out += bytes((0x5C, byte))
        else:
            out.append(byte)
    return out


# Inputs rich in the bytes that matter.
interesting = st.binary(max_size=400) | st.lists(
    st.sampled_from([b"\\", b"0", b"\x00", b"N", b"\t", b"\n", b"\x01", b"a"]), max_size=200
).map(b"".join)


def _inplace(data: bytes) -> bytes:
    buf = bytearray(data)
    return bytes(buf[: unescape_inplace(buf, len(buf))])


def _streamed(data: bytes, cuts: list[int], readonly: bool = False) -> bytes:
    """Feed ``data`` cut at ``cuts``: writable pieces (a pipe's buffer) or read-only ones (a mapped file)."""
    u = NulUnescaper()
    out = bytearray()
    start = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        piece = data[start:cut]
        start = cut
        if piece:
            out += u.feed(memoryview(piece) if readonly else bytearray(piece))
    out += u.finish()
    return bytes(out)


@given(interesting)
def test_all_implementations_equal_reference(data: bytes) -> None:
    expected = reference_unescape(data)
    assert _inplace(data) == expected
    dst = bytearray(len(data))
    assert bytes(dst[: unescape_into(data, len(data), dst)]) == expected
    assert unescape_nuls(data) == expected


@given(interesting, st.lists(st.integers(min_value=0, max_value=500), max_size=8), st.booleans())
def test_any_split_equals_whole(data: bytes, cuts: list[int], readonly: bool) -> None:
    assert _streamed(data, cuts, readonly) == reference_unescape(data)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=700), max_size=6))
def test_outfile_escaped_data_gets_raw_nuls_back(raw: bytes, cuts: list[int]) -> None:
    escaped = outfile_escape(raw)
    assert _streamed(escaped, cuts) == bytes(_escape_keep_nul(raw))


def test_examples() -> None:
    assert reference_unescape(b"a\\0b") == b"a\x00b"
    assert reference_unescape(b"\\\\0") == b"\\\\0"  # escaped backslash, then '0'
    assert reference_unescape(b"\\\\\\0") == b"\\\\\x00"
    assert reference_unescape(b"\\N\t\\0") == b"\\N\t\x00"
    assert _streamed(b"x\\0y", [2]) == b"x\x00y"  # split inside the pair


def test_pure_python_fallback_matches(monkeypatch) -> None:
    monkeypatch.setattr(unescape, "_c_unescape_inplace", None)
    monkeypatch.setattr(unescape, "_c_unescape_into", None)
    data = b"\\0\\\\0\\\\\\0\t\\N" * 3
    assert _inplace(data) == reference_unescape(data)
    assert _streamed(data, [5, 9], readonly=True) == reference_unescape(data)


def test_accelerator_is_built() -> None:
    """The install builds the C accelerator; without it throughput halves."""
    assert unescape.ACCELERATED
