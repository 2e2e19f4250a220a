"""The Spark data source's pure parts: dataset paths, the Arrow -> Spark type mapping, batch conforming.

No JVM here; tests/integration/test_spark.py runs the data source in a real Spark.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql import types as T

from tracker.errors import UsageError
from tracker.warehouse.spark_engine import failure_line
from tracker.store.layout import encode_segment
from tracker.warehouse.spark import (
    DatasetPath,
    DatasetUnreadable,
    _flag,
    conform,
    spark_schema,
    split_dataset_url,
    unit_entry,
)


@pytest.mark.parametrize(
    "url, destination, prefix",
    [
        ("s3://b/snap/main/shop/orders/dt=2026-11-01", "s3://b/snap", "main/shop/orders/dt=2026-11-01"),
        ("s3://b/deep/er/main/shop/orders/dt=2026-11-01/", "s3://b/deep/er", "main/shop/orders/dt=2026-11-01"),
        ("s3://b/main/shop/orders/dt=2026-11-01", "s3://b", "main/shop/orders/dt=2026-11-01"),
        ("file:///data/main/a%20b/c%60d/dt=2026-01-31", "file:///data", "main/a%20b/c%60d/dt=2026-01-31"),
        ("/data/main/shop/orders/dt=2026-01-31", "file:///data", "main/shop/orders/dt=2026-01-31"),
        ("file:///main/shop/orders/dt=2026-01-31", "file:///", "main/shop/orders/dt=2026-01-31"),
    ],
)
def test_dataset_url_splits_into_destination_and_prefix(url: str, destination: str, prefix: str) -> None:
    assert split_dataset_url(url) == DatasetPath(destination, prefix)


@pytest.mark.parametrize(
    "url",
    [
        "s3://b/main/shop/orders",  # no date
        "s3://b/shop/orders/dt=2026-11-01",  # too short
        "s3://b/main/shop/orders/dt=2026-13-01",  # not a date
        "s3://b/main/shop/orders/date=2026-11-01",
        "hdfs://nn/main/shop/orders/dt=2026-11-01",
        "relative/main/shop/orders/dt=2026-11-01",
    ],
)
def test_not_a_dataset_is_one_line_usage_error(url: str) -> None:
    with pytest.raises(UsageError) as err:
        split_dataset_url(url)
    assert "\n" not in str(err.value) and "tracker data source" in str(err.value)


names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(names, names, names)
def test_any_encoded_names_round_trip(namespace_db: str, db: str, table: str) -> None:
    prefix = f"main/{encode_segment(db)}/{encode_segment(table)}/dt=2026-11-01"
    path = split_dataset_url(f"s3://bucket/{encode_segment(namespace_db)}/{prefix}")
    assert path.prefix == prefix
    assert path.destination == f"s3://bucket/{encode_segment(namespace_db)}"


def test_unit_key_follows_the_dataset_where_it_is() -> None:
    path = DatasetPath("file:///copy", "main/shop/orders/dt=2026-11-01")
    entry = {"index": 3, "key": "other/shop/orders/dt=2026-11-01/part-00003.tsv.lz4", "rows": 5}
    assert unit_entry(path, entry) == {**entry, "key": "main/shop/orders/dt=2026-11-01/part-00003.tsv.lz4"}


def test_spark_types_of_decoded_columns() -> None:
    schema = pa.schema(
        [
            pa.field("b", pa.bool_()),
            pa.field("i8", pa.int8(), nullable=False),
            pa.field("i16", pa.int16()),
            pa.field("i32", pa.int32()),
            pa.field("i64", pa.int64()),
            pa.field("u64", pa.decimal128(20, 0)),
            pa.field("dec", pa.decimal128(38, 30)),
            pa.field("f", pa.float32()),
            pa.field("d", pa.float64()),
            pa.field("day", pa.date32()),
            pa.field("dtm", pa.timestamp("us")),
            pa.field("ts", pa.timestamp("us", tz="UTC")),
            pa.field("s", pa.string(), metadata={b"mysql.type": b"varchar(10)"}),
            pa.field("ls", pa.large_string()),
            pa.field("bin", pa.binary()),
            pa.field("lb", pa.large_binary()),
        ]
    )
    result = spark_schema(schema)
    assert [f.dataType for f in result] == [
        T.BooleanType(), T.ByteType(), T.ShortType(), T.IntegerType(), T.LongType(),
        T.DecimalType(20, 0), T.DecimalType(38, 30), T.FloatType(), T.DoubleType(), T.DateType(),
        T.TimestampNTZType(), T.TimestampType(), T.StringType(), T.StringType(), T.BinaryType(), T.BinaryType(),
    ]  # fmt: skip
    assert all(f.nullable for f in result)  # a zero date in a NOT NULL column is NULL
    assert result["s"].metadata == {"mysql.type": "varchar(10)"}


@pytest.mark.parametrize("arrow_type", [pa.uint64(), pa.decimal256(65, 30)])
def test_types_spark_lacks_are_refused_by_name(arrow_type: pa.DataType) -> None:
    with pytest.raises(DatasetUnreadable, match="column 'x': Arrow type"):
        spark_schema(pa.schema([pa.field("x", arrow_type)]))


def test_conform_gives_the_worker_its_exact_arrow_schema() -> None:
    decoded = pa.record_batch(
        [
            pa.array(["a", None], pa.large_string()),
            pa.array([b"\x00", b""], pa.large_binary()),
            pa.array([0, 1], pa.timestamp("us", tz="UTC")),
            pa.array([1, 2], pa.int64()),
        ],
        schema=pa.schema(
            [
                pa.field("s", pa.large_string(), metadata={b"mysql.type": b"text"}),
                pa.field("b", pa.large_binary()),
                pa.field("t", pa.timestamp("us", tz="UTC")),
                pa.field("n", pa.int64(), nullable=False),
            ]
        ),
    )
    target = to_arrow_schema(spark_schema(decoded.schema), timezone="UTC")
    result = conform(decoded, target)
    assert result.schema.equals(target)
    assert result.to_pylist() == decoded.to_pylist()


def test_conform_names_a_missing_column() -> None:
    batch = pa.record_batch([pa.array([1])], names=["a"])
    with pytest.raises(DatasetUnreadable, match="'b'"):
        conform(batch, pa.schema([pa.field("b", pa.int64())]))


def test_strict_flag() -> None:
    assert _flag("true") and _flag(" TRUE ") and _flag("1")
    assert not _flag("false") and not _flag("")
    with pytest.raises(UsageError, match="strict"):
        _flag("maybe")


SPARK_FAILURE = """An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 5.0 failed 1 times
org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/x/worker.py", line 3, in main
    process()
tracker.errors.UploadFailed: s3://b/k: cannot decode: bad frame

\tat org.apache.spark.api.python.BasePythonRunner.handlePythonException(PythonRunner.scala:600)
java.lang.RuntimeException: not this one
"""


def test_failure_line_is_the_python_exception() -> None:
    assert failure_line(SPARK_FAILURE) == "tracker.errors.UploadFailed: s3://b/k: cannot decode: bad frame"
    assert failure_line("KeyError: 'x'") == "KeyError: 'x'"
    assert failure_line("Py4JNetworkError\nmore") == "Py4JNetworkError"
    assert failure_line("") == "no message"
