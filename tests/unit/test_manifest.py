"""``manifest.json``'s text: exact JSON for every value, and a line per field, column and unit."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given, strategies as st

from tracker.store import manifest

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)


@given(st.dictionaries(st.text(), _values, max_size=8))
def test_any_document_reads_back_equal(document) -> None:
    text = manifest.dumps(document)
    assert json.loads(text) == document
    assert text.endswith(b"}\n")


def test_a_manifest_has_a_line_per_field_column_and_unit() -> None:
    columns = [{"name": "id", "type": "int"}, {"name": "表", "type": "varchar(8)"}]
    units = [{"index": 1, "rows": 2, "bytes": 3, "raw_bytes": 4}, {"index": 0, "rows": 1, "bytes": 1, "raw_bytes": 1}]
    document = manifest.build(
        namespace="ns", db="d", table="t\tx", date=dt.date(2026, 1, 2), columns=columns, compression="lz4",
        units=units, schema_key="ns/d/t/dt=2026-01-02/schema.sql", server_version="10.11",
    )
    lines = manifest.dumps(document).decode().splitlines()
    assert json.loads("\n".join(lines)) == document
    assert '    {"name": "表", "type": "varchar(8)"},' not in lines  # the last column has no comma
    assert '    {"name": "表", "type": "varchar(8)"}' in lines  # not escaped: the file is UTF-8
    assert lines[0] == "{" and lines[-1] == "}"
    assert sum(line.startswith('  "') for line in lines) == len(document)  # a line per field
    assert [line for line in lines if line.startswith('    {"index"')] == [
        '    {"index": 0, "rows": 1, "bytes": 1, "raw_bytes": 1},',
        '    {"index": 1, "rows": 2, "bytes": 3, "raw_bytes": 4}',
    ]
