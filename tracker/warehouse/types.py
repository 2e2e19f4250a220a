"""MySQL column types -> Arrow types: the one mapping every warehouse reader uses.

Each manifest column gets a ``ColumnPlan``: the Arrow type its values become
and the *kind* of text-to-value parsing (tracker/warehouse/parse.py) that
gets them there.  The choices, and why:

- Integers keep their range exactly: signed types map to the same width,
  UNSIGNED to the next wider signed type (engines have no unsigned types),
  BIGINT UNSIGNED to decimal128(20,0).
- DECIMAL(p,s) is decimal128(p,s) up to p = 38, the widest that Parquet
  readers, Spark and Iceberg agree on; above it the server's exact text as a
  string (a decimal256 would be exact too, but DuckDB, Spark and Iceberg
  cannot read it).  The field metadata says so.
- FLOAT is float32 and DOUBLE float64, bit for bit: the dump writes FLOAT as
  the double of its exact value (encoding float-as-double), which narrows
  back to the same float32 without rounding.
- DATE, DATETIME, TIMESTAMP are date32, timestamp[us] and timestamp[us, UTC]
  (TIMESTAMP is dumped in UTC).  A zero or partial date (a 00 year, month or
  day) has no calendar value: NULL, counted per column, or an error when
  strict.
- TIME is int64 microseconds (it spans -838:59:59 .. 838:59:59 and is an
  interval, not a time of day); ``tracker.unit`` in the metadata says so.
- YEAR is int16 (0 stays 0: YEAR's own zero, not a date).
- BIT(1) is bool, BIT(n) int64, BIT(64) decimal128(20,0).
- Character types, ENUM, SET and JSON are strings decoded from the column's
  own charset (tracker.store.charsets); bytes that are not valid in it are
  an error, never replaced.  UUID, INET4 and INET6 are strings as printed.
- Binary types are binary.  Plain (32-bit offset) string/binary are used
  throughout: engines read them best, and a block (a few MB plus one row;
  a MySQL value is at most max_allowed_packet, 1 GB) never needs more.
- Spatial types are ``struct<wkb: binary, srid: int64>``: MariaDB stores a
  4-byte SRID before the WKB, and the SRID is per value, so it cannot live
  in field metadata; a struct keeps one Arrow field per MySQL column (the
  shape Debezium also uses).  ``wkb`` is what ST_AsBinary returns.

The MySQL type of each column is kept in the field metadata (``mysql.type``,
``mysql.data_type``, ``mysql.charset``, ``mysql.collation``,
``mysql.generated``, ``tracker.period``, ``tracker.unit``, ``tracker.note``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tracker.errors import TrackerError

# parse kinds (tracker/warehouse/parse.py)
INT = "int"
DECIMAL = "decimal"
DECIMAL_TEXT = "decimal_text"
FLOAT32 = "float32"
FLOAT64 = "float64"
BOOL = "bool"
DATE = "date"
DATETIME = "datetime"
TIMESTAMP = "timestamp"
TIME = "time"
TEXT = "text"
BINARY = "binary"
GEOMETRY = "geometry"

MAX_DECIMAL128 = 38
DEFAULT_CHARSET = "utf8mb4"
GEOMETRY_TYPE = pa.struct([pa.field("wkb", pa.binary()), pa.field("srid", pa.int64())])

_INTEGERS: dict[str, tuple[pa.DataType, pa.DataType]] = {
    # data_type: (signed, unsigned)
    "tinyint": (pa.int8(), pa.int16()),
    "smallint": (pa.int16(), pa.int32()),
    "mediumint": (pa.int32(), pa.int32()),  # 24 bits: unsigned fits int32
    "int": (pa.int32(), pa.int64()),
    "integer": (pa.int32(), pa.int64()),
    "bigint": (pa.int64(), pa.decimal128(20, 0)),
}
_TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
_PRINTED_TYPES = {"uuid", "inet4", "inet6"}  # MariaDB types dumped as their ASCII text
_BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_SPATIAL_TYPES = {
    "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
    "multipolygon", "geometrycollection", "geomcollection",
}
_ARGS = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


class DecodeError(TrackerError):
    """A dataset cannot be decoded: one line naming the part, column, row, value and why."""


class UnsupportedColumn(DecodeError):
    """A manifest column whose type cannot be mapped (bad DECIMAL/BIT arguments)."""


@dataclass(frozen=True)
class ColumnPlan:
    """How one manifest column becomes one Arrow field."""

    name: str
    kind: str
    arrow_type: pa.DataType
    charset: str | None  # for TEXT: the charset to decode from
    metadata: dict[bytes, bytes]

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow_type, nullable=True, metadata=self.metadata)


def _args(column_type: str) -> tuple[int | None, int | None]:
    match = _ARGS.search(column_type)
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2)) if match.group(2) is not None else None


def _is_unsigned(column_type: str) -> bool:
    return " unsigned" in f" {column_type.lower()}"


def _numeric(data_type: str, column_type: str) -> tuple[str, pa.DataType, str | None]:
    """(kind, type, note) for the numeric MySQL types; KeyError for others."""
    if data_type in _INTEGERS:
        signed, unsigned = _INTEGERS[data_type]
        return INT, unsigned if _is_unsigned(column_type) else signed, None
    if data_type in ("decimal", "numeric", "dec", "fixed"):
        precision, scale = _args(column_type)
        precision = 10 if precision is None else precision
        scale = 0 if scale is None else scale
        if not 0 < precision or not 0 <= scale <= precision:
            raise UnsupportedColumn(f"DECIMAL arguments out of range in {column_type!r}")
        if precision <= MAX_DECIMAL128:
            return DECIMAL, pa.decimal128(precision, scale), None
        note = f"exact decimal text: DECIMAL({precision},{scale}) is wider than decimal128's {MAX_DECIMAL128} digits"
        return DECIMAL_TEXT, pa.string(), note
    if data_type == "float":
        return FLOAT32, pa.float32(), None
    if data_type in ("double", "real", "double precision"):
        return FLOAT64, pa.float64(), None
    if data_type == "bit":
        width = _args(column_type)[0] or 1
        if not 1 <= width <= 64:
            raise UnsupportedColumn(f"BIT width in {column_type!r}")
        if width == 1:
            return BOOL, pa.bool_(), None
        return INT, pa.int64() if width < 64 else pa.decimal128(20, 0), None
    raise KeyError(data_type)


def _temporal(data_type: str) -> tuple[str, pa.DataType, str | None]:
    if data_type == "date":
        return DATE, pa.date32(), "zero or partial dates are NULL"
    if data_type == "datetime":
        return DATETIME, pa.timestamp("us"), "zero or partial dates are NULL"
    if data_type == "timestamp":
        return TIMESTAMP, pa.timestamp("us", tz="UTC"), "zero timestamps are NULL"
    if data_type == "time":
        return TIME, pa.int64(), "MySQL TIME (an interval, -838:59:59..838:59:59) in microseconds"
    if data_type == "year":
        return INT, pa.int16(), None
    raise KeyError(data_type)


def column_plan(column: dict[str, Any]) -> ColumnPlan:
    """The plan for one manifest column entry (``name``, ``type``, ``data_type``, ``charset`` ...)."""
    name = str(column["name"])
    data_type = str(column.get("data_type") or column["type"]).lower().split("(")[0].strip()
    column_type = str(column.get("type") or data_type)
    has_charset_key = "charset" in column
    charset = column.get("charset")
    metadata: dict[bytes, bytes] = {b"mysql.type": column_type.encode(), b"mysql.data_type": data_type.encode()}
    note: str | None = None
    text_charset: str | None = None
    try:
        kind, arrow_type, note = _numeric(data_type, column_type)
    except KeyError:
        try:
            kind, arrow_type, note = _temporal(data_type)
        except KeyError:
            kind, arrow_type, text_charset, note = _other(data_type, charset, has_charset_key)
    except UnsupportedColumn as exc:
        raise UnsupportedColumn(f"column {name!r}: {exc}") from None
    if charset:
        metadata[b"mysql.charset"] = str(charset).encode()
    if column.get("collation"):
        metadata[b"mysql.collation"] = str(column["collation"]).encode()
    if kind == TIME:
        metadata[b"tracker.unit"] = b"microseconds"
    if column.get("generated"):
        metadata[b"mysql.generated"] = b"true"
    if column.get("period"):
        metadata[b"tracker.period"] = str(column["period"]).encode()
    if note:
        metadata[b"tracker.note"] = note.encode()
    return ColumnPlan(name, kind, arrow_type, text_charset, metadata)


def _other(data_type: str, charset: str | None, has_charset_key: bool) -> tuple[str, pa.DataType, str | None, str | None]:
    """(kind, type, charset to decode, note) for strings, binaries, spatial and unknown types."""
    if data_type in _SPATIAL_TYPES:
        return GEOMETRY, GEOMETRY_TYPE, None, "struct of the OGC WKB (as ST_AsBinary) and the SRID (as ST_SRID)"
    if data_type == "json":
        # MySQL 8's JSON is dumped as utf8mb4 text; MariaDB's is LONGTEXT with its own charset.
        return TEXT, pa.string(), charset or DEFAULT_CHARSET, None
    if data_type in _PRINTED_TYPES:
        return TEXT, pa.string(), "ascii", None
    if data_type in _BINARY_TYPES or charset == "binary":
        return BINARY, pa.binary(), None, None
    if data_type in _TEXT_TYPES:
        if charset:
            return TEXT, pa.string(), charset, None
        if not has_charset_key:  # a manifest from before charsets were recorded
            return TEXT, pa.string(), DEFAULT_CHARSET, "charset not in the manifest; decoded as utf8mb4"
        return BINARY, pa.binary(), None, None
    if charset:
        return TEXT, pa.string(), charset, f"MySQL type {data_type!r} not known to tracker; decoded as text"
    return BINARY, pa.binary(), None, f"MySQL type {data_type!r} not known to tracker; raw bytes as dumped"


def column_plans(columns: list[dict[str, Any]]) -> list[ColumnPlan]:
    return [column_plan(c) for c in columns]


def arrow_schema(columns: list[dict[str, Any]]) -> pa.Schema:
    """The Arrow schema of a dataset, from its manifest's ``columns`` (one field per column, in order)."""
    return pa.schema([plan.field for plan in column_plans(columns)])
