"""A table's units: one per partition, else one; large ones split into key ranges.

In a replica set the plan is plain data stored on the master (``PlanBoard``),
so every host dumps the same units even though their size estimates differ.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Protocol

import pymysql

from tracker.db import qualified, quote_ident
from tracker.dump.chunks import BadPlan, ChunkKey, KeyRange, find_key, split, wanted_ranges
from tracker.config import MySQLConfig
from tracker.dump.columns import Column, TableInfo, find_table, find_tables, tables_columns
from tracker.dump.create_table import show_create_table, show_create_tables
from tracker.errors import TrackerError
from tracker.dump.outfile import SESSION_SETTINGS
from tracker.store import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One independently dumped and committed piece of a table.

    A unit is the whole table, one partition, or one key range of either.
    """

    db: str
    table: str
    index: int
    partition: str | None
    size_hint: int
    range: KeyRange | None = None
    key: ChunkKey | None = None
    all_versions: bool = False  # system-versioned: read every row version

    @cached_property  # in every log line and key of the unit: encoded once
    def label(self) -> str:
        return f"{layout.encode_segment(self.db)}.{layout.encode_segment(self.table)}/part-{self.index:05d}"

    def from_clause(self) -> str:
        clause = qualified(self.db, self.table)
        if self.partition:
            clause += f" PARTITION ({quote_ident(self.partition)})"
        if self.all_versions:
            # MariaDB's order: PARTITION, FOR SYSTEM_TIME, then index hints.
            clause += " FOR SYSTEM_TIME ALL"
        if self.range is not None and self.key is not None:
            clause += f" {self.key.hint()}"
        return clause

    def where(self) -> str:
        if self.range is None or self.key is None:
            return ""
        return self.range.predicate(self.key)

    def range_entry(self) -> dict[str, Any] | None:
        """The manifest's ``range``: the key, the bounds and the exact predicate."""
        if self.range is None or self.key is None:
            return None
        return {"index": self.key.index, **self.range.to_json(), "where": self.where()}


@dataclass
class TablePlan:
    info: TableInfo
    keys: layout.DatasetKeys
    columns: list[Column]
    schema: str
    units: list[Unit]


class PlanBoard(Protocol):
    """Where the hosts of a replica set agree on a table's units (the master)."""

    def shared_plan(
        self,
        db: str,
        table: str,
        date: dt.date,
        compute: Callable[[], dict[str, Any]],
        cancel: threading.Event | None = None,
        wait: bool = True,
    ) -> dict[str, Any] | None: ...


PLAN_VERSION = 1
# Part names have five digits, and a plan and its claims stay small.
MAX_UNITS_PER_TABLE = 10_000


def effective_chunk_mb(chunk_mb: int, table_bytes: int) -> int:
    """``chunk_mb``, raised so that a table of any size makes at most ~MAX_UNITS_PER_TABLE ranges."""
    if chunk_mb <= 0:
        return chunk_mb
    least = -(-table_bytes // (MAX_UNITS_PER_TABLE * 1024 * 1024))
    return max(chunk_mb, least)


def _pieces(info: TableInfo) -> list[tuple[str | None, int, int]]:
    """(partition, bytes, rows) of each partition, or of the whole table."""
    return list(zip(info.partitions, info.partition_bytes, info.partition_rows)) or [
        (None, info.data_bytes, info.rows_estimate)
    ]


def wants_ranges(info: TableInfo, chunk_mb: int) -> bool:
    """Whether planning walks a key: some piece is large enough to split."""
    pieces = _pieces(info)
    chunk_mb = effective_chunk_mb(chunk_mb, sum(size for _, size, _ in pieces))
    return any(wanted_ranges(size, chunk_mb) > 1 for _, size, _ in pieces)


def plan_document(conn: pymysql.Connection, info: TableInfo, chunk_mb: int) -> dict[str, Any]:
    """A table's units as plain data: partitions, and key ranges of the large ones.

    Plain data so that, in a replica set, the first host's plan can be
    stored on the master and every other host dumps the same units: sizes
    and row estimates differ between replicas, and so would their plans.
    """
    pieces = _pieces(info)
    chunk_mb = effective_chunk_mb(chunk_mb, sum(size for _, size, _ in pieces))
    key = None
    if wants_ranges(info, chunk_mb):
        key = find_key(conn, info.db, info.table)
        if key is None:
            log.info("event=no_chunk_key table=%s.%s", info.db, info.table)
        else:
            with conn.cursor() as cur:
                cur.execute(SESSION_SETTINGS)  # boundaries printed in the dumps' time zone
    units: list[dict[str, Any]] = []
    for partition, size, rows in pieces:
        source = qualified(info.db, info.table)
        if partition is not None:
            source += f" PARTITION ({quote_ident(partition)})"
        parts = wanted_ranges(size, chunk_mb)
        ranges = split(conn, source, key, parts, rows) if key is not None else []
        for key_range in ranges or [None]:
            units.append(
                {
                    "partition": partition,
                    "bytes": size // max(1, len(ranges)),
                    "range": key_range.to_json() if key_range else None,
                }
            )
    used_key = key is not None and any(u["range"] for u in units)
    return {
        "version": PLAN_VERSION,
        "key": {"index": key.index, "columns": key.names} if used_key and key else None,
        "units": units,
    }


def units_from_plan(conn: pymysql.Connection, info: TableInfo, document: dict[str, Any]) -> list[Unit]:
    """The units of a plan, checked against the table as this server has it."""
    where = f"plan of {info.db}.{info.table}"
    if document.get("version") != PLAN_VERSION:
        raise BadPlan(f"{where}: unknown plan version {document.get('version')!r}")
    key = None
    if document.get("key"):
        key = find_key(conn, info.db, info.table)
        wanted = document["key"]
        if key is None or key.index != wanted["index"] or key.names != list(wanted["columns"]):
            raise BadPlan(f"{where}: planned on key {wanted['index']} {wanted['columns']}, which this server does not have")
    units = []
    for index, entry in enumerate(document["units"]):
        partition = entry.get("partition")
        key_range = KeyRange.from_json(entry["range"]) if entry.get("range") else None
        if key_range is not None and key is None:
            raise BadPlan(f"{where}: a range without a key")
        # A SYSTEM_TIME partition holds either history or current rows and
        # refuses FOR SYSTEM_TIME; every other versioned read needs ALL.
        all_versions = info.versioned and not (partition and info.system_time_partitions)
        unit = Unit(info.db, info.table, index, partition, int(entry.get("bytes", 0)), key_range, key, all_versions)
        unit.where()  # renders every literal now: a bad value fails planning, not a dump
        units.append(unit)
    # A partition added since the plan was made would never be dumped; one
    # dropped since would fail every dump of it.  No units at all fails too.
    planned = {u.partition for u in units}
    here = set(info.partitions) or {None}
    if planned != here:
        raise BadPlan(f"{where}: made for partitions {sorted(map(str, planned))}, the table has {sorted(map(str, here))}")
    return units


def _replan_hint(shared: bool) -> str:
    """How to recover from a stored plan that no longer fits (its table was altered)."""
    if not shared:
        return ""
    return "; to plan the table again, delete its row from the plans table and its claims on the master"


def plan_table(
    conn: pymysql.Connection,
    namespace: str,
    db: str,
    table: str,
    date: dt.date,
    chunk_mb: int,
    board: PlanBoard | None = None,
    cancel: threading.Event | None = None,
    wait: bool = True,
) -> TablePlan | None:
    """Everything needed to dump a table; its units agreed on ``board`` when given.

    None only with ``wait=False``, while another host plans the table.
    """
    info = find_table(conn, db, table)

    def compute() -> dict[str, Any]:
        return plan_document(conn, info, chunk_mb)

    document = board.shared_plan(db, table, date, compute, cancel, wait) if board is not None else compute()
    if document is None:
        return None
    units = _checked_units(conn, info, document, board is not None)
    if len(units) > 1:
        log.info("event=table_planned table=%s.%s units=%d chunked=%s", db, table, len(units), bool(document.get("key")))
    return TablePlan(
        info=info,
        keys=layout.DatasetKeys(namespace, db, table, date),
        columns=tables_columns(conn, [info])[(db, table)],
        schema=show_create_table(conn, db, table),
        units=units,
    )


class PlanStore(Protocol):
    """Where plans that need no planning lease are stored many at once (the master)."""

    def store_plans(
        self, date: dt.date, documents: dict[tuple[str, str], dict[str, Any]]
    ) -> dict[tuple[str, str], dict[str, Any] | None]: ...


@dataclass
class BatchPlanning:
    """What :func:`plan_tables` made of the tables it was given."""

    plans: dict[tuple[str, str], TablePlan]
    failed: dict[tuple[str, str], Exception]
    left: list[tuple[str, str]]  # for :func:`plan_table`, one by one


def plan_tables(
    conn: pymysql.Connection,
    namespace: str,
    tables: list[tuple[str, str]],
    date: dt.date,
    chunk_mb: int,
    board: PlanStore | None = None,
    mysql: MySQLConfig | None = None,
) -> BatchPlanning:
    """Plans of many tables in a few statements; the ones that need a key walk are ``left``.

    A table that is not split into key ranges plans without a query (its
    units are its partitions, or itself), so its plan needs no planning
    lease: the plans of all such tables are offered to ``board`` in one
    statement, and every host then dumps whatever plan the master holds
    (the first host's, even if another host's estimates would chunk it).
    A table another host plans under a lease right now is ``left``.
    ``mysql`` (the config ``conn`` was opened with) lets the tables' DDL
    come many per round trip, over a connection of its own.
    """
    found = find_tables(conn, tables)
    result = BatchPlanning({}, {}, [])
    infos: dict[tuple[str, str], TableInfo] = {}
    for name in tables:
        info = found[name]
        if isinstance(info, Exception):
            result.failed[name] = info
        elif wants_ranges(info, chunk_mb):
            result.left.append(name)
        else:
            infos[name] = info
    documents = {name: plan_document(conn, info, chunk_mb) for name, info in infos.items()}
    # Three reads of a few round trips each, independent of each other: the
    # plans on the master, the DDL over a connection of its own, the columns
    # on ``conn`` -- at once rather than one after the other.
    with ThreadPoolExecutor(2, thread_name_prefix="plan") as pool:
        stored_later = pool.submit(board.store_plans, date, documents) if board is not None else None
        schemas_later = pool.submit(_schemas, mysql, list(infos)) if mysql is not None else None
        columns = tables_columns(conn, list(infos.values()))
        stored = stored_later.result() if stored_later is not None else dict(documents)
        if schemas_later is not None:
            schemas = schemas_later.result()
        else:
            schemas = _schemas(conn, [name for name in infos if stored.get(name) is not None])
    for name, info in infos.items():
        document = stored.get(name)
        if document is None:
            result.left.append(name)
            continue
        try:
            units = _checked_units(conn, info, document, board is not None)
        except (TrackerError, pymysql.MySQLError) as exc:
            result.failed[name] = exc
            continue
        schema = schemas[name]
        if isinstance(schema, Exception):
            result.failed[name] = schema
            continue
        result.plans[name] = TablePlan(
            info=info,
            keys=layout.DatasetKeys(namespace, *name, date),
            columns=columns[name],
            schema=schema,
            units=units,
        )
    return result


def _schemas(
    source: MySQLConfig | pymysql.Connection, names: list[tuple[str, str]]
) -> dict[tuple[str, str], str | Exception]:
    """Each table's DDL, or why it could not be had: a server out of reach fails every table, as one by one."""
    try:
        return dict(show_create_tables(source, names))
    except (TrackerError, pymysql.MySQLError) as exc:
        return {name: exc for name in names}


def _checked_units(conn: pymysql.Connection, info: TableInfo, document: dict[str, Any], shared: bool) -> list[Unit]:
    hint = _replan_hint(shared)
    try:
        return units_from_plan(conn, info, document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPlan(f"plan of {info.db}.{info.table}: malformed ({type(exc).__name__}: {exc}){hint}") from None
    except BadPlan as exc:
        raise BadPlan(f"{exc}{hint}") from None
