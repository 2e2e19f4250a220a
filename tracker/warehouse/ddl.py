"""HiveQL for engines without Iceberg: an external Parquet table and one partition per date.

``hive_ddl`` prints two statements a Hive metastore user runs (Hive, Spark
SQL with Hive support, or Trino through a Hive metastore populated this way):

* ``CREATE EXTERNAL TABLE IF NOT EXISTS`` over the table's folder,
  ``PARTITIONED BY (dt STRING)``, stored as Parquet;
* ``ALTER TABLE … ADD IF NOT EXISTS PARTITION (dt='…') LOCATION '…'``.

The files carry ``dt`` as their last column too; Hive takes a partition
column's value from the partition, so ``dt`` is not repeated among the
columns.  Hive and Trino read Parquet columns by name, so a date converted
after a column was dropped reads it as NULL; a column added later needs
``ALTER TABLE … ADD COLUMNS (…) CASCADE`` by hand (``IF NOT EXISTS`` only
guards the creation, it never alters an existing table).

``s3://`` locations are written ``s3a://`` (Hadoop's S3 connector, which
Apache Hive and Spark use and Trino accepts); pass ``s3_scheme="s3"`` for
EMR's EMRFS.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

PARTITION_COLUMN = "dt"


def hive_type(type_: pa.DataType) -> str:
    """The Hive column type of an Arrow type the decoder writes; ValueError for any other."""
    simple = {
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INT",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.bool_(): "BOOLEAN",
        pa.date32(): "DATE",
        pa.string(): "STRING",
        pa.large_string(): "STRING",
        pa.binary(): "BINARY",
        pa.large_binary(): "BINARY",
    }
    if type_ in simple:
        return simple[type_]
    if pa.types.is_decimal128(type_) and type_.precision <= 38:
        return f"DECIMAL({type_.precision},{type_.scale})"
    if pa.types.is_timestamp(type_) and type_.unit in ("ms", "us"):
        # Zoned (TIMESTAMP columns, UTC) and zoneless (DATETIME) alike: Hive's
        # TIMESTAMP has no zone; the UTC ones show UTC wall-clock time.
        return "TIMESTAMP"
    raise ValueError(f"no Hive type for Arrow type {type_}")


def quote_name(name: str) -> str:
    """A Hive identifier in backquotes (a backquote doubled)."""
    return "`" + name.replace("`", "``") + "`"


def quote_table(table_name: str | tuple[str, ...]) -> str:
    """``db.table`` (or ``table``) with each part quoted.

    A string is split at its dots; pass ``(db, table)`` when a name itself
    holds a dot (MySQL allows it).
    """
    parts = table_name.split(".") if isinstance(table_name, str) else table_name
    return ".".join(quote_name(part) for part in parts)


def quote_string(value: str) -> str:
    """A Hive string literal: backslash escapes, single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hive_location(url: str, s3_scheme: str = "s3a") -> str:
    """The folder URL as Hive names it: ``s3://`` becomes ``s3_scheme://``; no trailing slash."""
    url = url.rstrip("/")
    if url.startswith("s3://"):
        return f"{s3_scheme}://{url[len('s3://'):]}"
    return url


def hive_ddl(table_name: str | tuple[str, ...], schema: pa.Schema, location_url: str, date: dt.date, *, s3_scheme: str = "s3a") -> str:
    """The CREATE EXTERNAL TABLE and ADD PARTITION statements for one converted date of one table.

    ``schema`` is the Parquet files' Arrow schema (``dt`` included or not);
    ``location_url`` the table's folder, which holds the ``dt=`` folders.
    """
    columns = []
    for field in schema:
        if field.name == PARTITION_COLUMN:
            continue
        comment = (field.metadata or {}).get(b"mysql.type")
        line = f"  {quote_name(field.name)} {hive_type(field.type)}"
        if comment:
            line += f" COMMENT {quote_string('mysql: ' + comment.decode())}"
        columns.append(line)
    if not columns:
        raise ValueError(f"{table_name}: no columns besides {PARTITION_COLUMN}")
    table = quote_table(table_name)
    location = hive_location(location_url, s3_scheme)
    day = date.isoformat()
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {table} (\n"
        + ",\n".join(columns)
        + f"\n)\nPARTITIONED BY ({quote_name(PARTITION_COLUMN)} STRING)\nSTORED AS PARQUET\n"
        + f"LOCATION {quote_string(location)};\n"
        + f"ALTER TABLE {table} ADD IF NOT EXISTS PARTITION ({quote_name(PARTITION_COLUMN)}={quote_string(day)})"
        + f" LOCATION {quote_string(location + '/' + PARTITION_COLUMN + '=' + day)};\n"
    )
