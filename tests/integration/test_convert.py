"""``tracker convert``: layout, values through DuckDB and pyarrow, re-runs, both store kinds."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from tests.integration import alltypes
from tests.integration.helpers import run_tracker, write_config
from tracker.db import qualified
from tracker.store.layout import encode_segment

DAY1, DAY2 = "2026-11-01", "2026-11-02"


def converter_config(tmp_path: Path, destination: str, location: str, namespace: str = "main", **warehouse) -> Path:
    """A converter host's config: no mysql, no outfile_dir."""
    data = {"namespace": namespace, "destination": destination, "warehouse": {"location": location, **warehouse}}
    path = tmp_path / f"convert-{namespace}-{len(list(tmp_path.glob('convert-*')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def dump(config: Path, *args: str, env=None) -> None:
    result = run_tracker(config, "dump", *args, env=env)
    assert result.returncode == 0, result.stderr.decode()


def convert(config: Path, *args: str, env=None, status: int = 0):
    result = run_tracker(config, "convert", *args, env=env)
    assert result.returncode == status, (result.stdout.decode(), result.stderr.decode())
    assert b"Traceback" not in result.stderr
    return result


def dt_folder(root: Path, db: str, table: str, date: str, namespace: str = "main") -> Path:
    return root / namespace / encode_segment(db) / encode_segment(table) / f"dt={date}"


def assert_only_parquet_and_underscore(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir())
    assert names, folder
    assert all(n.endswith(".parquet") or n.startswith("_") for n in names), names
    assert "_SUCCESS" in names and "_manifest.json" in names
    assert not [n for n in names if n.startswith("_lease")], names  # released


def server_rows(replica, db: str, table: str) -> list[tuple]:
    return [tuple(r) for r in replica.sql(f"SELECT id, name, price FROM {qualified(db, table)} ORDER BY id")]


@pytest.fixture
def orders(master, replica_set, fresh_db) -> tuple[str, str]:
    table = "orders"
    master.sql(f"CREATE TABLE {qualified(fresh_db, table)} (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2))")
    master.sql(
        f"INSERT INTO {qualified(fresh_db, table)} SELECT seq, CONCAT('item ', seq, '\\t\\n\\\\'), seq / 4 FROM `{fresh_db}`.seq_1_to_200"
    )
    replica_set.sync()
    return fresh_db, table


def test_two_dates_read_by_duckdb_and_pyarrow(master, replica, replica_set, tmp_path, orders) -> None:
    db, table = orders
    dumps, warehouse = tmp_path / "dumps", tmp_path / "wh"
    dump_config = write_config(tmp_path, replica, f"file://{dumps}")
    dump(dump_config, f"{db}.{table}", "--date", DAY1)
    day1 = server_rows(replica, db, table)
    master.sql(f"INSERT INTO {qualified(db, table)} VALUES (1000, NULL, NULL), (1001, 'late', 1.5)")
    replica_set.sync()
    dump(dump_config, f"{db}.{table}", "--date", DAY2)
    day2 = server_rows(replica, db, table)

    config = converter_config(tmp_path, f"file://{dumps}", f"file://{warehouse}")
    for day in (DAY1, DAY2):
        out = convert(config, "--date", day).stdout.decode()
        assert f"done {db}.{table} dt={day} rows=" in out, out
        assert_only_parquet_and_underscore(dt_folder(warehouse, db, table, day))

    glob = f"{warehouse}/main/{encode_segment(db)}/{encode_segment(table)}/*/*.parquet"
    # DuckDB's hive autodetection types dt as DATE; the file's own column is the string.
    rows = duckdb.sql(f"SELECT dt, id, name, price FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY dt, id").fetchall()
    assert {type(r[0]) for r in rows} == {dt.date}
    rows = [(r[0].isoformat(), *r[1:]) for r in rows]
    strings = duckdb.sql(f"SELECT DISTINCT dt FROM read_parquet('{glob}', hive_partitioning = false) ORDER BY dt").fetchall()
    assert strings == [(DAY1,), (DAY2,)]
    assert [r[1:] for r in rows if r[0] == DAY1] == day1
    assert [r[1:] for r in rows if r[0] == DAY2] == day2
    assert {r[0] for r in rows} == {DAY1, DAY2}

    dataset = ds.dataset(str(warehouse / "main" / encode_segment(db) / encode_segment(table)), format="parquet", partitioning="hive")
    data = dataset.to_table().sort_by([("dt", "ascending"), ("id", "ascending")])
    assert data.schema.field("dt").type == pa.string() and data.column_names[-1] == "dt"
    got = list(zip(data.column("dt").to_pylist(), data.column("id").to_pylist(), data.column("name").to_pylist(), data.column("price").to_pylist()))
    assert got == [(DAY1, *r) for r in day1] + [(DAY2, *r) for r in day2]

    meta = pq.read_metadata(dt_folder(warehouse, db, table, DAY1) / "part-00000.parquet")
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.row_group(0).column(0).statistics.has_min_max
    source = json.loads(meta.metadata[b"tracker.source"])
    assert (source["db"], source["table"], source["rows"]) == (db, table, len(day1))

    again = convert(config, "--date", DAY1).stdout.decode()
    assert f"up-to-date {db}.{table} dt={DAY1}" in again


def test_every_type_value_by_value_through_pyarrow_duckdb_and_iceberg(master, replica, replica_set, fresh_db, tmp_path) -> None:
    table = alltypes.create_alltypes_table(master, fresh_db)
    replica_set.sync()
    dumps, warehouse = tmp_path / "dumps", tmp_path / "wh"
    dump(write_config(tmp_path, replica, f"file://{dumps}"), f"{fresh_db}.{table}", "--date", DAY1)
    expected = alltypes.expected_values(replica, fresh_db, table)
    zero_dates = alltypes.expected_zero_dates(replica, fresh_db, table)
    assert zero_dates  # the table has zero dates: they become NULL and are counted

    catalog = {"type": "sql", "uri": f"sqlite:///{tmp_path / 'catalog.db'}"}
    out = convert(converter_config(tmp_path, f"file://{dumps}", f"file://{warehouse}", catalog=catalog), "--date", DAY1).stdout.decode()
    assert f"done {fresh_db}.{table} dt={DAY1} rows={len(expected['id'])} files=1 zero_dates={sum(zero_dates.values())}" in out, out
    folder = dt_folder(warehouse, fresh_db, table, DAY1)
    assert json.loads((folder / "_manifest.json").read_text())["zero_dates"] == zero_dates

    root = str(warehouse / "main" / encode_segment(fresh_db) / encode_segment(table))
    data = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert alltypes.diff_values(expected, alltypes.arrow_columns(data)) == []

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    result = con.execute(f"SELECT * FROM read_parquet('{root}/*/*.parquet', hive_partitioning = true) ORDER BY id")
    names = [d[0] for d in result.description]
    rows = result.fetchall()
    got = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    # DuckDB reads every value back as written; its own type choices differ from pyarrow's only in
    # Python form: TIMESTAMP WITH TIME ZONE comes back in the session zone (UTC here).
    assert alltypes.diff_values(expected, got) == []

    # The same files through the Iceberg table they were registered in (pyiceberg's own reader,
    # mapping the files' columns by name): every value equal too.
    from pyiceberg.catalog import load_catalog

    iceberg = load_catalog("tracker", **catalog).load_table(("main", fresh_db, table))
    scanned = iceberg.scan().to_arrow().sort_by("id")
    assert scanned.num_rows == len(expected["id"])
    assert alltypes.diff_values(expected, alltypes.arrow_columns(scanned)) == []


def test_strict_refuses_zero_dates_with_one_line(master, replica, replica_set, fresh_db, tmp_path) -> None:
    table = "zd"
    master.sql(f"CREATE TABLE {qualified(fresh_db, table)} (id INT PRIMARY KEY, d DATE)")
    master.sql(f"SET SESSION sql_mode = ''")
    conn = master.connect(database=fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = ''")
            cur.execute(f"INSERT INTO {qualified(fresh_db, table)} VALUES (1, '2020-01-01'), (2, '0000-00-00')")
    finally:
        conn.close()
    replica_set.sync()
    dumps, warehouse = tmp_path / "dumps", tmp_path / "wh"
    dump(write_config(tmp_path, replica, f"file://{dumps}"), f"{fresh_db}.{table}", "--date", DAY1)
    strict = converter_config(tmp_path, f"file://{dumps}", f"file://{warehouse}", strict=True)
    result = convert(strict, "--date", DAY1, status=1)
    errors = result.stderr.decode().splitlines()
    errors = [line for line in errors if line.startswith("tracker: error:")]
    assert len(errors) == 1 and f"convert {fresh_db}.{table} dt={DAY1}" in errors[0] and "'d'" in errors[0] or "d:" in errors[0], errors
    folder = dt_folder(warehouse, fresh_db, table, DAY1)
    assert not list(folder.glob("*.parquet")) and not (folder / "_SUCCESS").exists()
    lenient = converter_config(tmp_path, f"file://{dumps}", f"file://{warehouse}")
    out = convert(lenient, "--date", DAY1).stdout.decode()
    assert f"rows=2 files=1 zero_dates=1" in out
    assert pq.read_table(folder / "part-00000.parquet").column("d").to_pylist() == [dt.date(2020, 1, 1), None]


def test_s3_location_force_and_print_ddl(master, replica, replica_set, moto_server, s3, bucket, tmp_path, orders) -> None:
    """Datasets in S3, Parquet in S3 (moto), registered in an Iceberg SQL catalog; --force rewrites the date."""
    db, table = orders
    env = moto_server.subprocess_env()
    dump_config = write_config(tmp_path, replica, f"s3://{bucket}/dumps", s3={"endpoint_url": moto_server.endpoint_url})
    dump(dump_config, f"{db}.{table}", "--date", DAY1, env=env)
    config = tmp_path / "convert-s3.yaml"
    config.write_text(yaml.safe_dump({
        "namespace": "main",
        "destination": f"s3://{bucket}/dumps",
        "s3": {"endpoint_url": moto_server.endpoint_url},
        "warehouse": {"location": f"s3://{bucket}/wh", "catalog": {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db"}},
    }))
    out = convert(config, f"{db}.{table}", "--date", DAY1, "--print-ddl", env=env).stdout.decode()
    assert f"done {db}.{table} dt={DAY1} rows=200 files=1" in out, out
    assert "CREATE EXTERNAL TABLE" in out and "PARTITION" in out and DAY1 in out

    prefix = f"wh/main/{encode_segment(db)}/{table}/dt={DAY1}/"
    keys = sorted(o["Key"][len(prefix):] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == ["_SUCCESS", "_manifest.json", "part-00000.parquet"]
    body = s3.get_object(Bucket=bucket, Key=prefix + "part-00000.parquet")
    data = pq.read_table(pa.BufferReader(body["Body"].read())).sort_by("id")
    rows = [tuple(r) for r in replica.sql(f"SELECT id, name, price FROM {qualified(db, table)} ORDER BY id")]
    assert list(zip(*(data.column(n).to_pylist() for n in ("id", "name", "price")))) == rows

    from tracker.warehouse.catalog import open_catalog

    catalog = open_catalog({"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "s3.endpoint": moto_server.endpoint_url, **_aws(env)})
    iceberg = catalog.load_table(("main", db, table)).scan().to_arrow().sort_by("id")
    assert list(zip(*(iceberg.column(n).to_pylist() for n in ("id", "name", "price")))) == rows

    again = convert(config, f"{db}.{table}", "--date", DAY1, "--force", env=env)
    assert f"done {db}.{table} dt={DAY1} rows=200 files=1" in again.stdout.decode()
    assert b"event=convert_unpublished" in again.stderr and b"reused=0" in again.stderr  # redone, not reused
    missing = convert(config, f"{db}.nope", "--date", DAY1, env=env, status=1)
    assert f"tracker: error: convert {db}.nope dt={DAY1}: no dataset" in missing.stderr.decode()


def _aws(env: dict) -> dict:
    return {"s3.access-key-id": env["AWS_ACCESS_KEY_ID"], "s3.secret-access-key": env["AWS_SECRET_ACCESS_KEY"], "s3.region": env.get("AWS_DEFAULT_REGION", "us-east-1")}
