"""The warehouse decoder's pure mappings: text-format values -> Arrow, value by value."""

from __future__ import annotations

import datetime as dt
import math
import struct
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.integration.alltypes import same_value
from tracker.errors import TrackerError
from tracker.store.textformat import BlockParser
from tracker.warehouse.decode import DecodeError, DecodeReport, arrow_schema, decode_block, show_value
from tracker.warehouse.types import GEOMETRY_TYPE

MAX_TIME_US = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999


def column(type_: str, name: str = "c", **extra) -> dict:
    data_type = type_.split("(")[0].split(" ")[0]
    entry = {"name": name, "type": type_, "data_type": data_type, "encoding": "text", "generated": False,
             "charset": None, "collation": None}
    if data_type == "bit":
        entry["encoding"] = "bit-as-unsigned"
    if data_type == "float":
        entry["encoding"] = "float-as-double"
    entry.update(extra)
    return entry


def encode_field(value: bytes | None) -> bytes:
    if value is None:
        return b"\\N"
    return value.replace(b"\\", b"\\\\").replace(b"\t", b"\\\t").replace(b"\n", b"\\\n")


def decode(columns: list[dict], rows: list[tuple], strict: bool = False, block_bytes: int = 1 << 20):
    """Encode ``rows`` in the text format, parse and decode them; (column -> values, report)."""
    text = b"".join(b"\t".join(encode_field(v) for v in row) + b"\n" for row in rows)
    schema = arrow_schema(columns)
    report = DecodeReport()
    parser = BlockParser(len(columns), block_bytes)
    batches = []
    first = 1
    for block in [*parser.feed(text), *parser.finish()]:
        batches.append(decode_block(block, columns, schema, report, strict, "part-00000", first_row=first))
        first += block.rows
    table = pa.Table.from_batches(batches, schema=schema)
    assert table.schema == schema
    return {name: table.column(name).to_pylist() for name in table.column_names}, report


def one(type_: str, values: list[bytes | None], **extra):
    got, report = decode([column(type_, **extra)], [(v,) for v in values])
    return got["c"], report


# -- the schema -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_, arrow",
    [
        ("tinyint(4)", pa.int8()), ("tinyint(3) unsigned", pa.int16()), ("smallint(6)", pa.int16()),
        ("smallint(5) unsigned", pa.int32()), ("mediumint(9)", pa.int32()), ("mediumint(8) unsigned", pa.int32()),
        ("int(11)", pa.int32()), ("int(10) unsigned", pa.int64()), ("int(5) unsigned zerofill", pa.int64()),
        ("bigint(20)", pa.int64()), ("bigint(20) unsigned", pa.decimal128(20, 0)),
        ("decimal(10,2)", pa.decimal128(10, 2)), ("decimal(38,38)", pa.decimal128(38, 38)),
        ("decimal(10,2) unsigned", pa.decimal128(10, 2)), ("decimal(65,30)", pa.string()),
        ("float", pa.float32()), ("float(7,3)", pa.float32()), ("double", pa.float64()),
        ("bit(1)", pa.bool_()), ("bit(10)", pa.int64()), ("bit(63)", pa.int64()), ("bit(64)", pa.decimal128(20, 0)),
        ("date", pa.date32()), ("datetime(6)", pa.timestamp("us")), ("timestamp(3)", pa.timestamp("us", "UTC")),
        ("time(6)", pa.int64()), ("year(4)", pa.int16()),
        ("binary(8)", pa.binary()), ("varbinary(10)", pa.binary()), ("longblob", pa.binary()),
        ("geometry", GEOMETRY_TYPE), ("point", GEOMETRY_TYPE), ("uuid", pa.string()), ("inet6", pa.string()),
        ("json", pa.string()),
    ],
)
def test_arrow_types(type_: str, arrow: pa.DataType) -> None:
    field = arrow_schema([column(type_)]).field("c")
    assert field.type == arrow
    assert field.nullable
    assert field.metadata[b"mysql.type"] == type_.encode()


def test_text_types_need_their_charset() -> None:
    schema = arrow_schema([
        column("varchar(10)", "a", charset="latin1", collation="latin1_swedish_ci"),
        column("enum('x','')", "b", charset="utf8mb4"),
        column("longtext", "c", charset="utf8mb4"),
        column("varchar(10)", "d"),  # charset null: a binary string
    ])
    assert [f.type for f in schema] == [pa.string(), pa.string(), pa.string(), pa.binary()]
    assert schema.field("a").metadata[b"mysql.charset"] == b"latin1"
    assert schema.field("a").metadata[b"mysql.collation"] == b"latin1_swedish_ci"


def test_metadata_marks_time_unit_wide_decimals_generated_and_periods() -> None:
    schema = arrow_schema([
        column("time(6)", "t"), column("decimal(65,30)", "d"), column("int(11)", "g", generated=True),
        column("timestamp(6)", "row_start", period="start"),
    ])
    assert schema.field("t").metadata[b"tracker.unit"] == b"microseconds"
    assert b"DECIMAL(65,30)" in schema.field("d").metadata[b"tracker.note"]
    assert schema.field("g").metadata[b"mysql.generated"] == b"true"
    assert schema.field("row_start").metadata[b"tracker.period"] == b"start"


def test_old_manifests_without_charset_decode_as_utf8mb4() -> None:
    entry = column("varchar(10)")
    del entry["charset"]
    assert one("varchar(10)", [b"caf\xc3\xa9"], charset=None)[0] == [b"caf\xc3\xa9"]
    got, _ = decode([entry], [(b"caf\xc3\xa9",)])
    assert got["c"] == ["café"]


def test_bad_type_arguments_are_one_line_errors() -> None:
    with pytest.raises(DecodeError, match="column 'c'.*DECIMAL"):
        arrow_schema([column("decimal(80,90)")])


# -- integers, decimals, floats ----------------------------------------------------------


@pytest.mark.parametrize(
    "type_, lo, hi",
    [
        ("tinyint(4)", -128, 127), ("tinyint(3) unsigned", 0, 255), ("smallint(6)", -32768, 32767),
        ("smallint(5) unsigned", 0, 65535), ("mediumint(9)", -8388608, 8388607), ("mediumint(8) unsigned", 0, 16777215),
        ("int(11)", -2147483648, 2147483647), ("int(10) unsigned", 0, 4294967295),
        ("bigint(20)", -9223372036854775808, 9223372036854775807), ("year(4)", 0, 2155),
    ],
)
def test_integer_ranges(type_: str, lo: int, hi: int) -> None:
    assert one(type_, [str(lo).encode(), str(hi).encode(), None, b"0"])[0] == [lo, hi, None, 0]
    if "unsigned" in type_ or type_.startswith(("year", "mediumint")):
        return  # widened: the Arrow type holds more than MySQL's range
    with pytest.raises(DecodeError, match=r"part-00000: column 'c' row 2: not an integer.*'%d'" % (hi + 1)):
        one(type_, [b"1", str(hi + 1).encode()])


def test_bigint_unsigned_and_zerofill() -> None:
    assert one("bigint(20) unsigned", [b"18446744073709551615", b"0"])[0] == [Decimal(18446744073709551615), Decimal(0)]
    assert one("int(5) unsigned zerofill", [b"00042", b"4294967295"])[0] == [42, 4294967295]


def _mysql_decimal_text(digits: int, scale: int, negative: bool) -> str:
    """DECIMAL as the server prints it: all ``scale`` fraction digits, a leading 0 before the point."""
    text = str(digits).rjust(scale + 1, "0")
    text = f"{text[:-scale]}.{text[-scale:]}" if scale else text
    return f"-{text}" if negative and digits else text


@given(st.data())
def test_decimal_text_round_trips(data) -> None:
    precision = data.draw(st.integers(1, 65))
    scale = data.draw(st.integers(0, min(precision, 30)))
    digits = data.draw(st.integers(0, 10**precision - 1))
    text = _mysql_decimal_text(digits, scale, data.draw(st.booleans()))
    value = Decimal(text)
    got = one(f"decimal({precision},{scale})", [text.encode()])[0][0]
    if precision <= 38:
        assert isinstance(got, Decimal) and got == value and got.as_tuple().exponent == -scale
    else:
        assert got == text  # the exact text, as the server printed it


def test_decimal_out_of_its_type_is_an_error() -> None:
    with pytest.raises(DecodeError, match="row 1: not a decimal"):
        one("decimal(5,2)", [b"1234.5"])
    with pytest.raises(DecodeError, match="not a decimal"):
        one("decimal(65,30)", [b"1e5"])


def _mariadb_double_text(value: float) -> str:
    """How MariaDB prints a double: shortest round-trip digits, exponent without '+'."""
    text = repr(value)
    if text in ("0.0", "-0.0"):
        return text[:-2]
    return text.replace("e+", "e").replace(".0e", "e") if "e" in text else text.removesuffix(".0")


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float_is_bit_exact(value: float) -> None:
    text = _mariadb_double_text(value)  # the dump's CAST(f AS DOUBLE)
    got = one("float", [text.encode()])[0][0]
    assert struct.pack("<f", got) == struct.pack("<f", value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_double_is_bit_exact(value: float) -> None:
    got = one("double", [_mariadb_double_text(value).encode()])[0][0]
    assert struct.pack("<d", got) == struct.pack("<d", value)


def test_negative_zero_and_extremes() -> None:
    got = one("double", [b"-0", b"0", b"1.7976931348623157e308", b"5e-324", b"-2.2250738585072014e-308"])[0]
    assert [struct.pack("<d", v) for v in got] == [struct.pack("<d", v) for v in
                                                  (-0.0, 0.0, 1.7976931348623157e308, 5e-324, -2.2250738585072014e-308)]
    got = one("float", [b"-0", b"3.4028234663852886e38", b"1.401298464324817e-45"])[0]
    assert math.copysign(1, got[0]) == -1 and got[1] == 3.4028234663852886e38 and got[2] == 1.401298464324817e-45


def test_bits() -> None:
    assert one("bit(1)", [b"0", b"1", None])[0] == [False, True, None]
    assert one("bit(10)", [b"1023", b"0"])[0] == [1023, 0]
    assert one("bit(64)", [b"18446744073709551615", b"9223372036854775808"])[0] == [
        Decimal(18446744073709551615), Decimal(9223372036854775808)]
    with pytest.raises(DecodeError, match="BIT"):
        one("bit(1)", [b"2"])


# -- dates and times ---------------------------------------------------------------------


@given(st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_dates(value: dt.date) -> None:
    assert one("date", [value.isoformat().encode()])[0] == [value]


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
       st.integers(0, 6))
def test_datetimes_with_any_fraction(value: dt.datetime, fsp: int) -> None:
    value = value.replace(microsecond=value.microsecond // 10 ** (6 - fsp) * 10 ** (6 - fsp))
    text = value.strftime("%Y-%m-%d %H:%M:%S") + (f".{value.microsecond:06d}"[: fsp + 1] if fsp else "")
    assert one(f"datetime({fsp})", [text.encode()])[0] == [value]
    assert one(f"timestamp({fsp})", [text.encode()])[0] == [value.replace(tzinfo=dt.timezone.utc)]


ZERO_DATES = [b"0000-00-00", b"2026-00-00", b"2026-05-00", b"0000-01-01", b"2026-00-15"]


def test_zero_and_partial_dates_become_null_and_are_counted() -> None:
    got, report = decode(
        [column("date", "d"), column("datetime(6)", "t"), column("timestamp", "s")],
        [(d, d + b" 12:00:00.5", b"0000-00-00 00:00:00") for d in ZERO_DATES] + [(b"2026-01-02", None, None)],
    )
    assert got["d"] == [None] * 5 + [dt.date(2026, 1, 2)]
    assert got["t"] == [None] * 6
    assert got["s"] == [None] * 6
    assert report.zero_dates == {"d": 5, "t": 5, "s": 5}
    assert report.rows == 6


def test_impossible_calendar_dates_are_treated_like_zero_dates() -> None:
    got, report = one("date", [b"2026-02-31", b"2026-02-28"])
    assert got == [None, dt.date(2026, 2, 28)] and report.zero_dates == {"c": 1}


def test_strict_refuses_zero_dates_naming_column_row_and_value() -> None:
    with pytest.raises(DecodeError) as err:
        decode([column("int(11)", "id"), column("date", "born")], [(b"1", b"2020-01-01"), (b"2", b"2026-00-00")],
               strict=True)
    assert str(err.value) == "part-00000: column 'born' row 2: zero or partial date (strict): '2026-00-00'"
    assert isinstance(err.value, TrackerError) and err.value.exit_status == 1


def test_garbage_in_a_date_is_an_error_not_a_null() -> None:
    with pytest.raises(DecodeError, match="row 1: not a date"):
        one("date", [b"20260101"])


def _mysql_time_text(micros: int, fsp: int) -> str:
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), 1_000_000)
    hours, rest = divmod(whole, 3600)
    text = f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return text + (f".{fraction:06d}"[: fsp + 1] if fsp else "")


@given(st.integers(-MAX_TIME_US, MAX_TIME_US), st.integers(0, 6))
def test_time_text_to_microseconds(micros: int, fsp: int) -> None:
    step = 10 ** (6 - fsp)
    micros = int(math.copysign(abs(micros) // step * step, micros))
    assert one(f"time({fsp})", [_mysql_time_text(micros, fsp).encode()])[0] == [micros]


def test_time_edges() -> None:
    texts = [b"-838:59:59.999999", b"838:59:59", b"-00:00:00.000001", b"-00:00:00.5", b"25:00:00", b"00:00:00", None]
    assert one("time(6)", texts)[0] == [-MAX_TIME_US, MAX_TIME_US - 999_999, -1, -500_000, 90_000_000_000, 0, None]
    with pytest.raises(DecodeError, match="row 1: not a TIME value: '12:00'"):
        one("time", [b"12:00"])


# -- text, binary, spatial ---------------------------------------------------------------


def test_null_beside_the_strings_null_and_backslash_n() -> None:
    values = [None, b"NULL", b"\\N", b"N", b"\\\\N", b"", b"\t\n\\\r\n"]
    assert one("varchar(10)", values, charset="utf8mb4")[0] == [None if v is None else v.decode() for v in values]
    assert one("blob", values)[0] == values


def test_all_256_bytes_in_a_blob() -> None:
    blob = bytes(range(256))
    assert one("longblob", [blob, blob[::-1], blob * 100])[0] == [blob, blob[::-1], blob * 100]


@pytest.mark.parametrize(
    "charset, stored, text",
    [
        ("latin1", b"caf\xe9 \x81\\\t\n\x00", "café \x81\\\t\n\x00"),  # MySQL's latin1: 0x81 is U+0081
        ("latin1", b"\xc3\xa9", "Ã©"),
        ("sjis", "表能ソ".encode("shift_jis") + b"\\", "表能ソ\\"),  # 0x5C inside each character
        ("gbk", "乗俓".encode("gbk"), "乗俓"),
        ("utf16", "山\u0900\u0a05A\x00".encode("utf-16-be"), "山\u0900\u0a05A\x00"),  # 5C, 09, 0A, 00 bytes
        ("ucs2", b"\x00a\x00b", "ab"),
        ("utf8mb4", "😀 𝄞".encode(), "😀 𝄞"),
    ],
)
def test_text_is_decoded_from_its_own_charset(charset: str, stored: bytes, text: str) -> None:
    assert one("varchar(50)", [stored, None], charset=charset)[0] == [text, None]


@pytest.mark.parametrize(
    "charset, stored",
    [("utf8mb4", b"ab\xff"), ("utf8mb4", b"\xed\xa0\x80"), ("utf8mb4", b"\xc0\xaf"), ("utf8mb3", "😀".encode()),
     ("sjis", b"\x81"), ("utf16", b"\xd8\x00"), ("ascii", b"caf\xe9")],
)
def test_text_not_valid_in_its_charset_is_an_error(charset: str, stored: bytes) -> None:
    with pytest.raises(DecodeError) as err:
        one("varchar(50)", [b"ok", stored], charset=charset)
    message = str(err.value)
    assert message.startswith(f"part-00000: column 'c' row 2: not valid {charset}")
    assert "\n" not in message
    if stored != "😀".encode():
        assert stored.hex() in message  # not text: shown in hex


@settings(max_examples=300)
@given(st.binary(max_size=12))
def test_utf8_validation_agrees_with_python(value: bytes) -> None:
    try:
        expected = value.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(DecodeError):
            one("text", [value], charset="utf8mb4")
    else:
        assert one("text", [value], charset="utf8mb4")[0] == [expected]


@given(st.lists(st.one_of(st.none(), st.binary(max_size=20)), min_size=1, max_size=30))
def test_single_byte_charsets_decode_value_by_value(values: list[bytes | None]) -> None:
    expected = [None if v is None else v.decode("cp1252", errors="strict") if all(
        b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D) for b in v) else None for v in values]
    assume(all(e is not None or v is None for e, v in zip(expected, values)))
    assert one("varchar(50)", values, charset="latin1")[0] == expected


def test_printed_types_are_ascii_text() -> None:
    assert one("uuid", [b"123e4567-e89b-12d3-a456-426614174000"])[0] == ["123e4567-e89b-12d3-a456-426614174000"]
    assert one("inet6", [b"::ffff:1.2.3.4", None])[0] == ["::ffff:1.2.3.4", None]


def test_geometry_splits_the_srid_from_the_wkb() -> None:
    wkb = b"\x01\x01\x00\x00\x00" + struct.pack("<dd", 1.5, -2.25)
    values = [struct.pack("<I", 4326) + wkb, None, struct.pack("<I", 0xFFFFFFFF) + wkb, b"\x00\x00\x00\x00" + wkb]
    assert one("point", values)[0] == [
        {"wkb": wkb, "srid": 4326}, None, {"wkb": wkb, "srid": 0xFFFFFFFF}, {"wkb": wkb, "srid": 0}]
    with pytest.raises(DecodeError, match="row 1: not a spatial value"):
        one("geometry", [b"\x00\x00"])


def test_many_blocks_give_the_same_values_as_one() -> None:
    columns = [column("int(11)", "i"), column("varchar(20)", "s", charset="latin1"), column("time(6)", "t"),
               column("date", "d"), column("point", "p")]
    point = b"\xe6\x10\x00\x00\x01\x01\x00\x00\x00" + struct.pack("<dd", 0.5, 9.0)
    rows = [(str(i).encode(), b"\xe9\\\t" * (i % 4), b"-%d:00:00.5" % i, b"2026-00-01" if i % 7 == 0 else b"2026-01-01",
             None if i % 3 else point) for i in range(200)]
    whole, report_whole = decode(columns, rows)
    small, report_small = decode(columns, rows, block_bytes=64)
    assert small == whole and report_small == report_whole
    assert report_whole.zero_dates == {"d": 29} and report_whole.rows == 200


def test_column_count_mismatch_is_an_error() -> None:
    schema = arrow_schema([column("int(11)", "a"), column("int(11)", "b")])
    parser = BlockParser(1)
    (block,) = [*parser.feed(b"1\n"), *parser.finish()]
    with pytest.raises(DecodeError, match="1 columns in the data, the manifest lists 2"):
        decode_block(block, [column("int(11)", "a"), column("int(11)", "b")], schema, DecodeReport(), where="p")


def test_report_merges() -> None:
    a = DecodeReport({"x": 1}, rows=3)
    a.merge(DecodeReport({"x": 2, "y": 5}, rows=4))
    assert a == DecodeReport({"x": 3, "y": 5}, rows=7)


def test_values_in_messages() -> None:
    assert show_value(b"2026-00-00") == "'2026-00-00'"
    assert show_value(b"\xff\x00") == "x'ff00'"
    assert show_value(b"a" * 100).endswith("... (100 bytes)")


def test_the_shared_comparison_sees_float_bits_and_types() -> None:
    assert not same_value("float64", 0.0, -0.0)
    assert same_value("float32", 0.1, float(struct.unpack("<f", struct.pack("<f", 0.1))[0]))
    assert not same_value("int", 1, True)
    assert not same_value("timestamp", dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2020, 1, 1))
    assert same_value("text", None, None) and not same_value("text", "", None)


@settings(max_examples=50)
@given(st.sampled_from(["latin1", "latin2", "cp1251", "sjis", "gbk", "big5", "euckr", "ujis", "ucs2", "utf16", "utf32",
                        "koi8r", "swe7", "dec8"]),
       st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=8), min_size=1, max_size=5))
def test_ascii_bytes_read_as_the_charset_reads_them(charset: str, texts: list[str]) -> None:
    """The pure-ASCII shortcut agrees with the charset's own decoding (ucs2/utf16/utf32 are not ASCII)."""
    from tracker.store import charsets

    stored = [t.encode("ascii") for t in texts]
    try:
        expected = [charsets.decode(v, charset) for v in stored]
    except (UnicodeDecodeError, ValueError):
        with pytest.raises(DecodeError):
            one("varchar(50)", stored, charset=charset)
        return
    assert one("varchar(50)", stored, charset=charset)[0] == expected
