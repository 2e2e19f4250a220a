"""Iceberg registration against real Parquet files, a real SQL catalog (sqlite) and the moto S3 server.

The files are written here with pyarrow, with the Arrow types the decoder
produces (``tracker.warehouse.decode``), and read back through pyiceberg's
own scan: values are compared one by one with what was written.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracker.warehouse.catalog import RegistrationFailed, SchemaRefused, catalog_properties, open_catalog, register_date

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
IDENT = ("main", "shop", "orders")


def col(name: str, type_: pa.DataType, mysql: str) -> pa.Field:
    # NOT NULL columns arrive as non-nullable fields; the table still makes them optional.
    return pa.field(name, type_, nullable=name != "id", metadata={b"mysql.type": mysql.encode()})


DT = pa.field("dt", pa.string())

# Day 1: every Arrow type the decoder writes.
SCHEMA_1 = pa.schema(
    [
        col("id", pa.int32(), "int"),
        col("ti", pa.int8(), "tinyint"),
        col("si", pa.int16(), "smallint"),
        col("ui", pa.int64(), "int unsigned"),
        col("bu", pa.decimal128(20, 0), "bigint unsigned"),
        col("amount", pa.decimal128(10, 2), "decimal(10,2)"),
        col("huge", pa.string(), "decimal(65,30)"),
        col("fl", pa.float32(), "float"),
        col("db", pa.float64(), "double"),
        col("day", pa.date32(), "date"),
        col("at", pa.timestamp("us"), "datetime(6)"),
        col("ts", pa.timestamp("us", tz="UTC"), "timestamp(6)"),
        col("dur", pa.int64(), "time(6)"),
        col("yr", pa.int16(), "year(4)"),
        col("flag", pa.bool_(), "bit(1)"),
        col("name", pa.string(), "varchar(20)"),
        col("body", pa.large_string(), "longtext"),
        col("raw", pa.binary(), "varbinary(16)"),
        col("blob", pa.large_binary(), "longblob"),
        col("dropped", pa.string(), "varchar(5)"),
        DT,
    ]
)
ROWS_1 = [
    dict(
        id=1, ti=-128, si=32767, ui=4294967295, bu=decimal.Decimal(18446744073709551615),
        amount=decimal.Decimal("-99999999.99"), huge="-12345678901234567890123456789012345.123456789012345678901234567890",
        fl=3.4028234663852886e38, db=-0.0, day=dt.date(1000, 1, 1), at=dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        ts=dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=dt.timezone.utc), dur=-3020399000000, yr=1901, flag=True,
        name="𝄞 é\t\n\\", body="x" * 1000, raw=bytes(range(16)), blob=bytes(range(256)) * 4, dropped="gone",
    ),
    dict(
        id=2, ti=None, si=None, ui=None, bu=None, amount=None, huge=None, fl=None, db=None, day=None, at=None,
        ts=None, dur=None, yr=None, flag=None, name=None, body=None, raw=None, blob=None, dropped=None,
    ),
    dict(
        id=3, ti=127, si=-32768, ui=0, bu=decimal.Decimal(0), amount=decimal.Decimal("0.01"), huge="0",
        fl=-1.5, db=2.2250738585072014e-308, day=dt.date(1970, 1, 1), at=dt.datetime(1970, 1, 1),
        ts=dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc), dur=3020399999999, yr=0, flag=False,
        name="", body="", raw=b"", blob=b"\x00", dropped="",
    ),
]

# Day 2: ALTER TABLE … ADD COLUMN added, DROP COLUMN dropped, INT→BIGINT, FLOAT→DOUBLE,
# DECIMAL(10,2)→DECIMAL(14,2), TINYINT→SMALLINT (both int in Iceberg), and BIGINT→INT on ui (narrower).
SCHEMA_2 = pa.schema(
    [
        col("id", pa.int64(), "bigint"),
        col("ti", pa.int16(), "smallint"),
        col("si", pa.int16(), "smallint"),
        col("ui", pa.int32(), "int"),
        col("bu", pa.decimal128(20, 0), "bigint unsigned"),
        col("amount", pa.decimal128(14, 2), "decimal(14,2)"),
        col("huge", pa.string(), "decimal(65,30)"),
        col("fl", pa.float64(), "double"),
        col("db", pa.float64(), "double"),
        col("day", pa.date32(), "date"),
        col("at", pa.timestamp("us"), "datetime(6)"),
        col("ts", pa.timestamp("us", tz="UTC"), "timestamp(6)"),
        col("dur", pa.int64(), "time(6)"),
        col("yr", pa.int16(), "year(4)"),
        col("flag", pa.bool_(), "bit(1)"),
        col("name", pa.string(), "varchar(20)"),
        col("body", pa.large_string(), "longtext"),
        col("raw", pa.binary(), "varbinary(16)"),
        col("blob", pa.large_binary(), "longblob"),
        col("added", pa.string(), "varchar(10)"),
        DT,
    ]
)
ROWS_2 = [
    {**{k: v for k, v in ROWS_1[0].items() if k != "dropped"}, "id": 2**40, "ti": 1000, "ui": -5,
     "amount": decimal.Decimal("999999999999.99"), "fl": 0.1, "added": "new"},
    {**{k: v for k, v in ROWS_1[1].items() if k != "dropped"}, "id": 2**40 + 1, "added": None},
]


@dataclass
class Warehouse:
    """Where the Parquet files go (file:// or moto S3) and the catalog's properties."""

    location: str  # the table's location URL
    props: dict[str, Any]
    put: Callable[[str, bytes], str]  # relative key, data -> URL
    exists: Callable[[str], bool]  # URL -> whether the file is still there

    def write(self, date: dt.date, rows: list[dict], schema: pa.Schema, index: int = 0) -> str:
        table = pa.Table.from_pylist([{**r, "dt": date.isoformat()} for r in rows], schema=schema)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return self.put(f"dt={date.isoformat()}/part-{index:05d}.parquet", buffer.getvalue())

    def register(self, schema: pa.Schema, date: dt.date, urls: list[str], ident: tuple[str, ...] = IDENT) -> None:
        register_date(self.props, ident, schema, date, urls, self.location)

    def table(self, ident: tuple[str, ...] = IDENT):
        return open_catalog(self.props).load_table(ident)


@pytest.fixture(params=["file", "s3"])
def warehouse(request, tmp_path: Path) -> Warehouse:
    props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db"}
    if request.param == "file":
        root = tmp_path / "wh" / "main" / "shop" / "orders"

        def put_file(key: str, data: bytes) -> str:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return f"file://{path}"

        return Warehouse(f"file://{root}", props, put_file, lambda url: Path(url[len("file://"):]).exists())
    moto_server = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("bucket")
    request.getfixturevalue("aws_env")  # credentials from the AWS chain, as in production
    s3 = moto_server.client()
    prefix = "warehouse/main/shop/orders"

    def put_s3(key: str, data: bytes) -> str:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)
        return f"s3://{bucket}/{prefix}/{key}"

    def exists(url: str) -> bool:
        key = url[len(f"s3://{bucket}/"):]
        return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 1

    props = catalog_properties(props, moto_server.endpoint_url, None)
    return Warehouse(f"s3://{bucket}/{prefix}", props, put_s3, exists)


def by_id(table: pa.Table) -> dict[int, dict]:
    return {row["id"]: row for row in table.to_pylist()}


def assert_rows(got: dict, want: dict, date: dt.date) -> None:
    """Every column's value as written; columns absent from that date's files are NULL."""
    for name, value in got.items():
        expected = date.isoformat() if name == "dt" else want.get(name)
        if isinstance(expected, float) and expected == 0.0:
            assert str(value) == str(expected), (want["id"], name, value, expected)  # -0.0 stays -0.0
        else:
            assert value == expected, (want["id"], name, value, expected)


def test_table_follows_added_dropped_and_widened_columns(warehouse: Warehouse) -> None:
    day1 = warehouse.write(D1, ROWS_1, SCHEMA_1)
    warehouse.register(SCHEMA_1, D1, [day1])
    day2 = warehouse.write(D2, ROWS_2, SCHEMA_2)
    warehouse.register(SCHEMA_2, D2, [day2])

    table = warehouse.table()
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert types["id"] == "long" and types["fl"] == "double" and types["amount"] == "decimal(14, 2)"
    assert types["ti"] == types["si"] == "int"  # Arrow int8/int16 are Iceberg int
    assert types["ui"] == "long"  # narrowed in MySQL: the table keeps the wider type
    assert types["bu"] == "decimal(20, 0)" and types["ts"] == "timestamptz" and types["at"] == "timestamp"
    assert types["dropped"] == "string" and types["added"] == "string"  # a dropped column stays
    assert all(f.optional for f in table.schema().fields)
    assert table.schema().find_field("amount").doc == "mysql: decimal(14,2)"
    assert [f.name for f in table.spec().fields] == ["dt"]
    assert table.metadata_location.startswith(warehouse.location + "/_iceberg/")
    assert type(table.io).__name__ == "PyArrowFileIO"  # also for s3:// (moto through s3.endpoint)

    rows = by_id(table.scan().to_arrow())
    assert len(rows) == len(ROWS_1) + len(ROWS_2)
    for want in ROWS_1:
        assert_rows(rows[want["id"]], want, D1)  # "added" is NULL in day 1
    for want in ROWS_2:
        assert_rows(rows[want["id"]], want, D2)  # "dropped" is NULL in day 2
    assert rows[1]["fl"] == pytest.approx(3.4028234663852886e38, rel=0) and rows[2**40]["fl"] == 0.1
    assert [s.summary.operation.value for s in table.snapshots()] == ["append", "append"]

    only_day2 = table.scan(row_filter=f"dt = '{D2.isoformat()}'").to_arrow()
    assert sorted(only_day2["id"].to_pylist()) == [2**40, 2**40 + 1]


@pytest.mark.parametrize(
    "column, old, new, named",
    [
        ("n", (pa.int32(), "int"), (pa.string(), "varchar(10)"), "from int (mysql: int) to string (mysql: varchar(10))"),
        ("n", (pa.string(), "varchar(10)"), (pa.int32(), "int"), "from string (mysql: varchar(10)) to int (mysql: int)"),
        ("n", (pa.decimal128(10, 2), "decimal(10,2)"), (pa.decimal128(10, 3), "decimal(10,3)"), "decimal(10, 2)"),
        ("n", (pa.decimal128(30, 2), "decimal(30,2)"), (pa.string(), "decimal(40,2)"), "to string (mysql: decimal(40,2))"),
        ("n", (pa.int64(), "bigint"), (pa.decimal128(20, 0), "bigint unsigned"), "to decimal(20, 0)"),
        ("n", (pa.timestamp("us"), "datetime"), (pa.timestamp("us", tz="UTC"), "timestamp"), "to timestamptz"),
        ("n", (pa.date32(), "date"), (pa.timestamp("us"), "datetime"), "from date"),
        ("n", (pa.string(), "varchar(10)"), (pa.binary(), "varbinary(10)"), "to binary"),  # pyiceberg alone allows it
        ("n", (pa.float64(), "double"), (pa.float32(), "float"), None),  # narrower: accepted, table stays double
    ],
)
def test_incompatible_change_is_refused_with_one_line(warehouse: Warehouse, column, old, new, named) -> None:
    schema_1 = pa.schema([col("id", pa.int32(), "int"), col(column, *old), DT])
    schema_2 = pa.schema([col("id", pa.int32(), "int"), col(column, *new), DT])
    first = pa.Table.from_pylist([{"id": 1, column: None, "dt": D1.isoformat()}], schema=schema_1)
    second = pa.Table.from_pylist([{"id": 2, column: None, "dt": D2.isoformat()}], schema=schema_2)
    warehouse.register(schema_1, D1, [warehouse.write(D1, first.to_pylist(), schema_1)])
    url = warehouse.write(D2, second.to_pylist(), schema_2)
    before = warehouse.table()
    if named is None:
        warehouse.register(schema_2, D2, [url])
        assert str(warehouse.table().schema().find_field(column).field_type) == str(before.schema().find_field(column).field_type)
        assert sorted(warehouse.table().scan().to_arrow()["id"].to_pylist()) == [1, 2]
        return
    with pytest.raises(SchemaRefused) as refused:
        warehouse.register(schema_2, D2, [url])
    message = str(refused.value)
    assert "\n" not in message and "main.shop.orders" in message and f"column {column!r}" in message
    assert named in message
    after = warehouse.table()
    assert after.schema() == before.schema() and len(after.snapshots()) == 1  # nothing committed
    assert after.scan().to_arrow()["id"].to_pylist() == [1]
    assert warehouse.exists(url)  # the Parquet file stays


def test_reconverting_a_date_replaces_its_files_in_one_snapshot(warehouse: Warehouse) -> None:
    schema = pa.schema([col("id", pa.int32(), "int"), col("v", pa.string(), "text"), DT])
    warehouse.register(schema, D1, [warehouse.write(D1, [{"id": 1, "v": "a"}], schema, 0),
                                    warehouse.write(D1, [{"id": 2, "v": "b"}], schema, 1)])
    warehouse.register(schema, D2, [warehouse.write(D2, [{"id": 10, "v": "day2"}], schema)])
    # Re-converted: part-00000 rewritten in place with other rows, part-00001 no longer produced.
    new = warehouse.write(D1, [{"id": 1, "v": "A"}, {"id": 3, "v": "C"}], schema, 0)
    warehouse.register(schema, D1, [new])

    table = warehouse.table()
    snapshots = table.snapshots()
    assert len(snapshots) == 3
    last = snapshots[-1].summary
    assert last.operation.value == "overwrite"
    assert last["deleted-data-files"] == "2" and last["added-data-files"] == "1" and last["tracker.dt"] == D1.isoformat()
    rows = sorted((r["id"], r["v"], r["dt"]) for r in table.scan().to_arrow().to_pylist())
    assert rows == [(1, "A", "2026-11-01"), (3, "C", "2026-11-01"), (10, "day2", "2026-11-02")]
    # The snapshot before still lists D1's two old files (for time travel).
    previous = table.scan(snapshot_id=snapshots[1].snapshot_id).plan_files()
    assert sorted(task.file.file_path.rsplit("/", 1)[-1] for task in previous) == [
        "part-00000.parquet", "part-00000.parquet", "part-00001.parquet"]


def test_file_of_another_date_is_refused(warehouse: Warehouse) -> None:
    schema = pa.schema([col("id", pa.int32(), "int"), DT])
    url = warehouse.write(D1, [{"id": 1}], schema)
    with pytest.raises(RegistrationFailed, match="holds dt='2026-11-01', not 2026-11-02"):
        warehouse.register(schema, D2, [url])
    with pytest.raises(RegistrationFailed, match="registering dt=2026-11-01 failed: .*missing"):
        warehouse.register(schema, D1, [url.replace("part-00000", "missing")])
    assert warehouse.table().snapshots() == []


def test_concurrent_registrations_of_one_table_all_land(tmp_path: Path) -> None:
    """Converters of different dates commit to one table at once: a lost commit race is retried."""
    root = tmp_path / "wh"
    props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db"}
    schema = pa.schema([col("id", pa.int32(), "int"), DT])
    dates = [D1 + dt.timedelta(days=i) for i in range(4)]
    urls = {}
    for i, date in enumerate(dates):
        path = root / f"dt={date.isoformat()}" / "part-00000.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([{"id": i, "dt": date.isoformat()}], schema=schema), path)
        urls[date] = f"file://{path}"
    register_date(props, IDENT, schema, dates[0], [urls[dates[0]]], f"file://{root}")  # creates the table
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def register(date: dt.date) -> None:
        try:
            start.wait()
            register_date(props, IDENT, schema, date, [urls[date]], f"file://{root}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(date,)) for date in dates[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    table = open_catalog(props).load_table(IDENT)
    assert sorted(table.scan().to_arrow()["id"].to_pylist()) == [0, 1, 2, 3]
    assert len(table.snapshots()) == 4


def test_metadata_lives_under_the_table_beside_the_partitions(tmp_path: Path) -> None:
    """Parquet readers of the table's folder skip ``_iceberg`` (a '_' name) and see only dt= folders."""
    root = tmp_path / "wh" / f"t{uuid.uuid4().hex[:6]}"
    props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db"}
    schema = pa.schema([col("id", pa.int32(), "int"), DT])
    path = root / "dt=2026-11-01" / "part-00000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"id": 7, "dt": "2026-11-01"}], schema=schema), path)
    register_date(props, IDENT, schema, D1, [f"file://{path}"], f"file://{root}")
    assert sorted(p.name for p in root.iterdir()) == ["_iceberg", "dt=2026-11-01"]
    assert any(p.name.endswith(".metadata.json") for p in (root / "_iceberg").iterdir())
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-00000.parquet"]  # no copy, nothing added
    import pyarrow.dataset as ds

    assert ds.dataset(root, format="parquet", partitioning="hive").to_table()["id"].to_pylist() == [7]


# --- end to end: tracker dump → tracker convert → Iceberg, following ALTER TABLE on the master ---------------


def _run(config: Path, *args: str, env=None, status: int = 0):
    from tests.integration.helpers import run_tracker

    result = run_tracker(config, *args, env=env)
    assert result.returncode == status, (result.stdout.decode(), result.stderr.decode())
    assert b"Traceback" not in result.stderr
    return result


@pytest.mark.parametrize("store", ["file", "s3"])
def test_convert_follows_alter_table_into_iceberg(store, master, replica, replica_set, fresh_db, tmp_path, request) -> None:
    import yaml

    from tests.integration.helpers import write_config
    from tracker.db import qualified
    from tracker.store.layout import encode_segment

    db, table = fresh_db, "orders"
    name = qualified(db, table)
    env, s3_section = None, {}
    if store == "file":
        destination, location = f"file://{tmp_path}/dumps", f"file://{tmp_path}/wh"
    else:
        moto_server, bucket = request.getfixturevalue("moto_server"), request.getfixturevalue("bucket")
        env, s3_section = moto_server.subprocess_env(), {"endpoint_url": moto_server.endpoint_url}
        destination, location = f"s3://{bucket}/dumps", f"s3://{bucket}/wh"
    catalog = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db"}
    dumper = write_config(tmp_path, replica, destination, **({"s3": s3_section} if s3_section else {}))
    converter = tmp_path / "convert.yaml"
    converter.write_text(yaml.safe_dump({
        "namespace": "main", "destination": destination, **({"s3": s3_section} if s3_section else {}),
        "warehouse": {"location": location, "catalog": catalog},
    }))

    def day(date: dt.date) -> list[tuple]:
        _run(dumper, "dump", f"{db}.{table}", "--date", date.isoformat(), env=env)
        _run(converter, "convert", f"{db}.{table}", "--date", date.isoformat(), env=env)
        return [tuple(r) for r in replica.sql(f"SELECT * FROM {name} ORDER BY id")]

    master.sql(f"CREATE TABLE {name} (id INT PRIMARY KEY, n INT, gone VARCHAR(10), price DECIMAL(10,2)) DEFAULT CHARSET=utf8mb4")
    master.sql(f"INSERT INTO {name} VALUES (1, -5, 'a', 1.25), (2, NULL, NULL, NULL), (3, 2147483647, 'ü\\t', -0.01)")
    replica_set.sync()
    rows_1 = day(D1)

    master.sql(f"ALTER TABLE {name} ADD COLUMN added VARCHAR(10) AFTER id, DROP COLUMN gone,"
               " MODIFY n BIGINT, MODIFY price DECIMAL(14,2)")
    master.sql(f"INSERT INTO {name} VALUES (4, 'new', 9000000000, 123456789012.34), (5, NULL, NULL, NULL)")
    master.sql(f"DELETE FROM {name} WHERE id = 2")
    replica_set.sync()
    rows_2 = day(D2)

    props = catalog_properties(catalog, s3_section.get("endpoint_url"), None)
    if env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            request.getfixturevalue("monkeypatch").setenv(key, env[key])
    iceberg = open_catalog(props).load_table(("main", db, table))
    got = {(r["dt"], r["id"]): r for r in iceberg.scan().to_arrow().to_pylist()}
    want = {(D1.isoformat(), i): dict(id=i, n=n, gone=g, price=p, added=None) for i, n, g, p in rows_1}
    want |= {(D2.isoformat(), i): dict(id=i, added=a, n=n, price=p, gone=None) for i, a, n, p in rows_2}
    assert set(got) == set(want)
    for key, row in want.items():
        assert {k: got[key][k] for k in row} == row, key
    types = {f.name: str(f.field_type) for f in iceberg.schema().fields}
    assert types["n"] == "long" and types["price"] == "decimal(14, 2)" and types["gone"] == "string"
    assert len(iceberg.snapshots()) == 2
    if store == "s3":
        return  # re-conversion and refusal do not depend on the store: file:// below, S3 in the tests above

    # Re-converting a date replaces its files in one more snapshot, same values.
    _run(converter, "convert", f"{db}.{table}", "--date", D1.isoformat(), "--force", env=env)
    iceberg = open_catalog(props).load_table(("main", db, table))
    assert len(iceberg.snapshots()) == 3 and iceberg.snapshots()[-1].summary.operation.value == "overwrite"
    again = {(r["dt"], r["id"]): r for r in iceberg.scan().to_arrow().to_pylist()}
    assert again == got

    # INT → VARCHAR cannot be followed: the date's Parquet files are written, its registration refused.
    master.sql(f"ALTER TABLE {name} MODIFY n VARCHAR(20)")
    replica_set.sync()
    _run(dumper, "dump", f"{db}.{table}", "--date", D3.isoformat(), env=env)
    refused = _run(converter, "convert", f"{db}.{table}", "--date", D3.isoformat(), env=env, status=1)
    lines = refused.stderr.decode().strip().splitlines()
    errors = [line for line in lines if line.startswith("tracker: error:")]
    assert len(errors) == 1 and "column 'n'" in errors[0], lines
    assert "long (mysql: bigint(20))" in errors[0] and "string (mysql: varchar(20))" in errors[0], errors[0]
    iceberg = open_catalog(props).load_table(("main", db, table))
    assert len(iceberg.snapshots()) == 3
    prefix = f"main/{encode_segment(db)}/{encode_segment(table)}/dt={D3.isoformat()}/part-00000.parquet"
    assert (tmp_path / "wh" / prefix).stat().st_size > 0


def test_catalog_properties_take_the_store_from_trackers_s3_section() -> None:
    assert catalog_properties({"type": "sql"}, "http://minio:9000", "eu-west-3") == {
        "type": "sql", "s3.endpoint": "http://minio:9000", "s3.region": "eu-west-3"}
    # Another store without a region: the API's default, never a lookup at AWS.
    assert catalog_properties({}, "http://minio:9000", None) == {"s3.endpoint": "http://minio:9000", "s3.region": "us-east-1"}
    # Properties given in warehouse.catalog win; AWS itself (no endpoint) resolves the bucket's region.
    assert catalog_properties({"s3.region": "ap-south-1"}, "http://x", "eu-west-3")["s3.region"] == "ap-south-1"
    assert catalog_properties({}, None, None) == {}
