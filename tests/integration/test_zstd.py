"""``compression: zstd`` end to end: tracker dump → file:// and moto S3 → zstd -d, tracker cat, pyarrow, DuckDB, LOAD DATA."""

from __future__ import annotations

import decimal
import json
import subprocess
import uuid

import duckdb
import pyarrow as pa
import pytest

from tests.integration.helpers import checksum, restore, run_tracker, write_config
from tests.integration.test_roundtrip import ALL_BYTES, ROWS, create_all_types
from tracker.db import qualified
from tracker.store.layout import encode_segment


def zstd_cli_decompress(data: bytes) -> bytes:
    """The standard ``zstd`` tool: proves the objects are plain zstd frames."""
    return subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True, check=True).stdout


def pyarrow_decompress(data: bytes) -> bytes:
    return pa.CompressedInputStream(pa.BufferReader(data), "zstd").read()


@pytest.fixture
def all_types(master, replica_set, fresh_db) -> tuple[str, str]:
    table = "all types zstd"
    create_all_types(master, fresh_db, table)
    replica_set.sync()
    return fresh_db, table


def check_part(master, db: str, table: str, schema_sql: str, manifest: dict, stored: bytes, shown: bytes) -> None:
    """Every reader returns the same bytes, and they load back into an identical table."""
    assert manifest["compression"] == "zstd"
    unit = manifest["units"][0]
    assert unit["bytes"] == len(stored)
    data = zstd_cli_decompress(stored)
    assert len(data) == unit["raw_bytes"] == len(shown)
    assert shown == data == pyarrow_decompress(stored)
    assert ALL_BYTES[1:] in data.replace(b"\\\\", b"\\").replace(b"\\\t", b"\t").replace(b"\\\n", b"\n")
    restored_db = f"r_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {restored_db}")
    try:
        restore(master, restored_db, schema_sql, manifest, [data])
        assert checksum(master, restored_db, table) == checksum(master, db, table)
        assert master.sql(f"SELECT COUNT(*) FROM {qualified(restored_db, table)}")[0][0] == len(ROWS) + 500
    finally:
        master.sql(f"DROP DATABASE {restored_db}")


def test_zstd_to_file(master, replica, tmp_path, all_types) -> None:
    db, table = all_types
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica, f"file://{dest}", compression="zstd")
    result = run_tracker(config, "dump", f"{db}.`{table}`", "--date", "2026-11-03")
    assert result.returncode == 0, result.stderr.decode()
    directory = dest / "main" / encode_segment(db) / encode_segment(table) / "dt=2026-11-03"
    assert sorted(p.name for p in directory.iterdir()) == ["_SUCCESS", "manifest.json", "part-00000.tsv.zst", "schema.sql"]
    part = directory / "part-00000.tsv.zst"
    shown = run_tracker(config, "cat", f"file://{part}")
    assert shown.returncode == 0, shown.stderr.decode()
    manifest = json.loads((directory / "manifest.json").read_text())
    check_part(master, db, table, (directory / "schema.sql").read_text(), manifest, part.read_bytes(), shown.stdout)


def test_zstd_to_s3(master, replica, moto_server, s3, bucket, tmp_path, all_types) -> None:
    db, table = all_types
    config = write_config(tmp_path, replica, f"s3://{bucket}/raw", compression="zstd",
                          s3={"endpoint_url": moto_server.endpoint_url})
    env = moto_server.subprocess_env()
    result = run_tracker(config, "dump", f"{db}.`{table}`", "--date", "2026-11-03", env=env)
    assert result.returncode == 0, result.stderr.decode()
    prefix = f"raw/main/{encode_segment(db)}/{encode_segment(table)}/dt=2026-11-03/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == [prefix + n for n in ("_SUCCESS", "manifest.json", "part-00000.tsv.zst", "schema.sql")]

    def get(name: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()

    shown = run_tracker(config, "cat", f"s3://{bucket}/{prefix}part-00000.tsv.zst", env=env)
    assert shown.returncode == 0, shown.stderr.decode()
    check_part(master, db, table, get("schema.sql").decode(), json.loads(get("manifest.json")),
               get("part-00000.tsv.zst"), shown.stdout)


def test_duckdb_reads_a_zstd_part_directly(master, replica, replica_set, fresh_db, tmp_path) -> None:
    """DuckDB's read_csv opens .zst itself.  OUTFILE's text is not CSV: a value holding an
    escaped tab or newline (``\\t``, ``\\n``) or a backslash comes back with its backslashes,
    so this table holds none; NULL (``\\N``) maps through ``nullstr``."""
    table = "plain"
    master.sql(f"CREATE TABLE {qualified(fresh_db, table)} (id INT PRIMARY KEY, name VARCHAR(20), amount DECIMAL(10,2)) DEFAULT CHARSET=utf8mb4")
    rows = [(1, "anna", decimal.Decimal("1.50")), (2, None, None), (3, "Müller 😀", decimal.Decimal("-99999999.99"))]
    conn = master.connect()
    try:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {qualified(fresh_db, table)} VALUES (%s, %s, %s)", rows)
        conn.commit()
    finally:
        conn.close()
    replica_set.sync()
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica, f"file://{dest}", compression="zstd")
    result = run_tracker(config, "dump", f"{fresh_db}.{table}", "--date", "2026-11-03")
    assert result.returncode == 0, result.stderr.decode()
    part = dest / "main" / encode_segment(fresh_db) / table / "dt=2026-11-03" / "part-00000.tsv.zst"
    got = duckdb.sql(
        f"SELECT id, name, amount FROM read_csv('{part}', delim = '\t', header = false, quote = '', escape = '', nullstr = '\\N',"
        " columns = {'id': 'INTEGER', 'name': 'VARCHAR', 'amount': 'DECIMAL(10,2)'}) ORDER BY id"
    ).fetchall()
    assert got == [tuple(r) for r in replica.sql(f"SELECT id, name, amount FROM {qualified(fresh_db, table)} ORDER BY id")] == rows
