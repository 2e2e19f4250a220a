"""The text-format tokenizer: C and Python agree, chunking does not matter, values round-trip."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.store import textformat
from tracker.store.textformat import Block, BlockParser, FormatError

Row = list  # list[bytes | None]

_SERVER_ESCAPES = {0x5C: b"\\\\", 0x09: b"\\\t", 0x0A: b"\\\n"}
# The spellings LOAD DATA also accepts, which the parser must map the same way.
_ALT_ESCAPES = {0x00: b"\\0", 0x08: b"\\b", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x1A: b"\\Z"}


def encode_value(value: bytes | None, alternate: bool = False) -> bytes:
    """A value as the server (plus tracker's NUL un-escape) writes it; ``alternate`` uses \\n, \\t, \\0 ..."""
    if value is None:
        return b"\\N"
    out = bytearray()
    for byte in value:
        if alternate and byte in _ALT_ESCAPES:
            out += _ALT_ESCAPES[byte]
        elif byte in _SERVER_ESCAPES:
            out += _SERVER_ESCAPES[byte]
        elif alternate and byte not in b"0bnrtZN" and byte < 0x20:
            out += b"\\" + bytes((byte,))  # any other escaped byte stands for itself
        else:
            out.append(byte)
    return bytes(out)


def encode_rows(rows: list[Row], alternate: bool = False) -> bytes:
    return b"".join(b"\t".join(encode_value(v, alternate) for v in row) + b"\n" for row in rows)


def parse_all(text: bytes, ncols: int, cuts: list[int] = (), max_block_bytes: int = 8 << 20) -> list[Block]:
    parser = BlockParser(ncols, max_block_bytes)
    blocks: list[Block] = []
    start = 0
    for cut in sorted({c % (len(text) + 1) for c in cuts}) + [len(text)]:
        blocks += parser.feed(text[start:cut])
        start = cut
    blocks += parser.finish()
    return blocks


def rows_of(blocks: list[Block]) -> list[Row]:
    out: list[Row] = []
    for block in blocks:
        columns = [c.values() for c in block.columns]
        assert all(len(c) == block.rows for c in columns)
        out += [list(r) for r in zip(*columns)]
    return out


# The impl fixture only swaps module attributes, so sharing it across examples is fine.
SHARED_FIXTURE = [HealthCheck.function_scoped_fixture]


@pytest.fixture(params=["c", "python"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test against the C tokenizer and against the pure-Python fallback."""
    if request.param == "python":
        for name in ("_c_parse_block", "_c_find_row_end", "_c_trailing_backslashes", "_c_column_values"):
            monkeypatch.setattr(textformat, name, None)
    yield request.param


values = st.none() | st.binary(max_size=40) | st.sampled_from([b"", b"N", b"\\N", b"\\", b"\t\n", b"NULL", b"\x00"])
structured = st.lists(st.sampled_from([b"\\", b"N", b"\t", b"\n", b"a", b"0", b"t", b"\x00", b"\\N"]), max_size=120).map(
    b"".join
)
anything = st.binary(max_size=300) | structured


@settings(max_examples=400, deadline=None)
@given(anything, st.integers(0, 50), st.integers(1, 5), st.integers(1, 64), st.booleans())
def test_c_and_python_give_identical_blocks(data: bytes, pos: int, ncols: int, max_bytes: int, final: bool) -> None:
    pos = min(pos, len(data))
    c = textformat._c_parse_block(data, pos, ncols, max_bytes, final)
    py = textformat.py_parse_block(data, pos, ncols, max_bytes, final)
    assert c == py


@settings(max_examples=300, deadline=None)
@given(anything, st.integers(0, 40), st.integers(0, 300))
def test_c_and_python_find_the_same_row_end(data: bytes, start: int, extra: int) -> None:
    start = min(start, len(data))
    frm = min(start + extra, len(data))
    assert textformat._c_find_row_end(data, start, frm) == textformat.py_find_row_end(data, start, frm)


@given(anything)
def test_c_and_python_count_the_same_trailing_backslashes(data: bytes) -> None:
    expected = len(data) - len(data.rstrip(b"\\"))
    assert textformat._c_trailing_backslashes(data) == expected
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(textformat, "_c_trailing_backslashes", None)
        assert textformat.trailing_backslashes(data) == expected


def test_identical_blocks_on_long_fields_with_escapes() -> None:
    """Long values exercise the 16-byte SIMD path and its hand-off to the byte loop."""
    rows = [[bytes(range(256)) * k, b"x" * (15 + k), None if k % 2 else b"\\N"] for k in range(40)]
    text = encode_rows(rows)
    assert textformat._c_parse_block(text, 0, 3, 1000, True) == textformat.py_parse_block(text, 0, 3, 1000, True)


@settings(max_examples=200, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(values, min_size=n, max_size=n), max_size=12)), st.booleans())
def test_round_trip_through_the_encoder(impl: str, rows: list[Row], alternate: bool) -> None:
    if not rows:
        return
    text = encode_rows(rows, alternate)
    assert rows_of(parse_all(text, len(rows[0]))) == rows


@settings(max_examples=200, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(
    st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(values, min_size=n, max_size=n), min_size=1, max_size=12)),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.integers(1, 80),
)
def test_any_chunk_split_gives_the_same_blocks(impl: str, rows: list[Row], cuts: list[int], max_bytes: int) -> None:
    text = encode_rows(rows)
    whole = parse_all(text, len(rows[0]), max_block_bytes=max_bytes)
    split = parse_all(text, len(rows[0]), cuts, max_block_bytes=max_bytes)
    assert split == whole
    assert rows_of(split) == rows


@settings(max_examples=200, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(anything, st.lists(st.integers(0, 400), max_size=6), st.integers(1, 3), st.integers(1, 40))
def test_any_chunk_split_of_arbitrary_bytes_gives_the_same_outcome(
    impl: str, data: bytes, cuts: list[int], ncols: int, max_bytes: int
) -> None:
    def outcome(cut_at: list[int]) -> tuple[list[Block], str | None]:
        parser = BlockParser(ncols, max_bytes)
        blocks: list[Block] = []
        try:
            start = 0
            for cut in sorted({c % (len(data) + 1) for c in cut_at}) + [len(data)]:
                blocks += parser.feed(data[start:cut])
                start = cut
            blocks += parser.finish()
        except FormatError as exc:
            return blocks, str(exc)
        return blocks, None

    whole_blocks, whole_error = outcome([])
    split_blocks, split_error = outcome(cuts)
    assert split_error == whole_error
    assert split_blocks == whole_blocks  # the blocks before a bad row too
    # ... and both are what one pass of the reference parser over the whole input gives.
    reference, end, error = [], 0, None
    while end < len(data) and error is None:
        end, rows, columns, error = textformat.py_parse_block(data, end, ncols, max_bytes, True)
        if error is None:
            reference.append(Block(rows, [textformat.ColumnBlock(*c) for c in columns]))
    assert whole_blocks == reference
    assert (whole_error is None) == (error is None)


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(st.integers(1, 3).flatmap(lambda n: st.lists(st.lists(values, min_size=n, max_size=n), min_size=1, max_size=20)))
def test_blocks_are_valid_arrow_large_binary(impl: str, rows: list[Row]) -> None:
    for block in parse_all(encode_rows(rows), len(rows[0]), max_block_bytes=30):
        for k, column in enumerate(block.columns):
            assert (column.validity is None) == (column.null_count == 0)
            array = pa.Array.from_buffers(
                pa.large_binary(),
                block.rows,
                [pa.py_buffer(column.validity) if column.validity else None, pa.py_buffer(column.offsets), pa.py_buffer(column.data)],
                null_count=column.null_count,
            )
            array.validate(full=True)
            assert array.to_pylist() == column.values() == column.py_values()


def test_block_boundaries_follow_max_block_bytes(impl: str) -> None:
    """A block ends after the first row that brings it to max_block_bytes; a bigger row is a block alone."""
    rows = [[b"a" * 10], [b"b" * 10], [b"c" * 100], [b"d"], [b"e"]]
    blocks = parse_all(encode_rows(rows), 1, cuts=list(range(0, 200, 7)), max_block_bytes=20)
    assert [b.rows for b in blocks] == [2, 1, 2]
    assert rows_of(blocks) == rows


def test_one_huge_row_in_small_chunks(impl: str) -> None:
    value = bytes(range(256)) * 2000  # 512 KB with every kind of escape
    text = encode_rows([[value, b"x"], [b"y", None]])
    parser = BlockParser(2, max_block_bytes=1000)
    blocks: list[Block] = []
    for i in range(0, len(text), 4096):
        blocks += parser.feed(text[i : i + 4096])
    blocks += parser.finish()
    assert rows_of(blocks) == [[value, b"x"], [b"y", None]]


def test_null_and_look_alikes(impl: str) -> None:
    text = b"\\N\t\\\\N\tN\tNULL\t\\N\\N\t\n"
    assert rows_of(parse_all(text, 6)) == [[None, b"\\N", b"N", b"NULL", b"NN", b""]]


def test_escapes_as_load_data_reads_them(impl: str) -> None:
    text = b"\\0\\b\\n\\r\\t\\Z\\x\\\\\\\t\\\n\tplain\n"
    assert rows_of(parse_all(text, 2)) == [[b"\x00\x08\n\r\t\x1ax\\\t\n", b"plain"]]


def test_raw_nul_bytes_are_data(impl: str) -> None:
    assert rows_of(parse_all(b"\x00\t\x00\\\x00\n", 2)) == [[b"\x00", b"\x00\x00"]]


def test_empty_input_has_no_blocks(impl: str) -> None:
    assert parse_all(b"", 3) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"a\tb\nc\n", "row 2 (byte 4): 1 fields, expected 2"),
        (b"a\tb\nc\td\te\n", "row 2 (byte 4): 3 fields, expected 2"),
        (b"a\tb\nc\td", "row 2 (byte 4): the data ends inside a row (no terminating newline)"),
        (b"a\tb\nc\td\\", "row 2 (byte 4): the data ends with a lone backslash"),
        (b"a\tb\nc\td\\\\\\", "row 2 (byte 4): the data ends with a lone backslash"),
        (b"a\tb\nc\td\\\n", "row 2 (byte 4): the data ends inside a row (no terminating newline)"),
        (b"a\tb\nc\te\tf", "row 2 (byte 4): the data ends inside a row (no terminating newline)"),
    ],
)
def test_format_errors_name_the_row(impl: str, text: bytes, message: str) -> None:
    with pytest.raises(FormatError) as err:
        parse_all(text, 2)
    assert str(err.value) == message
    assert err.value.exit_status == 1


def test_error_rows_count_across_blocks(impl: str) -> None:
    text = encode_rows([[b"x" * 5, b"y"]] * 10) + b"bad\n"
    with pytest.raises(FormatError, match=r"^row 11 \(byte 80\): 1 fields, expected 2$"):
        parse_all(text, 2, cuts=[3, 17, 40], max_block_bytes=16)


def test_feed_after_finish_is_refused() -> None:
    parser = BlockParser(1)
    list(parser.finish())
    with pytest.raises(ValueError):
        parser.feed(b"x\n")
