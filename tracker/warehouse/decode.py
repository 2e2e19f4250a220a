"""Dataset parts -> Arrow record batches typed from the manifest, in bounded memory.

The one place that turns tracker's text format into typed values: ``tracker
convert``, the Spark data source and any other reader call ``read_part``
(or ``decode_block`` on blocks they parse themselves).  A part streams
through ``verified_chunks`` (decompression, size and CRC-32C against the
manifest) and ``BlockParser`` (whole rows, column by column, a few MB at a
time); each block becomes one record batch, so memory stays at about two
blocks whatever the part's size.

The type mapping is in tracker/warehouse/types.py, the value parsers in
tracker/warehouse/parse.py.  Nothing is altered silently: a value that does
not parse as its type, or text not valid in its column's charset, is a
``DecodeError`` naming the part, column, row and value.  Zero and partial
dates (``0000-00-00``, ``2026-00-00``) have no calendar value: they become
NULL and are counted per column in the ``DecodeReport``, or are an error
with ``strict=True``.

The part's checksum is known only once it has been read to its end, so a
consumer must treat batches as provisional until the iterator is exhausted
without an error (``tracker convert`` commits a Parquet file only then).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from tracker.warehouse import parse
from tracker.warehouse.types import DecodeError, UnsupportedColumn, arrow_schema, column_plans

if TYPE_CHECKING:
    from tracker.store.sinks import Store
    from tracker.store.textformat import Block

__all__ = ["DecodeError", "DecodeReport", "UnsupportedColumn", "arrow_schema", "decode_block", "read_part"]

log = logging.getLogger(__name__)

BLOCK_BYTES = 8 << 20  # input bytes per block: large enough for fast compute, small enough to bound memory
_SHOWN_BYTES = 64


@dataclass
class DecodeReport:
    """Per-dataset counters of a conversion; ``merge`` adds another part's."""

    zero_dates: dict[str, int] = field(default_factory=dict)  # column -> values that became NULL
    rows: int = 0

    def merge(self, other: "DecodeReport") -> None:
        for name, count in other.zero_dates.items():
            self.zero_dates[name] = self.zero_dates.get(name, 0) + count
        self.rows += other.rows

    def count_zero_dates(self, column: str, count: int) -> None:
        if count:
            self.zero_dates[column] = self.zero_dates.get(column, 0) + count


def _column_array(column: Any) -> pa.Array:
    """Wrap a parser ColumnBlock as ``large_binary`` without copying."""
    rows = (len(column.offsets) // 8) - 1
    validity = pa.py_buffer(column.validity) if column.validity is not None else None
    return pa.Array.from_buffers(
        pa.large_binary(),
        rows,
        [validity, pa.py_buffer(column.offsets), pa.py_buffer(column.data)],
        column.null_count,
    )


def show_value(value: bytes) -> str:
    """A value for an error message: text when it is printable UTF-8, else hex; long ones cut."""
    cut = value[:_SHOWN_BYTES]
    more = f"... ({len(value)} bytes)" if len(value) > _SHOWN_BYTES else ""
    try:
        text = cut.decode("utf-8")
    except UnicodeDecodeError:
        return f"x'{cut.hex()}'{more}"
    if text.isprintable():
        return repr(text) + more
    return f"x'{cut.hex()}'{more}"


def _error(where: str, name: str, row: int, raw: pa.Array, index: int, why: str) -> DecodeError:
    value = raw[index].as_py() if index < len(raw) else None
    shown = "NULL" if value is None else show_value(value)
    place = f"{where}: " if where else ""
    return DecodeError(f"{place}column {name!r} row {row}: {why}: {shown}")


def decode_block(
    block: "Block",
    columns: list[dict],
    schema: pa.Schema,
    report: DecodeReport,
    strict: bool = False,
    where: str = "",
    first_row: int = 1,
) -> pa.RecordBatch:
    """One parsed block as a record batch of ``schema`` (from ``arrow_schema(columns)``).

    ``first_row`` is the block's first row number within its part (1-based),
    for error messages; ``where`` names the part.
    """
    plans = column_plans(columns)
    if len(block.columns) != len(plans):
        place = f"{where}: " if where else ""
        raise DecodeError(f"{place}{len(block.columns)} columns in the data, the manifest lists {len(plans)}")
    arrays: list[pa.Array] = []
    for plan, column in zip(plans, block.columns):
        raw = _column_array(column)
        try:
            values, nulled = parse.parse(plan, raw)
        except parse.BadValue as bad:
            raise _error(where, plan.name, first_row + bad.index, raw, bad.index, bad.why) from None
        if nulled is not None:
            if strict:
                index = pc.index(nulled, True).as_py()
                raise _error(where, plan.name, first_row + index, raw, index, "zero or partial date (strict)")
            report.count_zero_dates(plan.name, pc.sum(nulled).as_py() or 0)
        arrays.append(values)
    report.rows += block.rows
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_part(
    store: "Store",
    entry: dict,
    manifest: dict,
    *,
    strict: bool = False,
    report: DecodeReport | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Stream one part (a ``manifest["units"]`` entry) as record batches of ``arrow_schema(manifest["columns"])``.

    The object is read through ``verified_chunks`` (size and CRC-32C of the
    stored object are checked against ``entry``; CorruptObject at the end)
    and its row count is checked against ``entry["rows"]``.  Zero dates are
    counted in ``report`` when given.
    """
    from tracker.store.reader import verified_chunks
    from tracker.store.textformat import BlockParser

    columns = manifest["columns"]
    schema = arrow_schema(columns)
    report = report if report is not None else DecodeReport()
    part = DecodeReport()
    key = entry["key"]
    where = store.url(key)
    parser = BlockParser(len(columns), block_bytes)
    row = 1

    def batches(blocks: Iterator["Block"]) -> Iterator[pa.RecordBatch]:
        nonlocal row
        for block in blocks:
            batch = decode_block(block, columns, schema, part, strict, where, first_row=row)
            row += block.rows
            yield batch

    for chunk in verified_chunks(store, key, entry):
        yield from batches(parser.feed(chunk))
    yield from batches(parser.finish())
    expected = entry.get("rows")
    if expected is not None and part.rows != expected:
        raise DecodeError(f"{where}: {part.rows} rows decoded, the manifest says {expected}")
    report.merge(part)
    log.debug("event=part_decoded part=%s rows=%s zero_dates=%s", where, part.rows, sum(part.zero_dates.values()))
