"""A table with every MySQL/MariaDB type and its edge values, and what the server says it holds.

Shared by every reader test of stage 2 (the decoder, Parquet through DuckDB
and pyarrow, pyiceberg, Spark): create the table on the master, dump it,
read it back with the engine under test, and compare each value with
``expected_values`` — the server's own answer, fetched per column in the
form the decoder maps it to (see tracker/warehouse/types.py):

=============  ======================================================
kind           expected Python value (what ``pa.Array.to_pylist`` gives)
=============  ======================================================
int            int
uint64         Decimal (BIGINT UNSIGNED, BIT(64): decimal128(20,0))
decimal        Decimal (DECIMAL p <= 38)
decimal_text   str, the server's exact text (DECIMAL p > 38)
float32        float; compared by its float32 bit pattern
float64        float; compared by its float64 bit pattern
bool           bool (BIT(1))
date           datetime.date; None for zero/partial dates
datetime       naive datetime.datetime; None for zero/partial
timestamp      datetime.datetime in UTC; None for the zero timestamp
time           int microseconds (negative and > 24 h allowed)
text           str: ``CONVERT(col USING utf8mb4)``
binary         bytes
geometry       {"wkb": ST_AsBinary(col), "srid": ST_SRID(col)}
=============  ======================================================

Engines that cannot represent a value declare it through ``known`` in
``diff_values`` (column, id) -> what they return instead, so every test says
exactly which values it does not get back.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

TABLE = "alltypes"
UTC = dt.timezone.utc


@dataclass(frozen=True)
class Col:
    name: str
    ddl: str
    kind: str


COLUMNS: list[Col] = [
    Col("id", "INT NOT NULL PRIMARY KEY", "int"),
    Col("i8", "TINYINT", "int"),
    Col("u8", "TINYINT UNSIGNED", "int"),
    Col("i16", "SMALLINT", "int"),
    Col("u16", "SMALLINT UNSIGNED", "int"),
    Col("i24", "MEDIUMINT", "int"),
    Col("u24", "MEDIUMINT UNSIGNED", "int"),
    Col("i32", "INT", "int"),
    Col("u32", "INT UNSIGNED", "int"),
    Col("i64", "BIGINT", "int"),
    Col("u64", "BIGINT UNSIGNED", "uint64"),
    Col("zf", "INT(5) UNSIGNED ZEROFILL", "int"),
    Col("d5", "DECIMAL(5,0)", "decimal"),
    Col("d38", "DECIMAL(38,10)", "decimal"),
    Col("d38s", "DECIMAL(38,38)", "decimal"),
    Col("du", "DECIMAL(10,2) UNSIGNED", "decimal"),
    Col("d65", "DECIMAL(65,30)", "decimal_text"),
    Col("f", "FLOAT", "float32"),
    Col("f73", "FLOAT(7,3)", "float32"),
    Col("dbl", "DOUBLE", "float64"),
    Col("dz", "DECIMAL(10,2) ZEROFILL", "decimal"),  # printed zero-padded
    Col("dbz", "DOUBLE(12,3) ZEROFILL", "float64"),
    Col("dpz", "DOUBLE ZEROFILL", "float64"),
    Col("b1", "BIT(1)", "bool"),
    Col("b10", "BIT(10)", "int"),
    Col("b64", "BIT(64)", "uint64"),
    Col("dd", "DATE", "date"),
    Col("dt0", "DATETIME", "datetime"),
    Col("dt6", "DATETIME(6)", "datetime"),
    Col("ts0", "TIMESTAMP NULL DEFAULT NULL", "timestamp"),
    Col("ts6", "TIMESTAMP(6) NULL DEFAULT NULL", "timestamp"),
    Col("tm0", "TIME", "time"),
    Col("tm6", "TIME(6)", "time"),
    Col("yr", "YEAR", "int"),
    Col("ch", "CHAR(10) CHARACTER SET utf8mb4", "text"),
    Col("vc", "VARCHAR(200) CHARACTER SET utf8mb4", "text"),
    Col("tx", "TEXT CHARACTER SET utf8mb4", "text"),
    Col("lt", "LONGTEXT CHARACTER SET utf8mb4", "text"),
    Col("lat", "VARCHAR(300) CHARACTER SET latin1", "text"),
    Col("sj", "VARCHAR(50) CHARACTER SET sjis", "text"),
    Col("gb", "VARCHAR(50) CHARACTER SET gbk", "text"),
    Col("b5", "VARCHAR(50) CHARACTER SET big5", "text"),
    Col("u16t", "VARCHAR(50) CHARACTER SET utf16", "text"),
    Col("bn", "BINARY(8)", "binary"),
    Col("vb", "VARBINARY(300)", "binary"),
    Col("bl", "BLOB", "binary"),
    Col("lb", "LONGBLOB", "binary"),
    Col("js", "JSON", "text"),
    Col("en", "ENUM('a','b c','') CHARACTER SET utf8mb4", "text"),
    Col("enl", "ENUM('é','\\\\','ü') CHARACTER SET latin1", "text"),
    Col("st", "SET('x','y','z') CHARACTER SET utf8mb4", "text"),
    Col("g", "GEOMETRY", "geometry"),
    Col("pt", "POINT", "geometry"),
    Col("uu", "UUID", "text"),
    Col("ip6", "INET6", "text"),
    Col("ip4", "INET4", "text"),
    Col("gen", "INT AS (id * 2) VIRTUAL", "int"),
    Col("gst", "VARCHAR(20) AS (CONCAT('g', id)) STORED", "text"),
    Col("inv", "INT INVISIBLE", "int"),
]

KINDS = {c.name: c.kind for c in COLUMNS}
WRITABLE = [c.name for c in COLUMNS if " AS (" not in c.ddl]

ALL_BYTES = bytes(range(256))


class Sql(str):
    """A raw SQL expression in a row (everything else is passed as a parameter)."""


def _wkb_point(x_bits: bytes, y: float) -> bytes:
    return b"\x01\x01\x00\x00\x00" + x_bits + struct.pack("<d", y)


# NULL everywhere (every column not named in a row is NULL).
# Row values are parameters (str in utf8mb4, converted by the server into the
# column's charset on insert; bytes as binary literals) or Sql expressions.
ROWS: list[dict[str, Any]] = [
    {"id": 1},  # all NULL
    {  # maxima, and text with every separator and escape
        "id": 2, "i8": 127, "u8": 255, "i16": 32767, "u16": 65535, "i24": 8388607, "u24": 16777215,
        "i32": 2147483647, "u32": 4294967295, "i64": 9223372036854775807, "u64": 18446744073709551615,
        "zf": 42, "d5": Sql("99999"), "d38": Sql("9999999999999999999999999999.9999999999"),
        "d38s": Sql("0.99999999999999999999999999999999999999"), "du": Sql("99999999.99"),
        "d65": Sql("99999999999999999999999999999999999.999999999999999999999999999999"),
        "f": Sql("3.4028234663852886e38"), "f73": Sql("9999.999"), "dbl": Sql("1.7976931348623157e308"),
        "dz": Sql("1.5"), "dbz": Sql("2.25"), "dpz": Sql("1e300"),
        "b1": Sql("b'1'"), "b10": Sql("b'1111111111'"), "b64": Sql("18446744073709551615"),
        "dd": "9999-12-31", "dt0": "9999-12-31 23:59:59", "dt6": "9999-12-31 23:59:59.999999",
        "ts0": "2038-01-19 03:14:07", "ts6": "2038-01-19 03:14:07.999999",
        "tm0": "838:59:59", "tm6": "838:59:59.999999", "yr": 2155,
        "ch": "a\tb\\", "vc": "a\tb\nc\\d\\0e\\N\r\n\\", "tx": "line1\r\nline2\ttab\\back\nlast\\",
        "lt": "\\N", "lat": Sql("x'" + ALL_BYTES.hex() + "'"), "sj": "表能ソ\\\t\n", "gb": "乗俓僜\\\t\n",
        "b5": "功兝\\\t\n", "u16t": "山\u0900\u0a05A\\\t\n\x00",
        "bn": b"\x00\x01\\\t\n\x00\xff\x00", "vb": ALL_BYTES[::-1][:300], "bl": ALL_BYTES,
        "lb": ALL_BYTES * 1000, "js": '{"a": [1, 2, null], "t": "x\\ty"}', "en": "b c", "enl": "é",
        "st": "x,y,z", "g": Sql("ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))', 4326)"),
        "pt": Sql("ST_GeomFromWKB(x'" + _wkb_point(b"\x5c\x0a\x09\x00\x5c\x0a\x09\x40", -2.25).hex() + "', 3857)"),
        "uu": "123e4567-e89b-12d3-a456-426614174000", "ip6": "2001:db8::ff00:42:8329", "ip4": "255.255.255.255",
        "inv": 7,
    },
    {  # minima
        "id": 3, "i8": -128, "u8": 0, "i16": -32768, "u16": 0, "i24": -8388608, "u24": 0,
        "i32": -2147483648, "u32": 0, "i64": -9223372036854775808, "u64": 0, "zf": 0,
        "d5": Sql("-99999"), "d38": Sql("-9999999999999999999999999999.9999999999"),
        "d38s": Sql("-0.99999999999999999999999999999999999999"), "du": Sql("0"),
        "d65": Sql("-99999999999999999999999999999999999.999999999999999999999999999999"),
        "f": Sql("-3.4028234663852886e38"), "f73": Sql("-9999.999"), "dbl": Sql("-1.7976931348623157e308"),
        "dz": Sql("0"), "dbz": Sql("0"), "dpz": Sql("5e-324"),
        "b1": Sql("b'0'"), "b10": Sql("b'0'"), "b64": Sql("0"),
        "dd": "1000-01-01", "dt0": "1000-01-01 00:00:00", "dt6": "1000-01-01 00:00:00.000000",
        "ts0": "1970-01-01 00:00:01", "ts6": "1970-01-01 00:00:00.000001",
        "tm0": "-838:59:59", "tm6": "-838:59:59.999999", "yr": 1901,
        "ch": "", "vc": "", "tx": "", "lt": "", "lat": "", "sj": "", "gb": "", "b5": "", "u16t": "",
        "bn": b"", "vb": b"", "bl": b"", "lb": b"", "js": "null", "en": "", "enl": "\\", "st": "",
        "g": Sql("ST_GeomFromText('GEOMETRYCOLLECTION EMPTY')"),
        "pt": Sql("ST_GeomFromText('POINT(0 0)')"),
        "uu": "00000000-0000-0000-0000-000000000000", "ip6": "::", "ip4": "0.0.0.0", "inv": -1,
    },
    {  # zero and partial dates; NULL beside the strings 'NULL', '\N', 'N'
        "id": 4, "dd": "0000-00-00", "dt0": "0000-00-00 00:00:00", "dt6": "2026-00-00 12:00:00.5",
        "ts0": "0000-00-00 00:00:00", "ts6": "0000-00-00 00:00:00", "tm0": "00:00:00", "tm6": "-00:00:00.000001",
        "yr": 0, "ch": "NULL", "vc": "\\N", "tx": "N", "lt": "\\\\N", "lat": "NULL", "sj": "\\N",
        "gb": "N", "b5": "NULL", "u16t": "\\N", "bn": b"NULL", "vb": b"\\N", "bl": b"N", "lb": b"\\\\N",
        "js": '"\\\\N"', "en": Sql("'not a label'"), "st": "x",
        "f": Sql("-CAST(0 AS DOUBLE)"), "dbl": Sql("-CAST(0 AS DOUBLE)"), "d65": Sql("0"),
        "d38": Sql("-0.0000000001"), "d38s": Sql("0.00000000000000000000000000000000000001"),
    },
    {  # more partial dates, fractions, tiny floats
        "id": 5, "dd": "2026-05-00", "dt0": "0000-01-01 00:00:00", "dt6": "2000-02-29 12:34:56.789012",
        "ts0": "1970-01-01 00:00:01", "ts6": "2000-02-29 23:59:59.5", "tm0": "25:00:00", "tm6": "-01:02:03.4",
        "yr": 2000, "f": Sql("1.401298464324817e-45"), "f73": Sql("0.001"), "dbl": Sql("5e-324"),
        "d65": Sql("-0.000000000000000000000000000001"), "d5": Sql("0"),
        "vc": "😀 𝄞 music", "tx": "🀄\U0010fffd", "ch": "😀😀😀😀😀😀😀😀😀😀", "lat": "café",
        "sj": "ｱ漢字", "gb": "汉字", "b5": "漢字", "u16t": "😀",
        "js": '{"emoji": "😀"}', "en": "a", "enl": "ü", "st": "",
        "b10": Sql("b'1010101010'"), "b64": Sql("9223372036854775808"), "b1": Sql("b'1'"),
    },
    {  # the smallest normals and inexact values
        "id": 6, "dd": "0000-01-01", "dt0": "1970-01-01 00:00:00", "dt6": "2026-07-00 00:00:00",
        "ts0": "2026-11-29 10:20:30", "ts6": "2001-09-09 01:46:40.123456",
        "f": Sql("1.1754943508222875e-38"), "f73": Sql("-0.001"), "dbl": Sql("2.2250738585072014e-308"),
        "tm0": "-00:00:01", "tm6": "00:00:00.5", "u64": 9223372036854775808,
        "ip6": "::ffff:1.2.3.4", "js": "[]",
    },
    {"id": 7, "f": Sql("0.1"), "dbl": Sql("0.1"), "d38": Sql("0.1"), "dd": "1970-01-01", "tm6": "00:00:00"},
    {"id": 8, "f": Sql("1/3"), "dbl": Sql("1/3"), "f73": Sql("1/3"), "dd": "2000-02-29", "tm6": "24:00:00"},
]

FILLER = 300  # extra rows so a part spans many blocks when the decoder is told to use small ones


def create_alltypes_table(master, db: str, table: str = TABLE) -> str:
    """Create and fill the every-type table on ``master`` (a sandbox MariaDB); returns its name."""
    from tracker.db import qualified, quote_ident

    name = qualified(db, table)
    columns = ",\n  ".join(f"{quote_ident(c.name)} {c.ddl}" for c in COLUMNS)
    master.sql(f"CREATE TABLE {name} (\n  {columns}\n) DEFAULT CHARSET=utf8mb4")
    conn = master.connect(database=db)  # the seq_ tables need a current database
    try:
        with conn.cursor() as cur:
            # Zero dates and out-of-range ENUM values need a permissive sql_mode.
            cur.execute("SET SESSION time_zone = '+00:00', sql_mode = ''")
            for row in ROWS:
                names = list(row)
                marks = [v if isinstance(v, Sql) else "%s" for v in row.values()]
                args = [v for v in row.values() if not isinstance(v, Sql)]
                cur.execute(
                    f"INSERT INTO {name} ({', '.join(quote_ident(n) for n in names)}) VALUES ({', '.join(marks)})",
                    args,
                )
            cur.execute(
                f"INSERT INTO {name} (id, i64, u64, dbl, f, d38, dt6, ts6, tm6, vb, bl, tx, lat, gb, b64, b1)"
                " SELECT 1000 + seq, CAST(seq AS SIGNED) * 1000003 - 150000000, seq * 61489146912365172, RAND(seq) * 1e10 - 5e9,"
                " RAND(seq + 1) / 3, seq / 7, '2020-01-01' + INTERVAL seq * 97 MINUTE,"
                " '2000-01-01' + INTERVAL seq * 3 DAY + INTERVAL seq MICROSECOND, SEC_TO_TIME(CAST(seq AS SIGNED) * 1000.5 - 100000),"
                " RANDOM_BYTES(1 + seq % 300), RANDOM_BYTES(1 + seq % 900), REPEAT('\\\\\\t\\n\\0ü', seq % 50),"
                " REPEAT(x'5c09e90a', seq % 20), REPEAT(CONVERT(_utf8mb4'乗\\\\' USING gbk), seq % 10),"
                f" seq * 60000000000000, seq % 2 FROM seq_1_to_{FILLER}"
            )
    finally:
        conn.close()
    return table


def _expression(col: Col) -> str:
    from tracker.db import quote_ident

    ident = quote_ident(col.name)
    if col.kind == "text":
        return f"CONVERT({ident} USING utf8mb4)"
    if col.kind == "decimal_text":
        return f"CAST({ident} AS CHAR)"
    if col.kind == "float32":
        return f"CAST({ident} AS DOUBLE)"  # pymysql would read FLOAT's 6-digit text
    if col.kind == "geometry":
        return f"ST_AsBinary({ident}), ST_SRID({ident})"
    return ident


def _python_value(kind: str, value: Any) -> Any:
    """The server's value (as pymysql returns it) in the decoder's domain."""
    if value is None:
        return None
    if kind in ("date", "datetime", "timestamp") and isinstance(value, str):
        return None  # zero or partial: pymysql cannot build a date from it; the decoder gives NULL
    if kind == "timestamp":
        return value.replace(tzinfo=UTC)
    if kind == "time":
        return value // dt.timedelta(microseconds=1)
    if kind == "uint64":
        return Decimal(int.from_bytes(value, "big") if isinstance(value, bytes) else value)
    if kind == "bool":
        return bool(int.from_bytes(value, "big"))
    if kind == "int" and isinstance(value, bytes):  # BIT(n)
        return int.from_bytes(value, "big")
    return value


def expected_values(replica_conn, db: str, table: str = TABLE, columns: Iterable[str] | None = None) -> dict[str, list]:
    """Each column's values ordered by id, as the server returns them, in the decoder's domain.

    ``replica_conn`` is a pymysql connection (or a sandbox MariaDB to open one on).
    """
    from tracker.db import qualified

    wanted = [c for c in COLUMNS if columns is None or c.name in set(columns)]
    conn = replica_conn.connect() if hasattr(replica_conn, "port") else replica_conn
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute(f"SELECT {', '.join(_expression(c) for c in wanted)} FROM {qualified(db, table)} ORDER BY id")
            rows = cur.fetchall()
    finally:
        if conn is not replica_conn:
            conn.close()
    out: dict[str, list] = {c.name: [] for c in wanted}
    for row in rows:
        values = iter(row)
        for col in wanted:
            value = next(values)
            if col.kind == "geometry":
                srid = next(values)
                out[col.name].append(None if value is None else {"wkb": value, "srid": srid})
            else:
                out[col.name].append(_python_value(col.kind, value))
    return out


def expected_zero_dates(replica_conn, db: str, table: str = TABLE) -> dict[str, int]:
    """Per temporal column, how many values are zero or partial dates (NULL in the warehouse)."""
    from tracker.db import qualified, quote_ident

    temporal = [c.name for c in COLUMNS if c.kind in ("date", "datetime", "timestamp")]
    conn = replica_conn.connect() if hasattr(replica_conn, "port") else replica_conn
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute(f"SELECT {', '.join(quote_ident(n) for n in temporal)} FROM {qualified(db, table)}")
            rows = cur.fetchall()
    finally:
        if conn is not replica_conn:
            conn.close()
    counts = {name: sum(isinstance(r[i], str) for r in rows) for i, name in enumerate(temporal)}
    return {name: n for name, n in counts.items() if n}


def same_value(kind: str, expected: Any, actual: Any) -> bool:
    """Equal as the warehouse must keep it: floats by bit pattern (so -0.0 != 0.0), the rest by ==."""
    if expected is None or actual is None:
        return expected is None and actual is None
    if kind in ("float32", "float64"):
        if not isinstance(actual, float):
            return False
        fmt = "<f" if kind == "float32" else "<d"
        try:
            return struct.pack(fmt, expected) == struct.pack(fmt, actual)
        except OverflowError:
            return False
    if kind in ("uint64", "decimal"):
        return isinstance(actual, Decimal) and actual == expected
    if kind == "bool":
        return actual is expected
    if kind == "int":
        return type(actual) is int and actual == expected
    if kind == "timestamp":
        return isinstance(actual, dt.datetime) and actual.tzinfo is not None and actual == expected
    if kind == "datetime":
        return isinstance(actual, dt.datetime) and actual.tzinfo is None and actual == expected
    return type(actual) is type(expected) and actual == expected


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        shown = bytes(value[:40]).hex()
        return f"x'{shown}'" + (f"... ({len(value)} bytes)" if len(value) > 40 else "")
    if isinstance(value, float) and not math.isnan(value):
        return f"{value!r} (bits {struct.pack('>d', value).hex()})"
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + f"... ({len(text)} chars)"


def diff_values(
    expected: dict[str, list],
    actual: dict[str, list],
    *,
    known: dict[tuple[str, int], Any] | None = None,
    kinds: dict[str, str] | None = None,
) -> list[str]:
    """One line per value that differs: ``column id=N: expected … got …``.

    ``known`` maps (column, id) to what an engine returns instead of the
    server's value (a limit of that engine, declared by its test); the value
    must then be exactly that.  ``kinds`` overrides how a column compares
    (e.g. an engine that widens float32 values into ``float64`` bits).
    """
    known = known or {}
    kinds = {**KINDS, **(kinds or {})}
    ids = expected.get("id") or actual.get("id") or []
    problems: list[str] = []
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            problems.append(f"{name}: column missing")
            continue
        if len(got) != len(want):
            problems.append(f"{name}: {len(got)} values, expected {len(want)}")
            continue
        kind = kinds.get(name, "text")
        for row_id, e, a in zip(ids, want, got):
            if (name, row_id) in known:
                e = known[(name, row_id)]
            if not same_value(kind, e, a):
                problems.append(f"{name} id={row_id}: expected {_show(e)} got {_show(a)}")
    return problems


def arrow_columns(table, order_by: str = "id") -> dict[str, list]:
    """A pyarrow Table (or list of record batches) as column -> values, ordered by ``order_by``."""
    import pyarrow as pa

    if isinstance(table, list):
        table = pa.Table.from_batches(table)
    table = table.sort_by(order_by)
    return {name: table.column(name).to_pylist() for name in table.column_names}
