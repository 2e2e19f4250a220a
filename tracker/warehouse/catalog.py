"""Register converted dates in an Iceberg table that follows MySQL's schema.

Each converted date becomes one Iceberg snapshot: the Parquet files are
added in place (never copied or rewritten) to a table partitioned by
``identity(dt)``, and re-converting a date replaces that date's files in the
same single snapshot, so a reader sees the old date or the new one, never
both or neither.

Schema drift is followed the way the Iceberg spec allows and no further:

* a new MySQL column becomes a new optional field (files written before it
  read it as NULL);
* a dropped column stays in the table and reads as NULL in later dates
  (their files lack it; Iceberg matches the files' columns by name through
  the table's name mapping, because tracker's files carry no field ids);
* a widening the spec allows (int → long, float → double, decimal(P,S) →
  decimal(P',S) with P' > P) is applied; files written before keep their
  narrower type, which readers promote;
* a narrowing (BIGINT back to INT) keeps the table's wider type;
* anything else (INT → VARCHAR, a DECIMAL scale change, DATETIME → TIMESTAMP,
  BIGINT → BIGINT UNSIGNED …) refuses the date with :class:`SchemaRefused`.
  The rule is the spec's, not pyiceberg's ``promote``: that one also lets
  string and binary swap and a decimal change its scale, which other
  engines would then misread.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import EqualTo
from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids, parquet_file_to_data_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StructType,
)

from tracker.errors import TrackerError

log = logging.getLogger(__name__)

DATE_COLUMN = "dt"
CATALOG_NAME = "tracker"  # pyiceberg's catalog name unless the properties give ``name``
METADATA_DIR = "_iceberg"  # under the table's location; '_' so Parquet readers of the folder skip it
COMMIT_ATTEMPTS = 5  # another converter committing to the same table first: reload and redo
PARTITION_FIELD_ID = 1000  # Iceberg's first partition field id
_MYSQL_TYPE = b"mysql.type"
DEFAULT_ENDPOINT_REGION = "us-east-1"


class SchemaRefused(TrackerError):
    """A column changed in a way the Iceberg table cannot follow; the date is not registered."""


class RegistrationFailed(TrackerError):
    """The catalog or the files could not be read or committed; nothing was registered."""

    retryable = True


@dataclass(frozen=True)
class SchemaPlan:
    """What registering a date changes in the table's schema."""

    added: tuple[str, ...]
    widened: tuple[str, ...]
    missing: tuple[str, ...]  # in the table, not in the files (dropped in MySQL): NULL from now on

    @property
    def changes_schema(self) -> bool:
        return bool(self.added or self.widened)


def open_catalog(props: dict[str, Any]) -> Catalog:
    """The catalog the ``warehouse.catalog`` properties describe (``name`` names it, default tracker)."""
    props = dict(props)
    name = str(props.pop("name", CATALOG_NAME))
    return load_catalog(name, **{key: str(value) for key, value in props.items()})


def catalog_properties(props: dict[str, Any], endpoint_url: str | None, region: str | None) -> dict[str, Any]:
    """``props`` with tracker's own ``s3.endpoint_url``/``s3.region`` as pyiceberg's defaults.

    So one config names the object store once; properties set in
    ``warehouse.catalog`` win.  Credentials stay with the AWS chain.
    """
    merged = dict(props)
    if endpoint_url:
        merged.setdefault("s3.endpoint", endpoint_url)
    if region:
        merged.setdefault("s3.region", region)
    elif endpoint_url and "s3.region" not in merged and "client.region" not in merged:
        # Without a region pyiceberg asks AWS where the bucket is (pyarrow's
        # resolve_s3_region): meaningless for another store, and without a
        # route to AWS it hangs ~10 s per file system.  S3-compatible stores
        # take the API's default region unless configured otherwise.
        merged["s3.region"] = DEFAULT_ENDPOINT_REGION
    return merged


def iceberg_schema(schema: pa.Schema) -> Schema:
    """The Iceberg schema of a converted table: every field optional, its MySQL type as the field's doc.

    Optional even for NOT NULL columns: a column MySQL drops later must read
    as NULL in later dates, and a required field cannot.
    """
    fields = []
    for field in schema:
        metadata = dict(field.metadata or {})
        if _MYSQL_TYPE in metadata:
            metadata[b"doc"] = b"mysql: " + metadata[_MYSQL_TYPE]
        fields.append(field.with_nullable(True).with_metadata(metadata))
    return _pyarrow_to_schema_without_ids(pa.schema(fields))


def _spec_allows(old: IcebergType, new: IcebergType) -> bool:
    """Whether the Iceberg spec lets a column of type ``old`` become ``new`` (a widening)."""
    if isinstance(old, IntegerType) and isinstance(new, LongType):
        return True
    if isinstance(old, FloatType) and isinstance(new, DoubleType):
        return True
    if isinstance(old, DecimalType) and isinstance(new, DecimalType):
        return old.scale == new.scale and new.precision >= old.precision
    return False


def _same_type(old: IcebergType, new: IcebergType) -> bool:
    """Equal types, comparing nested fields by name and type, not by field id.

    The table's struct fields (GEOMETRY's ``wkb``/``srid``) carry the ids the
    catalog assigned; a date's schema, built from Arrow, carries none yet.
    """
    if isinstance(old, StructType) and isinstance(new, StructType):
        return len(old.fields) == len(new.fields) and all(
            a.name == b.name and _same_type(a.field_type, b.field_type) for a, b in zip(old.fields, new.fields)
        )
    return old == new


def _described(field: NestedField) -> str:
    return f"{field.field_type} ({field.doc})" if field.doc else str(field.field_type)


def plan_schema(table_name: str, current: Schema, new: Schema) -> SchemaPlan:
    """Compare the table's schema with the date's; :class:`SchemaRefused` names the first column that cannot follow."""
    added: list[str] = []
    widened: list[str] = []
    for field in new.fields:
        try:
            existing = current.find_field(field.name)
        except ValueError:
            added.append(field.name)
            continue
        old_type, new_type = existing.field_type, field.field_type
        if _same_type(old_type, new_type) or _spec_allows(new_type, old_type):
            continue  # same, or narrower: the table keeps its wider type
        if _spec_allows(old_type, new_type):
            widened.append(field.name)
            continue
        raise SchemaRefused(
            f"{table_name}: column {field.name!r} changed from {_described(existing)} to {_described(field)}, "
            "which an Iceberg table cannot follow; the date is converted but not registered"
        )
    names = {field.name for field in new.fields}
    missing = tuple(field.name for field in current.fields if field.name not in names)
    return SchemaPlan(tuple(added), tuple(widened), missing)


def register_date(
    catalog_props: dict[str, Any],
    identifier: tuple[str, ...],
    schema: pa.Schema,
    date: dt.date,
    file_urls: list[str],
    location: str,
) -> None:
    """Make ``file_urls`` the files of partition ``dt = date`` of ``identifier``, in one snapshot.

    Creates the namespace and the table (at ``location``, metadata under
    ``location/_iceberg``) when missing.  ``schema`` is the Parquet files'
    Arrow schema, ``dt`` (string) included.  Raises :class:`SchemaRefused`
    when the table cannot follow a column's change (nothing is committed),
    :class:`RegistrationFailed` when the catalog or a file cannot be read or
    the commit fails.
    """
    name = ".".join(identifier)
    if schema.get_field_index(DATE_COLUMN) < 0 or schema.field(DATE_COLUMN).type != pa.string():
        raise ValueError(f"{name}: the files' schema needs a string column {DATE_COLUMN!r}")
    new_schema = iceberg_schema(schema)
    try:
        catalog = open_catalog(catalog_props)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = _table(catalog, identifier, new_schema, location)
            try:
                _commit_date(table, name, new_schema, date, file_urls)
                return
            except CommitFailedException as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.info("event=iceberg_retry table=%s date=%s attempt=%s why=%s", name, date, attempt, exc)
    except TrackerError:
        raise
    except Exception as exc:  # pyiceberg, sqlalchemy, pyarrow and the store raise many types: one line each
        log.debug("event=iceberg_failed table=%s date=%s", name, date, exc_info=True)
        raise RegistrationFailed(f"{name}: registering dt={date.isoformat()} failed: {type(exc).__name__}: {exc}") from None


def _table(catalog: Catalog, identifier: tuple[str, ...], schema: Schema, location: str) -> Table:
    """Load the table, creating the namespace and the table partitioned by ``identity(dt)`` if missing."""
    catalog.create_namespace_if_not_exists(identifier[:-1])
    spec = PartitionSpec(
        PartitionField(
            source_id=schema.find_field(DATE_COLUMN).field_id,
            field_id=PARTITION_FIELD_ID,
            transform=IdentityTransform(),
            name=DATE_COLUMN,
        )
    )
    table = catalog.create_table_if_not_exists(
        identifier,
        schema=schema,
        partition_spec=spec,
        location=location.rstrip("/"),
        properties={TableProperties.WRITE_METADATA_PATH: f"{location.rstrip('/')}/{METADATA_DIR}"},
    )
    _check_partitioning(table, ".".join(identifier))
    return table


def _check_partitioning(table: Table, name: str) -> None:
    """Replacing a date's files relies on ``dt`` being the identity partition."""
    for field in table.spec().fields:
        if isinstance(field.transform, IdentityTransform) and table.schema().find_column_name(field.source_id) == DATE_COLUMN:
            return
    raise RegistrationFailed(f"{name}: the Iceberg table is not partitioned by identity({DATE_COLUMN})", retryable=False)


def _commit_date(table: Table, name: str, schema: Schema, date: dt.date, file_urls: list[str]) -> None:
    plan = plan_schema(name, table.schema(), schema)
    day = date.isoformat()
    old_files = [task.file for task in table.scan(row_filter=EqualTo(DATE_COLUMN, day)).plan_files()]
    with table.transaction() as tx:
        if plan.changes_schema:
            with tx.update_schema() as update:
                update.union_by_name(schema)
        _set_name_mapping(tx)
        new_files = list(_data_files(tx, table, name, day, file_urls))
        properties = {"tracker.dt": day}
        if old_files:
            with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                for data_file in old_files:
                    overwrite.delete_data_file(data_file)
                for data_file in new_files:
                    overwrite.append_data_file(data_file)
        elif new_files:
            with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
                for data_file in new_files:
                    append.append_data_file(data_file)
    log.info(
        "event=iceberg_registered table=%s date=%s files=%s replaced=%s added_columns=%s widened=%s null_columns=%s",
        name, day, len(new_files), len(old_files), ",".join(plan.added) or "-", ",".join(plan.widened) or "-",
        ",".join(plan.missing) or "-",
    )


def _set_name_mapping(tx: Transaction) -> None:
    """Files without field ids are read by name: the mapping must name every field of the current schema.

    pyiceberg's schema update keeps an existing mapping current; this sets
    it on a new table and repairs one that lacks a field.
    """
    wanted = tx.table_metadata.schema().name_mapping
    current = tx.table_metadata.name_mapping()
    if current is None or {f.field_id for f in current} != {f.field_id for f in wanted}:
        tx.set_properties(**{TableProperties.DEFAULT_NAME_MAPPING: wanted.model_dump_json()})


def _data_files(tx: Transaction, table: Table, name: str, day: str, file_urls: Iterable[str]) -> Iterable[DataFile]:
    """Each file's Iceberg entry (statistics from its footer); each must hold only ``dt = day``."""
    for url in file_urls:
        data_file = parquet_file_to_data_file(table.io, tx.table_metadata, url)
        if data_file.record_count == 0:
            log.debug("event=iceberg_skip_empty table=%s date=%s file=%s", name, day, url)
            continue
        if data_file.partition[0] != day:
            raise RegistrationFailed(
                f"{name}: {url} holds {DATE_COLUMN}={data_file.partition[0]!r}, not {day}", retryable=False
            )
        yield data_file
