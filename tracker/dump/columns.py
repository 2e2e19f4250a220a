"""Which tables exist, what their columns are, and how each column is written.

Plain ``SELECT *`` into OUTFILE does not round-trip every type: BIT values
are written as raw, unescaped bytes (a BIT containing 0x09 or 0x0A breaks
the line format) and FLOAT values are rounded to six significant digits.
Each column therefore gets an *encoding*: the SQL expression that dumps it
and the name recorded in the manifest, so a loader knows how to restore it.

Character columns (anything with a character set: CHAR, VARCHAR, TEXT,
ENUM, SET, JSON) are selected as ``CAST(col AS BINARY)``.  OUTFILE escapes
a character column character by character, so a multibyte character whose
second byte is 0x5C, 0x09 or 0x0A (sjis ``表`` = 95 5C, utf16 ``山`` = 5C 71)
reached the stream as a bare escape or terminator byte; a binary value is
escaped byte by byte.  The bytes are unchanged (still the column's own
charset, recorded in the manifest as ``charset``), so the encoding stays
``text``.

Everything else was checked to survive ``LOAD DATA ... CHARACTER SET binary``
bit for bit on MariaDB 10.11 as written: integers, DECIMAL, DOUBLE (printed
with round-trip precision), temporal types (TIMESTAMP in the dump session's
UTC time zone), BLOBs and spatial types (internal WKB-with-SRID bytes).

System-versioned tables are dumped with every row version: the period
columns (``row_start``/``row_end``, also the implicit invisible ones) are
ordinary columns of the parts, marked ``period`` in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import logging

import pymysql

from tracker.db import query_all, quote_ident
from tracker.errors import TableNotFound

log = logging.getLogger(__name__)

# manifest encoding names (a contract for loaders)
TEXT = "text"
BIT_AS_UNSIGNED = "bit-as-unsigned"
FLOAT_AS_DOUBLE = "float-as-double"


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # e.g. "bit"
    column_type: str  # e.g. "bit(10)"
    generated: bool  # computed by the server: not restored
    charset: str | None = None  # CHARACTER_SET_NAME; None for non-character types
    collation: str | None = None
    period: str | None = None  # "start"/"end": a system-versioning period column

    @property
    def encoding(self) -> str:
        if self.data_type == "bit":
            return BIT_AS_UNSIGNED
        if self.data_type == "float":
            return FLOAT_AS_DOUBLE
        return TEXT

    def select_expression(self) -> str:
        ident = quote_ident(self.name)
        if self.encoding == BIT_AS_UNSIGNED:
            return f"CAST({ident} AS UNSIGNED)"
        if self.encoding == FLOAT_AS_DOUBLE:
            # A DOUBLE holds every FLOAT exactly and prints with round-trip
            # precision; loading it into the FLOAT column rounds back exactly.
            return f"CAST({ident} AS DOUBLE)"
        if self.charset is not None:
            # Binary, so that OUTFILE escapes every byte (see the module doc).
            return f"CAST({ident} AS BINARY)"
        return ident


def column_entry(column: Column) -> dict[str, Any]:
    """The column as the manifest lists it (names are a contract for loaders)."""
    entry: dict[str, Any] = {
        "name": column.name,
        "type": column.column_type,
        "data_type": column.data_type,
        "encoding": column.encoding,
        "generated": column.generated,
        "charset": column.charset,
        "collation": column.collation,
    }
    if column.period is not None:
        entry["period"] = column.period
    return entry


@dataclass(frozen=True)
class TableInfo:
    db: str
    table: str
    engine: str | None
    data_bytes: int  # the server's estimate; used for sizing, never trusted
    rows_estimate: int
    partitions: tuple[str, ...]
    partition_bytes: tuple[int, ...] = ()  # estimates, like data_bytes
    partition_rows: tuple[int, ...] = ()
    versioned: bool = False  # WITH SYSTEM VERSIONING: every row version is dumped
    system_time_partitions: bool = False  # PARTITION BY SYSTEM_TIME (history partitions)


def find_table(conn: pymysql.Connection, db: str, table: str) -> TableInfo:
    """Look a base table up; a missing table or a view is ``TableNotFound``."""
    found = find_tables(conn, [(db, table)])[(db, table)]
    if isinstance(found, TableNotFound):
        raise found
    return found


def find_tables(conn: pymysql.Connection, names: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TableInfo | TableNotFound]:
    """Many tables looked up at once: a query per ``BATCH`` tables (and per ``BATCH`` partitioned ones).

    A host with tens of thousands of tables would otherwise spend most of a
    run on these lookups.  Each name maps to its ``TableInfo`` or to the
    ``TableNotFound`` that looking it up alone would raise.
    """
    wanted = set(names)
    tables: dict[tuple[str, str], tuple] = {}
    partitioned: list[tuple[str, str]] = []
    for where, args in _name_filters(sorted(wanted)):
        for row in query_all(
            conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE, COALESCE(DATA_LENGTH, 0), COALESCE(TABLE_ROWS, 0),"
            f" COALESCE(CREATE_OPTIONS, '') FROM information_schema.TABLES WHERE {where}",
            args,
        ):
            key = (str(row[0]), str(row[1]))
            if key in wanted:
                tables[key] = row[2:6]
                # MariaDB and MySQL both list "partitioned" among a partitioned
                # table's options: only those need information_schema.PARTITIONS,
                # which otherwise opens every table a second time.
                if "partitioned" in str(row[6]).lower().split():
                    partitioned.append(key)
    partitions = _partitions(conn, partitioned)
    return {name: _table_info(name, tables.get(name), partitions.get(name, [])) for name in names}


def _partitions(conn: pymysql.Connection, names: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple]]:
    """(name, bytes, rows, method) of each partition of each table, in partition order."""
    wanted = set(names)
    partitions: dict[tuple[str, str], list[tuple]] = {}
    for where, args in _name_filters(sorted(wanted)):
        # One row per partition, whatever its subpartitions: a unit reads a
        # partition (``PARTITION (p)`` covers its subpartitions) exactly once.
        for row in query_all(
            conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME, PARTITION_NAME, SUM(COALESCE(DATA_LENGTH, 0)),"
            " SUM(COALESCE(TABLE_ROWS, 0)), MAX(PARTITION_METHOD)"
            f" FROM information_schema.PARTITIONS WHERE {where} AND PARTITION_NAME IS NOT NULL"
            " GROUP BY TABLE_SCHEMA, TABLE_NAME, PARTITION_NAME"
            " ORDER BY TABLE_SCHEMA, TABLE_NAME, MIN(PARTITION_ORDINAL_POSITION)",
            args,
        ):
            key = (str(row[0]), str(row[1]))
            if key in wanted:
                partitions.setdefault(key, []).append(row[2:])
    return partitions


def _table_info(name: tuple[str, str], row: tuple | None, partitions: list[tuple]) -> TableInfo | TableNotFound:
    db, table = name
    shown = f"{db}.{table}"
    if row is None:
        return TableNotFound(f"table {shown!r} does not exist")
    kind, engine, data_bytes, rows = row
    if kind not in ("BASE TABLE", "SYSTEM VERSIONED"):
        return TableNotFound(f"{shown!r} is a {str(kind).lower()}, not a base table; nothing dumped")
    return TableInfo(
        db=db,
        table=table,
        engine=engine,
        data_bytes=int(data_bytes),
        rows_estimate=int(rows),
        partitions=tuple(str(p[0]) for p in partitions),
        partition_bytes=tuple(int(p[1]) for p in partitions),
        partition_rows=tuple(int(p[2]) for p in partitions),
        versioned=kind == "SYSTEM VERSIONED",
        system_time_partitions=any(p[3] == "SYSTEM_TIME" for p in partitions),
    )


# Tables per information_schema query: keeps statements short.
BATCH = 500


def _name_filters(names: list[tuple[str, str]]) -> Iterator[tuple[str, tuple]]:
    """WHERE clauses (and their values) covering ``names``, ``BATCH`` at a time.

    Schema IN and name IN select a superset (callers keep only the pairs
    they asked for); the server tests both before it opens a table, and one
    name is an equality it looks up directly.
    """
    for start in range(0, len(names), BATCH):
        chunk = names[start : start + BATCH]
        schemas = sorted({db for db, _ in chunk})
        tables = sorted({table for _, table in chunk})
        where = (
            f"TABLE_SCHEMA IN ({', '.join(['%s'] * len(schemas))})"
            f" AND TABLE_NAME IN ({', '.join(['%s'] * len(tables))})"
        )
        yield where, (*schemas, *tables)


# How information_schema.COLUMNS.GENERATION_EXPRESSION shows period columns.
_PERIOD_EXPRESSIONS = {"ROW START": "start", "ROW END": "end"}

# Implicit period columns of ``WITH SYSTEM VERSIONING`` without declared
# ones: invisible, absent from information_schema.COLUMNS, but selectable.
IMPLICIT_PERIOD = (
    Column("row_start", "timestamp", "timestamp(6)", generated=False, period="start"),
    Column("row_end", "timestamp", "timestamp(6)", generated=False, period="end"),
)


def table_columns(conn: pymysql.Connection, db: str, table: str) -> list[Column]:
    """Columns in table order, including invisible ones (``SELECT *`` skips those)."""
    info = find_table(conn, db, table)
    return tables_columns(conn, [info])[(db, table)]


def tables_columns(conn: pymysql.Connection, infos: Sequence[TableInfo]) -> dict[tuple[str, str], list[Column]]:
    """The columns of many tables, one query per ``BATCH`` schemas.

    A system-versioned table's period columns are data (they date every row
    version) and are restored, so they are not ``generated``; implicit
    ones are listed last.
    """
    wanted = {(i.db, i.table): i for i in infos}
    columns: dict[tuple[str, str], list[Column]] = {name: [] for name in wanted}
    for where, args in _name_filters(sorted(wanted)):
        rows = query_all(
            conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(GENERATION_EXPRESSION, ''),"
            " CHARACTER_SET_NAME, COLLATION_NAME"
            f" FROM information_schema.COLUMNS WHERE {where}"
            " ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
            args,
        )
        for db, table, name, data_type, column_type, expression, charset, collation in rows:
            found = columns.get((str(db), str(table)))
            if found is None:
                continue
            period = _PERIOD_EXPRESSIONS.get(str(expression).upper())
            found.append(
                Column(
                    name=str(name),
                    data_type=str(data_type).lower(),
                    column_type=str(column_type),
                    generated=bool(expression) and period is None,
                    charset=None if charset is None else str(charset),
                    collation=None if collation is None else str(collation),
                    period=period,
                )
            )
    for name, found in columns.items():
        if wanted[name].versioned and not any(c.period for c in found):
            found.extend(IMPLICIT_PERIOD)
    return columns


def select_list(columns: list[Column]) -> str:
    return ", ".join(c.select_expression() for c in columns)


def load_data_sql(columns: list[dict], table_sql: str, path_placeholder: str = "%s") -> str:
    """A ``LOAD DATA`` statement that restores decompressed parts bit for bit.

    ``columns`` are the manifest's column entries.  Generated columns are
    read into a throw-away variable (the server computes them); encoded
    columns are read into variables and converted back.  The session must
    use ``time_zone = '+00:00'`` (the manifest's ``format.time_zone``); for
    a system-versioned table (period columns) also
    ``system_versioning_insert_history = ON``, so the row versions keep
    their own period (without it the server refuses the period columns).

    With a pymysql-style placeholder (one containing ``%``, the default)
    every other ``%`` is doubled, so names containing ``%`` or ``%s``
    survive ``cursor.execute(sql, (path,))``.
    """
    targets: list[str] = []
    assignments: list[str] = []
    for index, column in enumerate(columns):
        ident = quote_ident(column["name"])
        if column.get("generated"):
            targets.append("@tracker_ignored")
        elif column["encoding"] == BIT_AS_UNSIGNED:
            targets.append(f"@tracker_c{index}")
            assignments.append(f"{ident} = CAST(@tracker_c{index} AS UNSIGNED)")
        else:
            targets.append(ident)
    rest = (
        f" INTO TABLE {table_sql}"
        " CHARACTER SET binary"
        " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
        f" ({', '.join(targets)})"
    )
    if assignments:
        rest += " SET " + ", ".join(assignments)
    if "%" in path_placeholder:
        rest = rest.replace("%", "%%")  # only the placeholder is for the client
    return f"LOAD DATA LOCAL INFILE {path_placeholder}{rest}"


SYSTEM_SCHEMAS = ("mysql", "sys", "information_schema", "performance_schema")


def list_objects(conn: pymysql.Connection, skip_schemas: tuple[str, ...]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Base tables and SEQUENCE objects outside the system schemas and ``skip_schemas``, in one query.

    Sequences are tables to the server but not dumped: a sequence holds one
    row of generator state (its next value lives in the engine, not the
    row), which a data set of rows does not restore.  ``run`` logs them.
    """
    skipped = SYSTEM_SCHEMAS + skip_schemas
    marks = ", ".join(["%s"] * len(skipped))
    rows = query_all(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE = 'SEQUENCE' FROM information_schema.TABLES"
        f" WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED', 'SEQUENCE') AND TABLE_SCHEMA NOT IN ({marks})"
        " ORDER BY TABLE_SCHEMA, TABLE_NAME",
        skipped,
    )
    tables = [(str(db), str(table)) for db, table, sequence in rows if not sequence]
    sequences = [(str(db), str(table)) for db, table, sequence in rows if sequence]
    return tables, sequences


def list_tables(conn: pymysql.Connection, skip_schemas: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every base table outside the system schemas and ``skip_schemas``."""
    return list_objects(conn, skip_schemas)[0]
