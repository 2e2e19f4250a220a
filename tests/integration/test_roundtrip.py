"""Bit-exact round trips through the real servers: MariaDB -> tracker -> S3 -> LOAD DATA."""

from __future__ import annotations

import json
import uuid

import lz4.frame
import pytest

from tests.integration.helpers import (
    checksum,
    lz4_cli_decompress,
    restore,
    run_tracker,
    write_config,
)
from tracker.store.checksum import reference_crc32c
from tracker.db import qualified
from tracker.store.layout import encode_segment

ALL_TYPES = """
CREATE TABLE {name} (
  id INT PRIMARY KEY,
  ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT UNSIGNED,
  de DECIMAL(65,30), f FLOAT, d DOUBLE, fm FLOAT(7,3),
  bt BIT(1), b10 BIT(10), b64 BIT(64),
  dt DATETIME(6), dd DATE, tm TIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, yr YEAR,
  ch CHAR(10), vc VARCHAR(200), lat VARCHAR(50) CHARACTER SET latin1, tx TEXT,
  bl BLOB, lb LONGBLOB, bn BINARY(8), vb VARBINARY(300),
  js JSON, en ENUM('a','b','c d'), st SET('x','y','z'),
  g GEOMETRY, p POINT,
  gen INT AS (id * 2) VIRTUAL, gst VARCHAR(20) AS (CONCAT('g', id)) STORED,
  inv INT INVISIBLE
) DEFAULT CHARSET=utf8mb4
"""

COLUMNS = "id, ti, si, mi, bi, de, f, d, fm, bt, b10, b64, dt, dd, tm, ts, yr, ch, vc, lat, tx, bl, lb, bn, vb, js, en, st, g, p, inv"

ALL_BYTES = bytes(range(256))

ROWS = [
    # every byte value, in both orders
    (1, 1, 2, 3, 4, "1.5", 1.5, 2.5, 1.25, 1, 5, 6, "2020-01-01 00:00:00.000001", "2020-01-01", "00:00:01", "2020-06-01 12:00:00.5", 2020,
     "a", "b", "c", "d", ALL_BYTES, ALL_BYTES * 1000, b"\x00\x01\\\t\n\x00\xff\x00", ALL_BYTES[::-1], '{"a": [1, 2, null]}', "a", "x,z",
     None, None, 7),
    # NULL beside the strings 'NULL' and '\N'
    (2, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None,
     "NULL", "\\N", "N", "\\\\N", b"NULL", b"\\N", b"\\N\x00\x00\x00\x00\x00\x00", b"", None, None, "", None, None, None),
    # separators and escapes inside values
    (3, -128, 0, -8388608, 0, "-0.000000000000000000000000000001", -1.0, -0.0, -9999.999, 0, 0, 0,
     "1000-01-01 00:00:00.000000", "1000-01-01", "-838:59:59.000000", "1970-01-01 00:00:01.000000", 1901,
     "\t", "a\tb\nc\\d\\0e\\N\r\n", "\\", "line1\nline2\ttab\\back", b"\\0\\\\0\\", b"\t\n\\", b"\\\\\\\\", b"\n\n", '"str\\ttab"', "c d", "x,y,z",
     None, None, None),
    # 4-byte UTF-8 and latin1
    (4, 127, 65535, 8388607, 18446744073709551615, "-99999999999999999999999999999999999.999999999999999999999999999999",
     3.4028234e38, 1.7976931348623157e308, 9999.999, 1, 1023, 18446744073709551615,
     "9999-12-31 23:59:59.999999", "9999-12-31", "838:59:59.000000", "2038-01-19 03:14:07.999999", 2155,
     "😀", "𝄞 music 😀 emoji", "café", "ünïcødé ✓ 😀", "😀".encode(), b"", b"", b"\xf0\x9f\x98\x80", '{"emoji": "😀"}', "b", "",
     None, None, -1),
    # tiny and precise floats
    (5, 0, 1, 0, 1, "0.000000000000000000000000000001", 1.17549435e-38, 2.2250738585072014e-308, 0.001, 0, 682, 9223372036854775808,
     "2000-02-29 12:34:56.789012", "2000-02-29", "12:34:56.789012", "2000-02-29 12:34:56.789012", 2000,
     "", "", "", "", b"", b"", b"", b"", "[]", "a", "y", None, None, None),
]


def create_all_types(master, db: str, table: str) -> None:
    name = qualified(db, table)
    master.sql(ALL_TYPES.format(name=name))
    placeholders = ", ".join(["%s"] * 31)
    conn = master.connect(database=db)  # the seq_ tables need a current database
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.executemany(f"INSERT INTO {name} ({COLUMNS}) VALUES ({placeholders})", ROWS)
            cur.execute(
                f"UPDATE {name} SET g = ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))', 4326),"
                " p = ST_GeomFromText('POINT(1.5 -2.25)') WHERE id = 1"
            )
            # random binary and random floats, many rows
            cur.execute(
                f"INSERT INTO {name} (id, f, d, bl, vb, b64, tx) SELECT 100 + seq, RAND() * 1e10 - 5e9,"
                " RAND() / 3, RANDOM_BYTES(1 + seq % 900), RANDOM_BYTES(1 + seq % 300),"
                " CAST(RAND() * 18446744073709551615 AS UNSIGNED), REPEAT('\\\\\\t\\n\\0', seq % 50)"
                " FROM seq_1_to_500"
            )
    finally:
        conn.close()


@pytest.fixture
def all_types_table(master, replica_set, fresh_db) -> tuple[str, str]:
    table = "all types `odd` name"
    create_all_types(master, fresh_db, table)
    replica_set.sync()
    return fresh_db, table


def test_bit_exact_round_trip_through_s3(master, replica, moto_server, s3, bucket, tmp_path, all_types_table) -> None:
    db, table = all_types_table
    config = write_config(
        tmp_path, replica, f"s3://{bucket}/snapshots", s3={"endpoint_url": moto_server.endpoint_url}
    )
    result = run_tracker(config, "dump", f"{db}.`{table.replace('`', '``')}`", "--date", "2026-11-01", env=moto_server.subprocess_env())
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr

    prefix = f"snapshots/main/{encode_segment(db)}/{encode_segment(table)}/dt=2026-11-01/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == [prefix + n for n in ("_SUCCESS", "manifest.json", "part-00000.tsv.lz4", "schema.sql")]

    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
    schema = s3.get_object(Bucket=bucket, Key=prefix + "schema.sql")["Body"].read().decode()
    assert manifest["db"] == db and manifest["table"] == table and manifest["date"] == "2026-11-01"
    assert manifest["rows"] == len(ROWS) + 500
    assert manifest["compression"] == "lz4"
    assert manifest["format"]["nul_unescaped"] is True
    encodings = {c["name"]: c["encoding"] for c in manifest["columns"]}
    assert encodings["b10"] == "bit-as-unsigned" and encodings["f"] == "float-as-double" and encodings["bl"] == "text"
    assert [c["name"] for c in manifest["columns"] if c["generated"]] == ["gen", "gst"]
    unit = manifest["units"][0]
    stored = s3.get_object(Bucket=bucket, Key=prefix + "part-00000.tsv.lz4")["Body"].read()
    assert unit["bytes"] == len(stored)
    assert unit["checksum"]["crc32c"] == f"{reference_crc32c(stored):08x}"
    assert unit["source"].endswith(f":{replica.port}")
    assert unit["rows"] == manifest["rows"]

    data = lz4_cli_decompress(stored)  # the standard tool reads it
    assert len(data) == unit["raw_bytes"]
    shown = run_tracker(config, "cat", f"s3://{bucket}/{prefix}part-00000.tsv.lz4", env=moto_server.subprocess_env())
    assert shown.returncode == 0 and shown.stdout == data
    assert b"\\0" not in data.replace(b"\\\\", b"")  # every escaped NUL became a raw byte
    assert ALL_BYTES[1:] in data.replace(b"\\\\", b"\\").replace(b"\\\t", b"\t").replace(b"\\\n", b"\n")

    restored_db = f"r_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {restored_db}")
    try:
        restore(master, restored_db, schema, manifest, [data])
        assert checksum(master, restored_db, table) == checksum(master, db, table)
        assert master.sql(f"SELECT COUNT(*) FROM {qualified(restored_db, table)}")[0][0] == len(ROWS) + 500
    finally:
        master.sql(f"DROP DATABASE {restored_db}")


@pytest.mark.parametrize("compression", ["gzip", "none", "lz4"])
def test_file_destination_and_cat(master, replica, tmp_path, all_types_table, compression) -> None:
    db, table = all_types_table
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica, f"file://{dest}", compression=compression)
    name = f"{db}.`{table.replace('`', '``')}`"
    result = run_tracker(config, "dump", name, "--date", "2026-11-02")
    assert result.returncode == 0, result.stderr.decode()
    directory = dest / "main" / encode_segment(db) / encode_segment(table) / "dt=2026-11-02"
    part = next(directory.glob("part-00000*"))
    assert part.name == {"gzip": "part-00000.tsv.gz", "none": "part-00000.tsv", "lz4": "part-00000.tsv.lz4"}[compression]
    assert sorted(p.name for p in directory.iterdir()) == sorted(["_SUCCESS", "manifest.json", "schema.sql", part.name])

    raw = run_tracker(config, "cat", f"file://{part}")
    assert raw.returncode == 0, raw.stderr.decode()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert len(raw.stdout) == manifest["units"][0]["raw_bytes"]
    if compression == "lz4":
        assert raw.stdout == lz4.frame.decompress(part.read_bytes())

    restored_db = f"r_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {restored_db}")
    try:
        restore(master, restored_db, (directory / "schema.sql").read_text(), manifest, [raw.stdout])
        assert checksum(master, restored_db, table) == checksum(master, db, table)
    finally:
        master.sql(f"DROP DATABASE {restored_db}")

    lines = run_tracker(config, "cat", "--format", "jsonl", f"file://{part}")
    assert lines.returncode == 0, lines.stderr.decode()
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(records) == manifest["rows"]
    by_id = {r["id"]: r for r in records}
    assert by_id["2"]["ti"] is None and by_id["2"]["ch"] == "NULL" and by_id["2"]["vc"] == "\\N"
    assert by_id["3"]["vc"] == "a\tb\nc\\d\\0e\\N\r\n"
    assert by_id["4"]["vc"] == "𝄞 music 😀 emoji"
    assert by_id["1"]["bl"] == {"base64": __import__("base64").b64encode(ALL_BYTES).decode()}
