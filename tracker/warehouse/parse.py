"""Text-format values -> typed Arrow arrays, vectorised with Arrow compute.

Each parser takes one column of a block as a ``large_binary`` array (the
un-escaped bytes the server wrote, NULLs already NULL) and returns the typed
array.  Conversions run over whole arrays; only when one fails does a slow
per-value pass find the first offending value, so a bad value is reported by
position (``BadValue``) and never skipped or replaced.

Zero and partial dates are the one kind of value that may become NULL: the
temporal parsers return a mask of those values next to the array, and the
caller decides (count them, or fail when strict).
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from tracker.store import charsets
from tracker.warehouse import types as t


class BadValue(Exception):
    """Value ``index`` of the array cannot be converted; ``why`` says how it is wrong."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"value {index}: {why}")
        self.index = index
        self.why = why


Parsed = tuple[pa.Array, "pa.BooleanArray | None"]  # the values, and which became NULL (zero dates)

_UTF8 = {"utf8mb4", "utf8mb3", "utf8"}
_DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATETIME_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"
_TIME = r"^(?P<sign>-?)(?P<h>[0-9]{1,4}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]{1,6}))?$"
_DECIMAL_SHAPE = r"^-?[0-9]+(\.[0-9]+)?$"
_MAX_OFFSET = 2**31 - 1
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_FOUR_BYTE_LEAD = re.compile(rb"[\xf0-\xff]")


def parse(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    """The column's values as ``plan.arrow_type``; raises ``BadValue``."""
    return _PARSERS[plan.kind](plan, raw)


# -- helpers -----------------------------------------------------------------


def _first_failure(raw: pa.Array, convert: Callable[[pa.Array], object], why: str) -> BadValue:
    """The first value that ``convert`` rejects on its own (the slow path, errors only)."""
    for index in range(len(raw)):
        if not raw[index].is_valid:
            continue
        try:
            convert(raw.slice(index, 1))
        except (pa.ArrowException, ValueError, UnicodeDecodeError) as exc:
            return BadValue(index, f"{why} ({_reason(exc)})")
    return BadValue(0, why)  # the array failed as a whole but no value alone: report the first


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _all(mask: pa.Array) -> bool:
    """True when no value of a boolean array is false (NULLs do not count)."""
    return pc.all(mask).as_py() is not False


def _ascii(raw: pa.Array, why: str) -> pa.Array:
    """Numeric and temporal text is ASCII: the same buffers as large_string, or BadValue.

    A view, not a cast: ASCII is valid UTF-8, so checking ASCII is all the
    validation the strings need.
    """
    text = raw.view(pa.large_string())
    is_ascii = pc.string_is_ascii(text)
    if not _all(is_ascii):
        raise BadValue(pc.index(is_ascii, False).as_py(), f"{why} (not ASCII)")
    return text


def _cast(text: pa.Array, target: pa.DataType, why: str) -> pa.Array:
    try:
        return pc.cast(text, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise _first_failure(text, lambda a: pc.cast(a, target), why) from None


def _check_shape(text: pa.Array, pattern: str, why: str) -> None:
    ok = pc.match_substring_regex(text, pattern)
    if not _all(ok):
        raise BadValue(pc.index(ok, False).as_py(), why)


# -- numbers -----------------------------------------------------------------


def _integer(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    why = f"not an integer of {plan.arrow_type}"
    return _cast(_ascii(raw, why), plan.arrow_type, why), None


def _decimal(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    why = f"not a decimal of {plan.arrow_type}"
    text = _ascii(raw, why)
    _check_shape(text, _DECIMAL_SHAPE, why)
    return _cast(text, plan.arrow_type, why), None


def _decimal_text(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    text = _ascii(raw, "not a decimal number")
    _check_shape(text, _DECIMAL_SHAPE, "not a decimal number")
    return text.cast(pa.string()), None


def _float(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    why = "not a floating-point number"
    doubles = _cast(_ascii(raw, why), pa.float64(), why)
    if plan.arrow_type == pa.float64():
        return doubles, None
    # float-as-double: the double of a float's exact value narrows back exactly.
    return doubles.cast(pa.float32(), safe=False), None


def _bool(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    why = "not a BIT(1) value (0 or 1)"
    text = _ascii(raw, why)
    _check_shape(text, r"^[01]$", why)
    return _cast(text, pa.bool_(), why), None


# -- dates and times -----------------------------------------------------------


def _temporal(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    """DATE, DATETIME, TIMESTAMP: zero/partial (and impossible) dates become NULL, marked."""
    why = "not a date" if plan.kind == t.DATE else "not a date and time"
    text = _ascii(raw, why)
    naive = pa.date32() if plan.kind == t.DATE else pa.timestamp("us")
    # A 00 year, month or day: "0000-..." or "-00" (only the date part has dashes).
    zero = pc.fill_null(pc.or_(pc.starts_with(text, "0000"), pc.match_substring(text, "-00")), False)
    if pc.any(zero).as_py():
        text = pc.if_else(zero, pa.scalar(None, text.type), text)
    try:
        values = pc.cast(text, naive)
    except pa.ArrowInvalid:
        _check_shape(text, _DATE_SHAPE if plan.kind == t.DATE else _DATETIME_SHAPE, why)
        # A date no calendar has (2026-02-31, stored under ALLOW_INVALID_DATES): like a zero date.
        impossible = [_rejects(text.slice(i, 1), naive) for i in range(len(text))]
        zero = pc.or_(zero, pa.array(impossible, pa.bool_()))
        values = pc.cast(pc.if_else(zero, pa.scalar(None, text.type), text), naive)
    if plan.kind == t.TIMESTAMP:
        values = values.cast(plan.arrow_type)  # the dump session's time zone is UTC
    return values, zero if pc.any(zero).as_py() else None


def _rejects(value: pa.Array, target: pa.DataType) -> bool:
    if not value[0].is_valid:
        return False
    try:
        pc.cast(value, target)
    except pa.ArrowInvalid:
        return True
    return False


def _time(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    """``[-]H:MM:SS[.ffffff]`` -> signed microseconds."""
    why = "not a TIME value"
    valid = pc.is_valid(raw)
    text = pc.fill_null(_ascii(raw, why), "0:00:00")
    parts = pc.extract_regex(text, _TIME)
    if parts.null_count:
        raise BadValue(pc.index(pc.is_valid(parts), False).as_py(), why)
    fields = {name: pc.struct_field(parts, name) for name in ("sign", "h", "m", "s", "f")}
    hours, minutes, seconds = (fields[k].cast(pa.int64()) for k in ("h", "m", "s"))
    fraction = pc.utf8_rpad(fields["f"], 6, "0").cast(pa.int64())
    whole = pc.add(pc.multiply(pc.add(pc.multiply(pc.add(pc.multiply(hours, 60), minutes), 60), seconds), 1_000_000), fraction)
    signed = pc.if_else(pc.equal(fields["sign"], "-"), pc.negate(whole), whole)
    return pc.if_else(valid, signed, pa.scalar(None, pa.int64())), None


# -- strings and bytes -----------------------------------------------------------


def _offsets(raw: pa.Array) -> memoryview:
    """The ``len(raw) + 1`` int64 offsets of a large_binary/large_string array."""
    return memoryview(raw.buffers()[1]).cast("q")[raw.offset : raw.offset + len(raw) + 1]


def _check_size(raw: pa.Array) -> None:
    if len(raw):
        offsets = _offsets(raw)
        if offsets[-1] - offsets[0] > _MAX_OFFSET:
            raise BadValue(0, "more than 2 GiB of values in one block")


def _text(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    charset = str(plan.charset).lower()
    _check_size(raw)
    if charset in _UTF8:
        try:
            text = raw.cast(pa.large_string())  # Arrow's UTF-8 validation (checked against Python's)
        except pa.ArrowInvalid:
            raise _first_failure(raw, lambda a: _decode_each(a, charset), f"not valid {charset}") from None
        if charset != "utf8mb4" and _FOUR_BYTE_LEAD.search(_data(raw)):
            _check_bmp(text, charset)
        return text.cast(pa.string()), None
    if _ascii_is_itself(charset) and not _NON_ASCII.search(_data(raw)):
        # Plain ASCII (most text in most charsets) reads the same in all of them.
        return raw.view(pa.large_string()).cast(pa.string()), None
    return pa.array(_decode_all(raw, charset), pa.string()), None


def _data(raw: pa.Array) -> memoryview:
    """The bytes of the array's values, without copying."""
    data = raw.buffers()[2]
    if data is None or not len(raw):
        return memoryview(b"")
    offsets = _offsets(raw)
    return memoryview(data)[offsets[0] : offsets[-1]]


@lru_cache(maxsize=None)
def _ascii_is_itself(charset: str) -> bool:
    """Whether every ASCII byte is that character in ``charset`` (not in ucs2/utf16/utf32)."""
    ascii_bytes = bytes(range(128))
    try:
        return charsets.decode(ascii_bytes, charset) == ascii_bytes.decode("ascii")
    except (UnicodeDecodeError, ValueError):
        return False


def _check_bmp(text: pa.Array, charset: str) -> None:
    """utf8mb3 holds no 4-byte sequences (as tracker.store.charsets.decode insists)."""
    four = pc.match_substring_regex(text, "[\U00010000-\U0010ffff]")
    if pc.any(four).as_py():
        raise BadValue(pc.index(four, True).as_py(), f"not valid {charset} (a character beyond U+FFFF)")


def _decode_each(values: pa.Array, charset: str) -> list[str | None]:
    return [None if v is None else charsets.decode(v, charset) for v in values.to_pylist()]


def _decode_all(raw: pa.Array, charset: str) -> list[str | None]:
    """Every value decoded from ``charset``; BadValue names the first invalid one.

    Single-byte charsets decode the block's data buffer in one call and slice
    it (one character per byte); others go value by value.
    """
    if len(raw):
        bounds = _offsets(raw).tolist()
        start, end = bounds[0], bounds[-1]
        try:
            whole = charsets.decode(_data(raw).tobytes(), charset)
        except (UnicodeDecodeError, ValueError):
            whole = None
        # As many characters as bytes: no character spans two bytes, let alone two values.
        if whole is not None and len(whole) == end - start:
            if start:
                bounds = [b - start for b in bounds]
            values: list[str | None] = [whole[a:b] for a, b in zip(bounds, bounds[1:])]
            if raw.null_count:
                values = [v if ok else None for v, ok in zip(values, raw.is_valid().to_pylist())]
            return values
    out: list[str | None] = []
    for index, value in enumerate(raw.to_pylist()):
        try:
            out.append(None if value is None else charsets.decode(value, charset))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadValue(index, f"not valid {charset} ({_reason(exc)})") from None
    return out


def _binary(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    _check_size(raw)
    return raw.cast(pa.binary()), None


def _geometry(plan: t.ColumnPlan, raw: pa.Array) -> Parsed:
    """MariaDB's spatial value: a little-endian 4-byte SRID, then the WKB."""
    _check_size(raw)
    short = pc.fill_null(pc.less(pc.binary_length(raw), 9), False)  # SRID + the shortest WKB header
    if pc.any(short).as_py():
        raise BadValue(pc.index(short, True).as_py(), "not a spatial value (shorter than SRID + WKB header)")
    # An explicit stop: pyarrow 26's binary_slice without one fails ("Negative buffer resize").
    wkb = pc.binary_slice(raw, 4, _MAX_OFFSET).cast(pa.binary())
    srid = _srids(raw)
    mask = pc.is_null(raw)
    return pa.StructArray.from_arrays([wkb, srid], fields=list(t.GEOMETRY_TYPE), mask=mask), None


def _srids(raw: pa.Array) -> pa.Array:
    heads = pc.binary_slice(pc.fill_null(raw, b"\x00\x00\x00\x00"), 0, 4).cast(pa.binary())
    offsets, data = heads.buffers()[1:3]
    if sys.byteorder == "little" and data is not None and heads.offset == 0 and memoryview(offsets).cast("i")[0] == 0:
        return pa.Array.from_buffers(pa.uint32(), len(heads), [None, data]).cast(pa.int64())
    return pa.array([int.from_bytes(v, "little") for v in heads.to_pylist()], pa.int64())  # pragma: no cover


_PARSERS: dict[str, Callable[[t.ColumnPlan, pa.Array], Parsed]] = {
    t.INT: _integer,
    t.DECIMAL: _decimal,
    t.DECIMAL_TEXT: _decimal_text,
    t.FLOAT32: _float,
    t.FLOAT64: _float,
    t.BOOL: _bool,
    t.DATE: _temporal,
    t.DATETIME: _temporal,
    t.TIMESTAMP: _temporal,
    t.TIME: _time,
    t.TEXT: _text,
    t.BINARY: _binary,
    t.GEOMETRY: _geometry,
}
