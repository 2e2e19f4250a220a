"""Spark: a Python data source for raw datasets, and Spark as the engine of ``tracker convert``.

Spark cannot read a dataset by itself: Hadoop's ``Lz4Codec`` is another
framing than the LZ4 frames tracker writes, and Spark's CSV reader does not
know MySQL's backslash escapes.  So the decoding stays in
:mod:`tracker.warehouse.decode`, the one library that maps the text format to
Arrow, and Spark only schedules it:

* the ``tracker`` data source (Spark 4's Python Data Source API) reads one
  dataset, one Spark partition per manifest unit, each yielding the Arrow
  record batches of :func:`tracker.warehouse.decode.read_part`::

      import tracker.spark
      tracker.spark.register(spark)
      df = spark.read.format("tracker").load("s3://bucket/prefix/main/shop/orders/dt=2026-11-01")

* :func:`run_convert` runs ``tracker convert`` with one Spark task per unit:
  the tasks call the same ``convert_unit`` as the local engine (same files,
  same commit rule) and the driver finishes each dataset (``_SUCCESS``, the
  catalog) exactly as the local engine does.

Executors must import ``tracker`` (with its ``[warehouse]`` dependencies):
in local mode they run this interpreter; on a cluster install the package on
the executors or ship it with ``--py-files`` / ``spark.submit.pyFiles``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
from pyspark.sql.types import StructField, StructType

from tracker.config import S3Config, parse_destination
from tracker.errors import TrackerError, UsageError
from tracker.store import layout
from tracker.store.sinks import Store, open_store
from tracker.warehouse.spark_engine import run_convert  # noqa: F401  (the engine; this name is the contract)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

FORMAT = "tracker"
# Data source options (case-insensitive, as Spark passes them).
OPT_ENDPOINT = "s3.endpoint_url"
OPT_REGION = "s3.region"
OPT_KEY_ID = "s3.access_key_id"
OPT_SECRET = "s3.secret_access_key"
OPT_TOKEN = "s3.session_token"
OPT_STRICT = "strict"
# The Python data source worker checks each batch against the Spark schema
# converted with this zone (pyspark/sql/worker/plan_data_source_read.py).
_WORKER_TIMEZONE = "UTC"
_SPARK_MAX_DECIMAL = 38


class DatasetUnreadable(TrackerError):
    """The path names no complete dataset, or one Spark cannot represent."""


def register(spark: "SparkSession") -> None:
    """Make ``spark.read.format("tracker")`` available in this session."""
    spark.dataSource.register(TrackerDataSource)


# --- where a dataset lives ----------------------------------------------------


@dataclass(frozen=True)
class DatasetPath:
    """A dataset URL split into its destination and its key prefix under it.

    Manifest unit keys are relative to the destination, so the store is
    opened there: the last four segments of ``<destination>/<ns>/<db>/<table>/dt=D``
    are the dataset's prefix.
    """

    destination: str  # s3://bucket[/prefix] or file:///dir
    prefix: str  # <ns>/<db>/<table>/dt=YYYY-MM-DD

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"


def split_dataset_url(url: str) -> DatasetPath:
    """``<destination>/<ns>/<db>/<table>/dt=YYYY-MM-DD`` -> DatasetPath; bad paths raise UsageError."""
    if url.startswith("/"):
        url = f"file://{url}"
    try:
        destination = parse_destination(url)
    except ValueError as exc:
        raise UsageError(f"tracker data source: {exc}") from None
    segments = [s for s in destination.prefix.split("/") if s]
    if len(segments) < 4 or not _is_date_segment(segments[-1]):
        raise UsageError(
            f"tracker data source: {url!r} is not a dataset (<destination>/<namespace>/<db>/<table>/dt=YYYY-MM-DD)"
        )
    root = "/".join(segments[:-4])
    if destination.scheme == "file":
        base = f"file:///{root}"
    else:
        base = f"s3://{destination.bucket}/{root}" if root else f"s3://{destination.bucket}"
    return DatasetPath(base, "/".join(segments[-4:]))


def _is_date_segment(segment: str) -> bool:
    if not segment.startswith("dt="):
        return False
    try:
        dt.date.fromisoformat(segment[3:])
    except ValueError:
        return False
    return True


def open_dataset_store(path: DatasetPath, options: Mapping[str, str]) -> Store:
    """The destination's store; S3 endpoint, region and keys from the options, else the AWS chain."""
    s3 = S3Config(endpoint_url=options.get(OPT_ENDPOINT) or None, region=options.get(OPT_REGION) or None)
    destination = parse_destination(path.destination)
    key_id = options.get(OPT_KEY_ID)
    if destination.scheme != "s3" or not key_id:
        return open_store(destination, s3)
    import boto3

    from tracker.store.s3 import S3Store

    session = boto3.session.Session(
        aws_access_key_id=key_id,
        aws_secret_access_key=options.get(OPT_SECRET),
        aws_session_token=options.get(OPT_TOKEN) or None,
    )
    return S3Store(destination, s3, session=session)


def load_manifest(store: Store, path: DatasetPath) -> dict[str, Any]:
    """The dataset's manifest; a dataset without ``_SUCCESS`` is refused (it may be half written)."""
    if not store.exists(path.key(layout.SUCCESS)):
        raise DatasetUnreadable(
            f"{store.url(path.prefix)}: no {layout.SUCCESS}; the dataset is incomplete or still being written"
        )
    data = store.get(path.key(layout.MANIFEST))
    if data is None:
        raise DatasetUnreadable(f"{store.url(path.key(layout.MANIFEST))} not found")
    return json.loads(data)


def unit_entry(path: DatasetPath, entry: dict[str, Any]) -> dict[str, Any]:
    """The unit with its key under this dataset's prefix (a copied dataset reads from where it is)."""
    return {**entry, "key": path.key(posixpath.basename(entry["key"]))}


# --- types ------------------------------------------------------------------


def spark_schema(schema: pa.Schema) -> StructType:
    """The Spark schema of a decoded dataset.

    Every field is nullable whatever the MySQL column says: a zero date in a
    NOT NULL column decodes to NULL.  A timestamp without a zone (DATETIME)
    becomes TimestampNTZType, one in UTC (TIMESTAMP) TimestampType.  Arrow
    field metadata (``mysql.type`` ...) becomes the Spark field's metadata.
    """
    return StructType([_spark_field(field) for field in schema])


def _spark_field(field: pa.Field) -> StructField:
    unsupported = DatasetUnreadable(f"column {field.name!r}: Arrow type {field.type} has no Spark type")
    if pa.types.is_decimal(field.type) and field.type.precision > _SPARK_MAX_DECIMAL:
        raise unsupported  # pyspark would accept it; the JVM would not
    try:
        data_type = from_arrow_type(field.type, prefer_timestamp_ntz=True)
    except Exception:
        raise unsupported from None
    metadata = {
        key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
        for key, value in (field.metadata or {}).items()
    }
    return StructField(field.name, data_type, nullable=True, metadata=metadata)


def conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """``batch`` with exactly the Arrow types Spark's worker expects for ``target``.

    The worker compares each batch's schema with the Spark schema's Arrow
    form (plain ``string``/``binary``, ``timestamp[us, tz=UTC]``); the
    decoder may use large or other variants of the same values.
    """
    if batch.schema.equals(target):
        return batch
    index = {name: i for i, name in enumerate(batch.schema.names)}
    arrays = []
    for field in target:
        if field.name not in index:
            raise DatasetUnreadable(f"column {field.name!r} is not in the dataset")
        column = batch.column(index[field.name])
        arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=target)


# --- the data source ----------------------------------------------------------


class UnitPartition(InputPartition):
    """One manifest unit: one part object, one Spark partition."""

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry["index"])
        self.entry = entry


class TrackerReader(DataSourceReader):
    """Plans one partition per unit; decodes a unit on the executor.

    Holds only plain data (it is pickled to the executors); the store and its
    S3 client are opened inside :meth:`read`.  A part's CRC-32C and row count
    are checked when it has been read to its end: a corrupt part fails every
    query that reads it whole, but a ``limit`` may stop before the check.
    """

    def __init__(self, options: dict[str, str], path: DatasetPath, manifest: dict[str, Any], schema: StructType) -> None:
        self.options = options
        self.path = path
        self.manifest = manifest
        self.schema = schema
        self.strict = _flag(options.get(OPT_STRICT, "false"))  # checked when planning, not in every task

    def partitions(self) -> list[UnitPartition]:
        return [UnitPartition(unit_entry(self.path, e)) for e in self.manifest["units"]]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        from tracker.warehouse.decode import DecodeReport, read_part

        assert isinstance(partition, UnitPartition)
        store = open_dataset_store(self.path, self.options)
        target = to_arrow_schema(self.schema, timezone=_WORKER_TIMEZONE)
        report = DecodeReport()
        rows = 0
        for batch in read_part(store, partition.entry, self.manifest, strict=self.strict, report=report):
            rows += batch.num_rows
            yield conform(batch, target)
        log.info(
            "event=spark_unit_read dataset=%s unit=%s rows=%d zero_dates=%s",
            self.path.prefix,
            partition.entry["index"],
            rows,
            sum(report.zero_dates.values()),
        )


class TrackerDataSource(DataSource):
    """``spark.read.format("tracker").load("<destination>/<ns>/<db>/<table>/dt=YYYY-MM-DD")``.

    Options: ``s3.endpoint_url``, ``s3.region``, ``s3.access_key_id``,
    ``s3.secret_access_key``, ``s3.session_token`` (else the AWS chain of
    each executor), ``strict`` (``true``: a zero date fails the read instead
    of becoming NULL).
    """

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def _dataset(self) -> tuple[DatasetPath, dict[str, Any]]:
        # schema() runs first and the instance is pickled after it, so the
        # manifest is read once per load.
        cached = getattr(self, "_loaded", None)
        if cached is None:
            url = self.options.get("path")
            if not url:
                raise UsageError('tracker data source: no path; use .load("<destination>/<ns>/<db>/<table>/dt=YYYY-MM-DD")')
            path = split_dataset_url(url)
            cached = self._loaded = (path, load_manifest(open_dataset_store(path, self.options), path))
        return cached

    def schema(self) -> StructType:
        from tracker.warehouse.decode import arrow_schema

        return spark_schema(arrow_schema(self._dataset()[1]["columns"]))

    def reader(self, schema: StructType) -> TrackerReader:
        path, manifest = self._dataset()
        return TrackerReader(dict(self.options), path, manifest, schema)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise UsageError(f"tracker data source: option {OPT_STRICT} must be true or false, got {value!r}")
