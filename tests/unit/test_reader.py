from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

import base64

from tracker.store.reader import write_jsonl


def escape_field(value: bytes | None) -> bytes:
    if value is None:
        return b"\\N"
    out = bytearray()
    for byte in value:
        if byte in (0x5C, 0x09, 0x0A):
            out += bytes((0x5C, byte))
        else:
            out.append(byte)  # NULs stay raw, as tracker stores them
    return bytes(out)


values = st.none() | st.binary(max_size=20) | st.sampled_from([b"NULL", b"\\N", b"\\", b"\t\n"])
tables = st.lists(st.lists(values, min_size=3, max_size=3), max_size=10)


def _expected_json(value: bytes | None) -> object:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


@settings(deadline=None)
@given(tables, st.integers(min_value=1, max_value=50))
def test_jsonl_round_trip_in_any_chunks(table: list[list[bytes | None]], chunk: int) -> None:
    text = b"".join(b"\t".join(escape_field(v) for v in row) + b"\n" for row in table)
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    out = io.BytesIO()
    write_jsonl(chunks, ["a", "b%s", "c"], out)  # a % in a name must not upset the row template
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [{"a": _expected_json(r[0]), "b%s": _expected_json(r[1]), "c": _expected_json(r[2])} for r in table]


def test_null_versus_strings() -> None:
    out = io.BytesIO()
    write_jsonl([b"\\N\tNULL\t\\\\N\ta\\0b\n"], ["a", "b", "c", "d"], out)
    assert json.loads(out.getvalue()) == {"a": None, "b": "NULL", "c": "\\N", "d": "a\u0000b"}


def test_jsonl() -> None:
    out = io.BytesIO()
    write_jsonl([b"1\t\\N\t\xff\x00\n2\tx\\\ty\tz\n"], ["a", "b", "c"], out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"a": "1", "b": None, "c": {"base64": "/wA="}}
    assert lines[1] == {"a": "2", "b": "x\ty", "c": "z"}


def test_jsonl_of_big_values_is_written_in_pieces_and_stays_exact() -> None:
    """Values above the slice size take the value-by-value path; slice edges must not show."""
    text = ('"\\\n\t\x01é😀' + "x" * 1000).encode() * 3000  # ~3 MB, specials across every slice edge
    binary = bytes(range(256)) * 12_000  # ~3 MB, not UTF-8
    raw = b"".join(b"\\" + bytes((c,)) if c in b"\\\t\n" else bytes((c,)) for c in text)
    blob = binary.replace(b"\\", b"\\\\").replace(b"\t", b"\\\t").replace(b"\n", b"\\\n")
    data = b"1\t" + raw + b"\t" + blob + b"\t\\N\n2\tsmall\t\\N\tz\n"
    out = io.BytesIO()
    write_jsonl([data[i : i + 65536] for i in range(0, len(data), 65536)], ["id", "t%", "b", "n"], out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {"id": "1", "t%": text.decode(), "b": {"base64": base64.b64encode(binary).decode()}, "n": None}
    assert json.loads(lines[1]) == {"id": "2", "t%": "small", "b": None, "n": "z"}
