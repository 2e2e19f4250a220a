"""Spark (real, local[2]): the ``tracker`` data source, Parquet from ``tracker convert``, and ``--engine spark``.

One SparkSession for the module (a JVM start costs ~10 s).  If the JVM
cannot start, every test here errors: Spark support is not optional in CI.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import pytest
import yaml
from pyspark.sql import types as T

from sandbox.s3 import UNSET_ENV_VARS
from tests.integration import alltypes
from tests.integration.helpers import run_tracker, write_config
from tracker.db import qualified
from tracker.store.layout import encode_segment

DAY = "2026-11-01"
PARTITIONS = 3


# --- fixtures: one Spark, one dump, one local conversion --------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    import tracker.spark

    with pytest.MonkeyPatch.context() as mp:
        # Executors and the data source's planner run this interpreter (tracker importable).
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        mp.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        # The JVM and its Python workers inherit this environment: with no AWS credentials in
        # it, reads from S3 work only through the data source's options.
        for name in (*UNSET_ENV_VARS, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        session = (
            SparkSession.builder.master("local[2]")
            .appName("tracker tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    tracker.spark.register(session)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def source(master, replica, replica_set, moto_server, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Three tables dumped by ``tracker dump`` from a replica into moto S3.

    alltypes (every type, its edge values), parts (PARTITIONS partitions:
    one unit each) and broken (its one part is then corrupted in the store).
    """
    db = f"t_{uuid.uuid4().hex[:12]}"
    bucket = f"trk-{uuid.uuid4().hex[:16]}"
    master.sql(f"CREATE DATABASE `{db}`")
    alltypes.create_alltypes_table(master, db)
    master.sql(
        f"CREATE TABLE {qualified(db, 'parts')} (id INT PRIMARY KEY, note VARCHAR(40))"
        f" PARTITION BY HASH(id) PARTITIONS {PARTITIONS}"
    )
    master.sql(f"INSERT INTO {qualified(db, 'parts')} SELECT seq, CONCAT('n\\t', seq, '\\\\') FROM `{db}`.seq_1_to_90")
    master.sql(f"CREATE TABLE {qualified(db, 'broken')} (id INT PRIMARY KEY, v VARCHAR(40))")
    master.sql(f"INSERT INTO {qualified(db, 'broken')} SELECT seq, REPEAT('v', seq) FROM `{db}`.seq_1_to_40")
    replica_set.sync()
    moto_server.create_bucket(bucket)
    tmp = tmp_path_factory.mktemp("spark")
    destination = f"s3://{bucket}/snapshots"
    config = write_config(tmp, replica, destination, s3={"endpoint_url": moto_server.endpoint_url})
    env = moto_server.subprocess_env()
    result = run_tracker(config, "dump", f"{db}.alltypes", f"{db}.parts", f"{db}.broken", "--date", DAY, env=env)
    assert result.returncode == 0, result.stderr.decode()
    client = moto_server.client()
    broken_part = f"snapshots/{dataset_prefix(db, 'broken')}/part-00000.tsv.lz4"
    data = bytearray(client.get_object(Bucket=bucket, Key=broken_part)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=broken_part, Body=bytes(data))
    yield {"db": db, "bucket": bucket, "destination": destination, "tmp": tmp, "env": env, "client": client}
    moto_server.delete_bucket(bucket)
    master.sql(f"DROP DATABASE IF EXISTS `{db}`")
    replica_set.sync()


def dataset_prefix(db: str, table: str) -> str:
    return f"main/{encode_segment(db)}/{encode_segment(table)}/dt={DAY}"


def s3_options(moto_server) -> dict[str, str]:
    env = moto_server.env()
    return {
        "s3.endpoint_url": moto_server.endpoint_url,
        "s3.region": env["AWS_DEFAULT_REGION"],
        "s3.access_key_id": env["AWS_ACCESS_KEY_ID"],
        "s3.secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }


def read_tracker(spark, moto_server, url: str, **options: str):
    return spark.read.format("tracker").options(**s3_options(moto_server), **options).load(url)


def converter_config(source: dict[str, Any], moto_server, location: Path) -> Path:
    data = {
        "namespace": "main",
        "destination": source["destination"],
        "s3": {"endpoint_url": moto_server.endpoint_url},
        "warehouse": {"location": f"file://{location}"},
    }
    path = source["tmp"] / f"convert-{location.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def convert(source: dict[str, Any], moto_server, location: Path, *args: str, status: int = 1) -> tuple[str, str]:
    """Run ``tracker convert`` into ``location`` (with every table, the broken one fails it: status 1)."""
    config = converter_config(source, moto_server, location)
    result = run_tracker(config, "convert", "--date", DAY, *args, env=source["env"])
    stderr = result.stderr.decode()
    assert result.returncode == status, (result.stdout.decode(), stderr)
    assert "Traceback" not in stderr, stderr
    return result.stdout.decode(), stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tracker: error:")]


@pytest.fixture(scope="module")
def local_warehouse(source, moto_server) -> dict[str, Any]:
    location = source["tmp"] / "wh-local"
    out, stderr = convert(source, moto_server, location)
    assert "event=spark" not in stderr
    return {"location": location, "out": out, "errors": error_lines(stderr)}


# --- what Spark gives back ----------------------------------------------------

# Spark types of the decoded alltypes columns (unsigned widened, DATETIME without a zone, TIMESTAMP in UTC).
SPARK_TYPES = {
    "u8": T.ShortType(),
    "u32": T.LongType(),
    "u64": T.DecimalType(20, 0),
    "d38": T.DecimalType(38, 10),
    "d65": T.StringType(),  # DECIMAL(65,30): beyond Spark's 38 digits, the exact text
    "f": T.FloatType(),
    "dbl": T.DoubleType(),
    "b1": T.BooleanType(),
    "b64": T.DecimalType(20, 0),
    "dd": T.DateType(),
    "dt6": T.TimestampNTZType(),
    "ts6": T.TimestampType(),
    "tm6": T.LongType(),  # TIME: microseconds (negative and beyond 24 h)
    "yr": T.ShortType(),
    "vc": T.StringType(),
    "bl": T.BinaryType(),
}


def spark_columns(df) -> dict[str, list]:
    """A Spark DataFrame's values through Arrow (timestamps keep their zone), ordered by id."""
    return alltypes.arrow_columns(df.toArrow())


# Values Spark returns differently from the server's: none.  Every alltypes value comes back exactly
# through Spark, including -0.0, float32 extremes and subnormals, DATE 1000-01-01 and 9999-12-31,
# DATETIME(6) 9999-12-31 23:59:59.999999, TIMESTAMP(6) 1970-01-01 00:00:00.000001 and 2038-01-19.
# What Spark has no type for is mapped by the decoder before Spark sees it (and compared so):
# DECIMAL(65,30) as its exact text, TIME as microseconds, zero/partial dates as NULL, GEOMETRY as
# struct<wkb, srid>.  MySQL stores no NaN or infinity, so none is read.
SPARK_KNOWN: dict[tuple[str, int], Any] = {}


# --- the data source -------------------------------------------------------------


def test_every_value_through_the_data_source(spark, moto_server, source, replica) -> None:
    db = source["db"]
    url = f"s3://{source['bucket']}/snapshots/{dataset_prefix(db, 'alltypes')}"
    df = read_tracker(spark, moto_server, url)
    types = {f.name: f.dataType for f in df.schema}
    assert {name: types[name] for name in SPARK_TYPES} == SPARK_TYPES
    assert df.schema["vc"].metadata.get("mysql.type", "").startswith("varchar")
    got = spark_columns(df)
    expected = alltypes.expected_values(replica, db)
    assert list(got) == [c.name for c in alltypes.COLUMNS]
    problems = alltypes.diff_values(expected, got, known=SPARK_KNOWN)
    assert not problems, "\n".join(problems[:40])


def test_one_partition_per_unit(spark, moto_server, source, replica) -> None:
    db = source["db"]
    url = f"s3://{source['bucket']}/snapshots/{dataset_prefix(db, 'parts')}"
    manifest = json.loads(
        source["client"].get_object(Bucket=source["bucket"], Key=f"snapshots/{dataset_prefix(db, 'parts')}/manifest.json")["Body"].read()
    )
    assert len(manifest["units"]) == PARTITIONS
    df = read_tracker(spark, moto_server, url)
    assert df.rdd.getNumPartitions() == PARTITIONS
    rows = sorted((r["id"], r["note"]) for r in df.collect())
    assert rows == [tuple(r) for r in replica.sql(f"SELECT id, note FROM {qualified(db, 'parts')} ORDER BY id")]
    # Spark SQL over it: the per-partition counts are the manifest's.
    counts = {r["p"]: r["n"] for r in df.selectExpr("spark_partition_id() AS p").groupBy("p").count().withColumnRenamed("count", "n").collect()}
    assert sorted(counts.values()) == sorted(u["rows"] for u in manifest["units"])


def test_strict_read_fails_on_a_zero_date(spark, moto_server, source) -> None:
    url = f"s3://{source['bucket']}/snapshots/{dataset_prefix(source['db'], 'alltypes')}"
    with pytest.raises(Exception) as err:
        read_tracker(spark, moto_server, url, strict="true").collect()
    assert "zero or partial date (strict)" in str(err.value)


def test_refuses_a_dataset_without_success(spark, moto_server, source) -> None:
    client, bucket = source["client"], source["bucket"]
    prefix = f"snapshots/{dataset_prefix(source['db'], 'parts')}/"
    copy = f"copy/{dataset_prefix(source['db'], 'parts')}/"
    for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        name = item["Key"][len(prefix):]
        if name != "_SUCCESS":
            client.copy_object(Bucket=bucket, Key=copy + name, CopySource={"Bucket": bucket, "Key": item["Key"]})
    with pytest.raises(Exception) as err:
        read_tracker(spark, moto_server, f"s3://{bucket}/{copy}").schema
    assert f"s3://{bucket}/{copy.rstrip('/')}: no _SUCCESS; the dataset is incomplete or still being written" in str(err.value)
    # With _SUCCESS the copy reads from where it is (unit keys follow the dataset).
    client.put_object(Bucket=bucket, Key=copy + "_SUCCESS", Body=b"")
    assert read_tracker(spark, moto_server, f"s3://{bucket}/{copy}").count() == 90


def test_not_a_dataset_path_and_bad_options(spark, moto_server, source) -> None:
    with pytest.raises(Exception) as err:
        read_tracker(spark, moto_server, f"s3://{source['bucket']}/snapshots/main/{source['db']}").schema
    assert "is not a dataset (<destination>/<namespace>/<db>/<table>/dt=YYYY-MM-DD)" in str(err.value)
    url = f"s3://{source['bucket']}/snapshots/{dataset_prefix(source['db'], 'parts')}"
    with pytest.raises(Exception) as err:
        read_tracker(spark, moto_server, url, strict="maybe").collect()
    assert "option strict must be true or false, got 'maybe'" in str(err.value)
    # Without the options' credentials (none in Spark's environment) S3 refuses to be read.
    with pytest.raises(Exception) as err:
        spark.read.format("tracker").option("s3.endpoint_url", moto_server.endpoint_url).load(url).schema
    assert "Unable to locate credentials" in str(err.value)


def test_a_corrupt_part_fails_the_read(spark, moto_server, source) -> None:
    url = f"s3://{source['bucket']}/snapshots/{dataset_prefix(source['db'], 'broken')}"
    with pytest.raises(Exception) as err:
        read_tracker(spark, moto_server, url).collect()
    assert "part-00000.tsv.lz4" in str(err.value)


# --- Parquet written by tracker convert ------------------------------------------------


def test_convert_output_read_by_spark_parquet(spark, source, replica, local_warehouse) -> None:
    db = source["db"]
    assert f"done {db}.alltypes dt={DAY}" in local_warehouse["out"]
    folder = local_warehouse["location"] / dataset_prefix(db, "alltypes")
    df = spark.read.parquet(f"file://{folder}")
    got = spark_columns(df)
    assert got.pop("dt") == [DAY] * len(got["id"])  # the constant partition column, last
    problems = alltypes.diff_values(alltypes.expected_values(replica, db), got, known=SPARK_KNOWN)
    assert not problems, "\n".join(problems[:40])
    # The whole table with Hive partition discovery: Spark types dt from the folder names (DATE),
    # over the file's own STRING column, as DuckDB does.
    table = spark.read.parquet(f"file://{folder.parent}")
    assert table.schema["dt"].dataType == T.DateType()
    assert [tuple(r) for r in table.groupBy("dt").count().collect()] == [(dt.date.fromisoformat(DAY), len(got["id"]))]


def test_engine_spark_writes_what_the_local_engine_writes(source, moto_server, local_warehouse) -> None:
    db = source["db"]
    location = source["tmp"] / "wh-spark"
    out, stderr = convert(source, moto_server, location, "--engine", "spark", "--spark-master", "local[2]")
    assert "event=spark_started master=local[2]" in stderr, stderr
    # One Spark job per dataset with units to convert, one task per unit.
    jobs = sorted(line.split("event=spark_job ")[1] for line in stderr.splitlines() if "event=spark_job " in line)
    assert jobs == [
        f"table={db}.alltypes date={DAY} units=1 master=local[2]",
        f"table={db}.broken date={DAY} units=1 master=local[2]",
        f"table={db}.parts date={DAY} units={PARTITIONS} master=local[2]",
    ]
    errors = error_lines(stderr)
    # stderr holds tracker's lines only (the local JVM logs errors only), but for the JVM's own notice.
    others = [
        line for line in stderr.splitlines()
        if not re.match(r"\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING) tracker\.", line) and line not in errors
    ]
    assert others in ([], ["WARNING: Using incubator modules: jdk.incubator.vector"]), others
    local = local_warehouse["location"]
    for table in ("alltypes", "parts"):
        assert f"done {db}.{table} dt={DAY}" in out, out
        assert f"done {db}.{table} dt={DAY}" in local_warehouse["out"]
    # The broken part fails its table the same way in both engines, in one line.
    assert errors == local_warehouse["errors"] and len(errors) == 1, (errors, local_warehouse["errors"])
    assert f"convert {db}.broken dt={DAY}: " in errors[0]
    assert not (location / dataset_prefix(db, "broken") / "_SUCCESS").exists()

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert files(location) == files(local)
    for table in ("alltypes", "parts"):
        folder, twin = location / dataset_prefix(db, table), local / dataset_prefix(db, table)
        parquet = sorted(p.name for p in folder.glob("*.parquet"))
        assert len(parquet) == (PARTITIONS if table == "parts" else 1)
        for name in parquet:
            ours, theirs = pq.read_table(folder / name), pq.read_table(twin / name)
            assert ours.schema == theirs.schema
            assert ours.equals(theirs), name
        manifest, twin_manifest = (json.loads((f / "_manifest.json").read_text()) for f in (folder, twin))
        assert manifest["files"] == twin_manifest["files"] and manifest["rows"] == twin_manifest["rows"]
        # _SUCCESS last: written after every file of the dataset.
        success = (folder / "_SUCCESS").stat().st_mtime_ns
        assert all(p.stat().st_mtime_ns <= success for p in folder.iterdir())

    # A re-run with nothing to convert does not start Spark.
    again, stderr = convert(source, moto_server, location, f"{db}.alltypes", f"{db}.parts", "--engine", "spark", status=0)
    assert f"up-to-date {db}.alltypes dt={DAY}" in again and f"up-to-date {db}.parts dt={DAY}" in again
    assert "event=spark_started" not in stderr
    shutil.rmtree(location)
