"""The output table's Arrow schema, and fitting each source's batches to it.

Every file carries the table's columns, then (logical tables only)
``_source_namespace``, ``_source_db``, ``_source_table``, then ``dt``: the
date as a STRING, last, constant per file.  A string in the file and a hive
``dt=`` folder agree (pyarrow, DuckDB), and Iceberg can partition by
identity(dt) on it.  A logical table's sources are united by name: a column
missing from a source is NULL in its files; any other difference (a type)
fails the logical table, naming the column and both types.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Sequence

import pyarrow as pa

from tracker.errors import TrackerError

PARTITION_COLUMN = "dt"
SOURCE_COLUMNS = ("_source_namespace", "_source_db", "_source_table")


class SchemaConflict(TrackerError):
    """Sources that cannot be one table, or a column name the layout reserves."""


def _reserved(logical: bool) -> tuple[str, ...]:
    return (PARTITION_COLUMN, *SOURCE_COLUMNS) if logical else (PARTITION_COLUMN,)


def target_schema(name: str, sources: Sequence[tuple[str, str, str, list[dict[str, Any]]]], logical: bool) -> pa.Schema:
    """The schema of output table ``name`` from its sources' manifest columns (in the sources' order)."""
    from tracker.warehouse.decode import arrow_schema

    fields: dict[str, pa.Field] = {}
    origin: dict[str, str] = {}
    present: dict[str, int] = {}
    for namespace, db, table, columns in sources:
        label = f"{namespace}/{db}.{table}"
        for field in arrow_schema(columns):
            if field.name in _reserved(logical):
                raise SchemaConflict(
                    f"{name}: {label} has a column named {field.name!r}, which tracker convert adds itself (rename it)"
                )
            seen = fields.get(field.name)
            if seen is None:
                fields[field.name], origin[field.name] = field, label
            elif not seen.type.equals(field.type):
                raise SchemaConflict(
                    f"{name}: column {field.name!r} is {seen.type} in {origin[field.name]} but {field.type} in {label}"
                )
            elif field.nullable and not seen.nullable:
                fields[field.name] = seen.with_nullable(True)
            present[field.name] = present.get(field.name, 0) + 1
    out = [f if present[f.name] == len(sources) else f.with_nullable(True) for f in fields.values()]
    if logical:
        out.extend(pa.field(column, pa.string(), nullable=False) for column in SOURCE_COLUMNS)
    out.append(pa.field(PARTITION_COLUMN, pa.string(), nullable=False))
    return pa.schema(out)


def conformer(
    schema: pa.Schema, date: dt.date, namespace: str, db: str, table: str, logical: bool
) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """A function fitting one source's decoded batches to ``schema``: missing columns NULL, constants added."""
    constants = {PARTITION_COLUMN: date.isoformat()}
    if logical:
        constants.update(zip(SOURCE_COLUMNS, (namespace, db, table)))

    def fit(batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        arrays = []
        for field in schema:
            if field.name in constants:
                arrays.append(pa.repeat(pa.scalar(constants[field.name], pa.string()), n))
            else:
                index = batch.schema.get_field_index(field.name)
                arrays.append(batch.column(index) if index >= 0 else pa.nulls(n, field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    return fit
