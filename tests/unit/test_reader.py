from __future__ import annotations

import io
import json

from hypothesis import given
from hypothesis import strategies as st

from tracker.store.reader import field_value, rows, split_unescaped, write_jsonl


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


@given(tables, st.integers(min_value=1, max_value=50))
def test_rows_and_fields_round_trip(table: list[list[bytes | None]], chunk: int) -> None:
    text = b"".join(b"\t".join(escape_field(v) for v in row) + b"\n" for row in table)
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    parsed = [[field_value(f) for f in split_unescaped(r, 0x09)] for r in rows(chunks)]
    assert parsed == table


def test_null_versus_strings() -> None:
    assert field_value(b"\\N") is None
    assert field_value(b"NULL") == b"NULL"
    assert field_value(b"\\\\N") == b"\\N"
    assert field_value(b"a\\0b") == b"a\x00b"


def test_jsonl() -> None:
    out = io.BytesIO()
    write_jsonl([b"1\t\\N\t\xff\x00\n2\tx\\\ty\tz\n"], ["a", "b", "c"], out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"a": "1", "b": None, "c": {"base64": "/wA="}}
    assert lines[1] == {"a": "2", "b": "x\ty", "c": "z"}
