"""Splitting a large table (or partition) into key ranges, one unit each.

A table is only as fast as the one ``SELECT ... INTO OUTFILE`` that reads
it; split into ranges of its clustered key, workers on this host and hosts
across the replica set dump it in parallel.

Correctness does not depend on where the boundaries fall, only on how the
ranges are written: the first range has no lower bound, the last no upper
bound, and every other range is ``lower <= key < upper`` with each upper
bound the next range's lower bound, compared by the server in the key's
own collation.  So every row of any snapshot falls in exactly one range,
whatever was inserted since planning and whichever replica planned.  The
boundaries only need to be in the key's order, which is why they are
always read from the key's index:

* an integer, DATE, DATETIME or TIMESTAMP first key column is split
  arithmetically between its MIN and MAX (dates as days, times as
  microseconds), ranges on that column alone -- unless the key is badly skewed: a
  range is empty (one index dive each says so exactly) or the optimizer's
  estimate (``EXPLAIN``, index dives) puts more than ``SKEW_FACTOR`` times
  its share of the table's rows in one range.  Such a key is walked like
  the others.  The optimizer's range estimates are too rough to place cuts
  on (InnoDB caps them at half the table and overestimates small ranges
  twofold), but enough to see a cluster;
* a string or binary first key column is sampled: probes spread over its
  byte range each find the next real key with one index dive, the server
  sorts those keys in the column's collation, and consecutive keys are
  grouped by the optimizer's estimates into ranges on that column;
* any other key (composite keys whose first column has few values, or keys
  the above leaves badly uneven) is walked with
  ``ORDER BY key LIMIT 1 OFFSET step``: the server reads the whole index but
  sends only one row per boundary, and the boundaries come out in the
  collation's order by construction.

Boundary values travel as data, never as SQL: numbers and temporal values
as the server prints them, strings as the hex of their bytes.  Literals are
rendered from the local table's column metadata after checking each value
against its type, so a plan read from the master cannot inject SQL.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pymysql

from tracker.db import query_all, query_one, quote_ident
from tracker.errors import TrackerError

log = logging.getLogger(__name__)

INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "bigint"})
NUMBER_TYPES = INTEGER_TYPES | {"decimal", "float", "double"}
TEMPORAL_TYPES = frozenset({"date", "datetime", "timestamp", "time", "year"})
STRING_TYPES = frozenset({"char", "varchar"})
BINARY_TYPES = frozenset({"binary", "varbinary"})
# ENUM sorts by its index but compares to a string literal as a string, so a
# range over it would not follow the index's order; it (and BIT, JSON, blobs)
# makes a key unusable for chunking.
SUPPORTED_TYPES = NUMBER_TYPES | TEMPORAL_TYPES | STRING_TYPES | BINARY_TYPES

_VALUE_FORMS = {
    "integer": re.compile(r"-?[0-9]+"),
    "number": re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"),
    "temporal": re.compile(r"-?[0-9][0-9:. -]*"),
    "hex": re.compile(r"(?:[0-9A-F]{2})*"),
}
_NAME = re.compile(r"[A-Za-z0-9_]+")
# A walk stops after this many boundaries per wanted range, in case the
# row estimate it steps by is far too low; the last range stays open-ended.
MAX_RANGES_FACTOR = 4


class BadPlan(TrackerError):
    """A stored plan does not fit the table as it is here."""


@dataclass(frozen=True)
class KeyColumn:
    name: str
    data_type: str
    charset: str | None = None
    collation: str | None = None

    @property
    def form(self) -> str:
        if self.data_type in INTEGER_TYPES:
            return "integer"
        if self.data_type in NUMBER_TYPES:
            return "number"
        if self.data_type in TEMPORAL_TYPES:
            return "temporal"
        return "hex"

    def fetch_expression(self) -> str:
        """How a boundary value of this column is read: as text, or as hex."""
        ident = quote_ident(self.name)
        return f"HEX({ident})" if self.form == "hex" else f"CAST({ident} AS CHAR)"

    def literal(self, value: str) -> str:
        """The SQL literal of a boundary value, compared in the column's collation."""
        if not isinstance(value, str) or not _VALUE_FORMS[self.form].fullmatch(value):
            raise BadPlan(f"boundary value {value!r} is not a valid {self.data_type} for column {self.name!r}")
        if self.form in ("integer", "number"):
            return value
        if self.form == "temporal":
            return f"'{value}'"
        if self.data_type in BINARY_TYPES:
            return f"X'{value}'"
        if not (self.charset and self.collation and _NAME.fullmatch(self.charset) and _NAME.fullmatch(self.collation)):
            raise BadPlan(f"column {self.name!r} has no usable character set or collation")
        return f"_{self.charset} X'{value}' COLLATE {self.collation}"


@dataclass(frozen=True)
class ChunkKey:
    """The index ranges are taken on: the primary key, else InnoDB's clustered unique key."""

    index: str
    columns: tuple[KeyColumn, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def hint(self) -> str:
        return f"FORCE INDEX ({quote_ident(self.index)})"


@dataclass(frozen=True)
class KeyRange:
    """``lower <= (columns) < upper``; ``None`` is unbounded on that side.

    ``columns`` is a prefix of the key's columns: an arithmetic split bounds
    only the first column, a walk bounds them all.
    """

    columns: tuple[str, ...]
    lower: tuple[str, ...] | None
    upper: tuple[str, ...] | None

    def predicate(self, key: ChunkKey) -> str:
        """The WHERE condition, with literals rendered from the local key."""
        by_name = {c.name: c for c in key.columns}
        if list(self.columns) != key.names[: len(self.columns)] or not self.columns:
            raise BadPlan(f"range columns {list(self.columns)} are not a prefix of key {key.index} {key.names}")
        columns = [by_name[name] for name in self.columns]
        parts = []
        if self.lower is not None:
            parts.append(_lexicographic(columns, self.lower, ">", ">="))
        if self.upper is not None:
            parts.append(_lexicographic(columns, self.upper, "<", "<"))
        return " AND ".join(parts) or "TRUE"

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "lower": None if self.lower is None else list(self.lower),
            "upper": None if self.upper is None else list(self.upper),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "KeyRange":
        def values(v: Any) -> tuple[str, ...] | None:
            return None if v is None else tuple(str(x) for x in v)

        return cls(tuple(str(c) for c in data["columns"]), values(data.get("lower")), values(data.get("upper")))


def _lexicographic(columns: Sequence[KeyColumn], values: Sequence[str], strict: str, last: str) -> str:
    """``(c1, c2, ...) <op> (v1, v2, ...)`` spelled out so the range optimizer uses the index."""
    if len(values) != len(columns):
        raise BadPlan(f"a boundary has {len(values)} values for {len(columns)} columns")
    column, value = columns[0], values[0]
    ident, literal = quote_ident(column.name), column.literal(value)
    if len(columns) == 1:
        return f"{ident} {last} {literal}"
    rest = _lexicographic(columns[1:], values[1:], strict, last)
    return f"({ident} {strict} {literal} OR ({ident} = {literal} AND {rest}))"


# --- finding the key ------------------------------------------------------------


def find_key(conn: pymysql.Connection, db: str, table: str) -> ChunkKey | None:
    """The primary key, else the first unique key of NOT NULL columns; None if unusable.

    Without a primary key InnoDB clusters rows on such a unique key, so a
    range of it is still a contiguous read.  Prefix parts and column types
    whose comparison does not follow the index order make a key unusable.
    """
    rows = query_all(
        conn,
        "SELECT s.INDEX_NAME, s.COLUMN_NAME, s.SUB_PART, c.DATA_TYPE, c.CHARACTER_SET_NAME,"
        " c.COLLATION_NAME, c.IS_NULLABLE"
        " FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c"
        " ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME"
        " WHERE s.TABLE_SCHEMA = %s AND s.TABLE_NAME = %s AND s.NON_UNIQUE = 0"
        " ORDER BY s.INDEX_NAME <> 'PRIMARY', s.INDEX_NAME, s.SEQ_IN_INDEX",
        (db, table),
    )
    indexes: dict[str, list[tuple]] = {}
    for row in rows:
        indexes.setdefault(str(row[0]), []).append(row)
    for name, columns in indexes.items():
        usable = all(
            sub_part is None and str(data_type).lower() in SUPPORTED_TYPES and nullable == "NO"
            for _, _, sub_part, data_type, _, _, nullable in columns
        )
        if usable:
            return ChunkKey(
                name,
                tuple(
                    KeyColumn(str(col), str(data_type).lower(), charset and str(charset), collation and str(collation))
                    for _, col, _, data_type, charset, collation, _ in columns
                ),
            )
    return None


# --- splitting --------------------------------------------------------------------


def wanted_ranges(estimated_bytes: int, chunk_mb: int) -> int:
    """How many ranges a table (or partition) of this estimated size gets."""
    if chunk_mb <= 0:
        return 1
    chunk = chunk_mb * 1024 * 1024
    return max(1, -(-estimated_bytes // chunk)) if estimated_bytes > chunk else 1


def integer_boundaries(low: int, high: int, parts: int) -> list[int]:
    """``parts - 1`` increasing cut points splitting ``[low, high]`` evenly; [] if it cannot."""
    span = high - low + 1
    if parts <= 1 or span < parts:
        return []
    return [low + span * i // parts for i in range(1, parts)]


Estimate = Callable[[str, "str | None"], int]  # estimated rows with lower <= key (< upper)
SKEW_FACTOR = 4


def skewed(cuts: Sequence[str], low: str, share: int, estimate: Estimate, empty: Callable[[str, str | None], bool]) -> bool:
    """Whether even cuts of the key's span (from ``low``, its MIN) would make badly uneven ranges."""
    pairs = list(zip([low, *cuts], [*cuts, None]))
    return any(empty(a, b) for a, b in pairs) or any(estimate(a, b) > SKEW_FACTOR * share for a, b in pairs)


def ranges_from(columns: Sequence[str], boundaries: Sequence[tuple[str, ...]]) -> list[KeyRange]:
    """Consecutive ranges cut at ``boundaries``: open below the first, open above the last."""
    cuts: list[tuple[str, ...] | None] = [None, *boundaries, None]
    names = tuple(columns)
    return [KeyRange(names, cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1)]


def split(
    conn: pymysql.Connection,
    source: str,
    key: ChunkKey,
    parts: int,
    rows_estimate: int,
) -> list[KeyRange]:
    """Ranges of ``source`` (a table, or ``table PARTITION (p)``) on ``key``.

    ``conn`` must use the dump sessions' time zone (UTC): a TIMESTAMP
    boundary is printed, and later compared, in the session's time zone.
    """
    if parts <= 1:
        return []
    first = key.columns[0]
    scale = even_scale(first)
    if scale is not None:
        ident = quote_ident(first.name)
        row = query_one(
            conn, f"SELECT CAST(MIN({ident}) AS CHAR), CAST(MAX({ident}) AS CHAR) FROM {source} {key.hint()}"
        )
        if row is None or row[0] is None:
            return []  # empty: one unit
        cuts = _even_cuts(scale, str(row[0]), str(row[1]), parts)
        share = max(1, rows_estimate // parts)
        if cuts and not skewed(cuts, str(row[0]), share, *_range_probes(conn, source, key)):
            log.info("event=key_split source=%s method=even ranges=%d", source, len(cuts) + 1)
            return ranges_from([first.name], [(c,) for c in cuts])
    elif first.form == "hex":
        try:
            sampled = sample_cuts(conn, source, key, parts, rows_estimate)
        except pymysql.MySQLError as exc:  # a character set the probes do not suit: walk instead
            log.warning("event=key_sample_failed source=%s error=%s", source, exc)
            sampled = None
        if sampled is not None:
            log.info("event=key_split source=%s method=sample ranges=%d", source, len(sampled) + 1)
            return ranges_from([first.name], [(c,) for c in sampled])
    boundaries = walk(conn, source, key, parts, rows_estimate)
    log.info("event=key_split source=%s method=walk ranges=%d", source, len(boundaries) + 1)
    return ranges_from(key.names, boundaries)


@dataclass(frozen=True)
class Scale:
    """A first key column's values as integers, so that its span can be cut evenly."""

    to_int: Callable[[str], int]
    to_text: Callable[[int], str]


_EPOCH = dt.datetime(1, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


def _datetime_to_int(text: str) -> int:
    return (dt.datetime.fromisoformat(text) - _EPOCH) // _MICROSECOND


def _int_to_datetime(value: int) -> str:
    return (_EPOCH + value * _MICROSECOND).isoformat(sep=" ", timespec="microseconds")


def even_scale(column: KeyColumn) -> Scale | None:
    """Integers as they are, dates as days, DATETIME and TIMESTAMP as microseconds; else None."""
    if column.data_type in INTEGER_TYPES:
        return Scale(int, str)
    if column.data_type == "date":
        return Scale(lambda t: dt.date.fromisoformat(t).toordinal(), lambda n: dt.date.fromordinal(n).isoformat())
    if column.data_type in ("datetime", "timestamp"):
        return Scale(_datetime_to_int, _int_to_datetime)
    return None


def _even_cuts(scale: Scale, low: str, high: str, parts: int) -> list[str]:
    """Cuts of ``[low, high]`` in the column's own text; [] for values the scale cannot read (zero dates)."""
    try:
        return [scale.to_text(c) for c in integer_boundaries(scale.to_int(low), scale.to_int(high), parts)]
    except (ValueError, OverflowError):
        return []


def _range_probes(
    conn: pymysql.Connection, source: str, key: ChunkKey
) -> tuple[Estimate, Callable[[str, str | None], bool]]:
    """Two index-only looks at a range of the first key column: estimated rows, and emptiness."""
    column = key.columns[0]
    ident = quote_ident(column.name)

    def where(lower: str, upper: str | None) -> str:
        bounded = f"{ident} >= {column.literal(lower)}"
        return bounded if upper is None else f"{bounded} AND {ident} < {column.literal(upper)}"

    def estimate(lower: str, upper: str | None) -> int:
        with conn.cursor() as cur:
            cur.execute(f"EXPLAIN SELECT 1 FROM {source} {key.hint()} WHERE {where(lower, upper)}")
            rows_at = [d[0].lower() for d in cur.description].index("rows")
            return sum(int(r[rows_at] or 0) for r in cur.fetchall())

    def empty(lower: str, upper: str | None) -> bool:
        return query_one(conn, f"SELECT 1 FROM {source} {key.hint()} WHERE {where(lower, upper)} LIMIT 1") is None

    return estimate, empty


PROBES_PER_RANGE = 8
PROBE_BYTES = 8


def probe_points(low: bytes, high: bytes, count: int, radix: int) -> list[bytes]:
    """``count`` byte strings spread evenly between ``low`` and ``high`` in byte order.

    After the common prefix, the next ``PROBE_BYTES`` bytes are read as a
    number in base ``radix`` (128 keeps every byte ASCII, valid in any
    character set; 256 for binary keys) and the span between the two numbers
    is divided evenly.
    """
    common = 0
    while common < min(len(low), len(high)) and low[common] == high[common]:
        common += 1
    prefix = low[:common]

    def number(tail: bytes) -> int:
        digits = tail[:PROBE_BYTES].ljust(PROBE_BYTES, b"\0")
        value = 0
        for byte in digits:
            value = value * radix + min(byte, radix - 1)
        return value

    def text(value: int) -> bytes:
        digits = bytearray()
        for _ in range(PROBE_BYTES):
            value, digit = divmod(value, radix)
            digits.append(digit)
        return prefix + bytes(reversed(digits)).rstrip(b"\0")

    first, last = number(low[common:]), number(high[common:])
    return [text(first + (last - first) * i // count) for i in range(1, count)]


def sample_cuts(
    conn: pymysql.Connection, source: str, key: ChunkKey, parts: int, rows_estimate: int
) -> list[str] | None:
    """Cuts of a string or binary first key column from index dives, not a scan; None if uneven.

    Probes spread over the key's byte range each find, with one dive, the
    next real key; the server sorts those keys in the column's collation
    (byte order and collation order differ).  Where two consecutive keys
    found hold more than a range's share of rows between them (few distinct
    leading characters, a case-insensitive collation, a cluster), that gap
    alone is walked.  Consecutive keys are then grouped into ranges of about
    equal estimated rows.  Uniform keys (UUIDs, hashes) need no walking.
    """
    column = key.columns[0]
    ident = quote_ident(column.name)
    row = query_one(conn, f"SELECT HEX(MIN({ident})), HEX(MAX({ident})) FROM {source} {key.hint()}")
    if row is None or row[0] is None:
        return []
    low, high = str(row[0]), str(row[1])
    radix = 256 if column.data_type in BINARY_TYPES else 128
    found: set[str] = set()
    for probe in probe_points(bytes.fromhex(low), bytes.fromhex(high), parts * PROBES_PER_RANGE, radix):
        hit = query_one(
            conn,
            f"SELECT HEX({ident}) FROM {source} {key.hint()}"
            f" WHERE {ident} >= {column.literal(probe.hex().upper())} ORDER BY {ident} LIMIT 1",
        )
        if hit is not None and hit[0] != low:
            found.add(str(hit[0]))
    estimate, _ = _range_probes(conn, source, key)
    keys = collation_sorted(conn, column, sorted(found))
    segments = [estimate(a, b) for a, b in zip([low, *keys], [*keys, None])]
    share = max(1, sum(segments) // parts)
    step = max(1, rows_estimate // (parts * 4))  # fine enough for grouping to come out even
    for start, end, rows in zip([low, *keys], [*keys, None], segments):
        if rows > share // 2:
            found.update(walk_between(conn, source, key, start, end, step, 8 * parts))
    if len(found) > len(keys):  # gaps were walked
        keys = collation_sorted(conn, column, sorted(found))
        segments = [estimate(a, b) for a, b in zip([low, *keys], [*keys, None])]
    return group_cuts(keys, segments, parts) if len(keys) >= parts - 1 else None


def walk_between(
    conn: pymysql.Connection, source: str, key: ChunkKey, start: str, end: str | None, step: int, limit: int
) -> list[str]:
    """First-column values every ``step`` rows from ``start`` up to ``end`` (hex), at most ``limit``.

    Reads only the index entries of that gap.  A value repeated more than
    ``step`` times (a composite key) is stepped over to the next distinct one.
    """
    column = key.columns[0]
    ident = quote_ident(column.name)
    upper = "" if end is None else f" AND {ident} < {column.literal(end)}"
    values: list[str] = []
    current, strict = start, False
    while len(values) < limit:
        op, offset = (">", 0) if strict else (">=", step)
        hit = query_one(
            conn,
            f"SELECT HEX({ident}) FROM {source} {key.hint()} WHERE {ident} {op} {column.literal(current)}{upper}"
            f" ORDER BY {ident} LIMIT 1 OFFSET {offset}",
        )
        if hit is None:
            break
        strict = hit[0] == current
        if not strict:
            values.append(str(hit[0]))
            current = str(hit[0])
    return values


def group_cuts(keys: Sequence[str], segments: Sequence[int], parts: int) -> list[str] | None:
    """Up to ``parts - 1`` of ``keys`` as cuts, each closing about a ``parts``-th of the estimated rows.

    ``segments[i]`` is the estimate of rows before ``keys[i]`` (since the
    previous key); the last segment is from the last key on.  None when the
    ranges would still be badly uneven: a cluster the probes did not split.
    """
    target = max(1, sum(segments) // parts)
    cuts: list[str] = []
    ranges = [0]
    for key, rows in zip(keys, segments):
        ranges[-1] += rows
        if ranges[-1] >= target and len(cuts) < parts - 1:
            cuts.append(key)
            ranges.append(0)
    ranges[-1] += sum(segments[len(keys) :])
    return None if max(ranges) > 2 * target else cuts


def collation_sorted(conn: pymysql.Connection, column: KeyColumn, values: Sequence[str]) -> list[str]:
    """``values`` (hex) in the order the server compares them in ``column``'s collation."""
    literals = [column.literal(v) for v in values]
    union = " UNION ALL ".join(f"SELECT {lit} AS v" for lit in literals)
    rows = query_all(conn, f"SELECT HEX(v) FROM ({union}) AS probes ORDER BY v")
    return [str(r[0]) for r in rows]


def walk(conn: pymysql.Connection, source: str, key: ChunkKey, parts: int, rows_estimate: int) -> list[tuple[str, ...]]:
    """Boundaries every ``rows_estimate / parts`` rows along the key's index."""
    step = max(1, rows_estimate // parts)
    fetch = ", ".join(c.fetch_expression() for c in key.columns)
    order = ", ".join(quote_ident(c.name) for c in key.columns)
    boundaries: list[tuple[str, ...]] = []
    while len(boundaries) < parts * MAX_RANGES_FACTOR:
        where = ""
        if boundaries:
            where = "WHERE " + KeyRange(tuple(key.names), boundaries[-1], None).predicate(key)
        row = query_one(
            conn, f"SELECT {fetch} FROM {source} {key.hint()} {where} ORDER BY {order} LIMIT 1 OFFSET {step}"
        )
        if row is None:
            break
        boundaries.append(tuple(str(v) for v in row))
    return boundaries
