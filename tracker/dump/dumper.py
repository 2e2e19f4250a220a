"""Dumping tables: plan their units, move each unit, finish each dataset.

The pieces here are shared by ``tracker dump`` (:class:`Dumper`, below) and
``tracker run`` (``runner.py``): a table's units are one per partition, else
one; a unit is dumped on a worker's snapshot connection through the
pipeline; a dataset is finished by writing ``schema.sql``, ``manifest.json``
and, last, ``_SUCCESS``, so a failed table leaves no ``_SUCCESS`` and a
finished one a complete set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import pymysql

from tracker.store import layout
from tracker.store import manifest
from tracker.dump.columns import Column, TableInfo, column_entry, find_table, select_list, show_create_table, table_columns
from tracker.config import Config
from tracker.db import ServerInfo, connect, error_text, kill_query, qualified, quote_ident, server_info
from tracker.errors import ConfigError, NotAReplica, TrackerError
from tracker.dump.chunks import BadPlan, ChunkKey, KeyRange, find_key, split, wanted_ranges
from tracker.dump.outfile import SESSION_SETTINGS, DumpQuery, select_statement
from tracker.dump.pacing import Pacer, open_pacing
from tracker.dump.pipeline import run_unit
from tracker.dump.progress import ProgressBar, combine
from tracker.replicaset.replica import read_status
from tracker.store.sinks import Store, open_store
from tracker.replicaset.ddl import DdlWatch
from tracker.replicaset.snapshot import Position, Snapshot, take_snapshot
from tracker.errors import Cancelled
from tracker.dump.sources import FifoSource, FollowSource, Source
from tracker.dump.workers import Requeue, StopScope, run_parallel

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

    @property
    def label(self) -> str:
        return f"{layout.encode_segment(self.db)}.{layout.encode_segment(self.table)}/part-{self.index:05d}"

    def from_clause(self) -> str:
        clause = qualified(self.db, self.table)
        if self.partition:
            clause += f" PARTITION ({quote_ident(self.partition)})"
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


@dataclass
class TableOutcome:
    """What happened to one requested table (``status``: done, skipped, failed)."""

    db: str
    table: str
    status: str
    rows: int = 0
    error: str | None = None
    units: list[dict[str, Any]] = field(default_factory=list)


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


def plan_document(conn: pymysql.Connection, info: TableInfo, chunk_mb: int) -> dict[str, Any]:
    """A table's units as plain data: partitions, and key ranges of the large ones.

    Plain data so that, in a replica set, the first host's plan can be
    stored on the master and every other host dumps the same units: sizes
    and row estimates differ between replicas, and so would their plans.
    """
    pieces = list(zip(info.partitions, info.partition_bytes, info.partition_rows)) or [
        (None, info.data_bytes, info.rows_estimate)
    ]
    chunk_mb = effective_chunk_mb(chunk_mb, sum(size for _, size, _ in pieces))
    key = None
    if any(wanted_ranges(size, chunk_mb) > 1 for _, size, _ in pieces):
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
        unit = Unit(info.db, info.table, index, partition, int(entry.get("bytes", 0)), key_range, key)
        unit.where()  # renders every literal now: a bad value fails planning, not a dump
        units.append(unit)
    # A partition added since the plan was made would never be dumped; one
    # dropped since would fail every dump of it.  No units at all fails too.
    planned = {u.partition for u in units}
    here = set(info.partitions) or {None}
    if planned != here:
        raise BadPlan(f"{where}: made for partitions {sorted(map(str, planned))}, the table has {sorted(map(str, here))}")
    return units


def _replan_hint(board: PlanBoard | None) -> str:
    """How to recover from a stored plan that no longer fits (its table was altered)."""
    if board is None:
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
    try:
        units = units_from_plan(conn, info, document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPlan(f"plan of {db}.{table}: malformed ({type(exc).__name__}: {exc}){_replan_hint(board)}") from None
    except BadPlan as exc:
        raise BadPlan(f"{exc}{_replan_hint(board)}") from None
    if len(units) > 1:
        log.info("event=table_planned table=%s.%s units=%d chunked=%s", db, table, len(units), bool(document.get("key")))
    return TablePlan(
        info=info,
        keys=layout.DatasetKeys(namespace, db, table, date),
        columns=table_columns(conn, db, table),
        schema=show_create_table(conn, db, table),
        units=units,
    )


def check_outfile_dir(config: Config, server: ServerInfo) -> None:
    """outfile_dir must be where the server is allowed to write."""
    where = f"{config.path}: outfile_dir"
    priv = server.secure_file_priv
    if priv is None:
        raise ConfigError(f"{where}: server {server.label} has secure_file_priv=NULL, which disables INTO OUTFILE")
    if priv == "":
        return
    allowed = os.path.realpath(priv)
    actual = os.path.realpath(config.outfile_dir)
    if os.path.commonpath([allowed, actual]) != allowed:
        raise ConfigError(f"{where}: {config.outfile_dir} is outside the server's secure_file_priv {priv}")


def choose_source(config: Config, server: ServerInfo) -> str:
    if config.source != "auto":
        return config.source
    return "fifo" if server.flavour == "percona" else "follow"


def describe_failure(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TrackerError) else f"{type(exc).__name__}: {exc}"


class UnitDumper:
    """Moves units of tables from the local server to the store."""

    def __init__(self, config: Config, store: Store, server: ServerInfo, cancel: threading.Event) -> None:
        self.config = config
        self.store = store
        self.server = server
        self.cancel = cancel
        self.source_kind = choose_source(config, server)
        self._seq = itertools.count()
        # Set by whoever runs the units (dump, run) for the span of the work.
        self.pacer = Pacer.none()
        self.progress: ProgressBar | None = None

    def dump(
        self,
        conn: pymysql.Connection,
        plan: TablePlan,
        unit: Unit,
        position: Position | None,
        *,
        cancel: threading.Event | None = None,
        checks: Sequence[Callable[[], None]] = (),
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Dump one unit on ``conn`` (a snapshot connection); its manifest entry."""
        cancel = cancel or self.cancel
        if cancel.is_set():
            raise Cancelled("stopped by request")
        key = plan.keys.part(unit.index, self.config.compression)
        path = self._outfile_path()
        statement = select_statement(
            unit.label, select_list(plan.columns), unit.from_clause(), conn.escape(str(path)), unit.where()
        )
        query = DumpQuery(conn, statement, self._kill_query)
        log.info("event=unit_start unit=%s source=%s", unit.label, self.source_kind)
        stats = run_unit(
            self._source(query, path, cancel),
            self.store,
            key,
            compression=self.config.compression,
            overwrite=overwrite,
            size_hint=unit.size_hint,
            checks=checks,
            label=unit.label,
            meter=combine(self.progress.meter() if self.progress else None, self.pacer.meter(cancel)),
        )
        if self.progress:
            self.progress.unit_done()
        log.info(
            "event=unit_done unit=%s rows=%d bytes=%d raw_bytes=%d secs=%.2f mb_per_sec=%.1f",
            unit.label,
            stats.rows,
            stats.stored_bytes,
            stats.raw_bytes,
            stats.seconds,
            stats.raw_bytes / 1e6 / max(stats.seconds, 1e-9),
        )
        return manifest.UnitEntry(
            index=unit.index,
            key=key,
            url=self.store.url(key),
            rows=stats.rows,
            bytes=stats.stored_bytes,
            raw_bytes=stats.raw_bytes,
            crc32c=stats.crc32c,
            source=self.server.label,
            seconds=stats.seconds,
            partition=unit.partition,
            range=unit.range_entry(),
            position=position.to_json() if position else None,
        ).to_json()

    @contextlib.contextmanager
    def paced(self, units: Sequence[Unit], replica: bool) -> Iterator[None]:
        """Load control and, on a terminal, a progress bar, while ``units`` are dumped."""
        total = sum(u.size_hint for u in units)
        with open_pacing(self.config, self.source_kind, replica) as pacer, ProgressBar(len(units), total) as bar:
            self.pacer, self.progress = pacer, bar
            try:
                yield
            finally:
                self.pacer, self.progress = Pacer.none(), None

    def _source(self, query: DumpQuery, path: Path, cancel: threading.Event) -> Source:
        if self.source_kind == "fifo":
            return FifoSource(query, path, cancel)
        return FollowSource(query, path, cancel)

    def _outfile_path(self) -> Path:
        name = f"tracker-{os.getpid()}-{next(self._seq)}-{secrets.token_hex(4)}.tsv"
        return self.config.outfile_dir / name

    def _kill_query(self, connection_id: int) -> None:
        conn = connect(self.config.mysql)
        try:
            if kill_query(conn, connection_id):
                log.info("event=query_killed connection=%s", connection_id)
        finally:
            conn.close()

    def finish_table(self, plan: TablePlan, units: list[dict[str, Any]]) -> dict[str, Any]:
        """Write schema, manifest and, last, ``_SUCCESS``; returns the manifest."""
        document = manifest.build(
            namespace=self.config.namespace,
            db=plan.info.db,
            table=plan.info.table,
            date=plan.keys.date,
            columns=[column_entry(c) for c in plan.columns],
            compression=self.config.compression,
            units=units,
            schema_key=plan.keys.schema,
            server_version=self.server.version,
        )
        self.store.put(plan.keys.schema, plan.schema.encode() + b"\n")
        self.store.put(plan.keys.manifest, manifest.dumps(document))
        self.store.put(plan.keys.success, b"")
        log.info(
            "event=table_done table=%s.%s date=%s units=%d rows=%d bytes=%d",
            plan.info.db,
            plan.info.table,
            plan.keys.date,
            len(units),
            document["rows"],
            document["bytes"],
        )
        return document


def open_local(config: Config) -> tuple[pymysql.Connection, ServerInfo]:
    """Connect to the local server and check it can write to outfile_dir."""
    conn = connect(config.mysql)
    try:
        server = server_info(conn)
        check_outfile_dir(config, server)
    except BaseException:
        conn.close()
        raise
    return conn, server


class Dumper:
    """``tracker dump``: the named tables, now, from one snapshot."""

    def __init__(self, config: Config, cancel: threading.Event, store: Store | None = None) -> None:
        self.config = config
        self.cancel = cancel
        self.store = store or open_store(config.destination, config.s3)

    def dump(
        self, tables: list[tuple[str, str]], date: dt.date, *, force: bool, allow_master: bool = False
    ) -> list[TableOutcome]:
        conn, server = open_local(self.config)
        try:
            replica = read_status(conn) is not None
            if not replica and not allow_master:
                raise NotAReplica(
                    f"{server.label} is not a replica; refusing to dump from a master (use --allow-master)"
                )
            outcomes = [TableOutcome(db, table, "pending") for db, table in tables]
            plans = [(p, o) for o in outcomes if (p := self._plan(conn, o, date, force)) is not None]
        finally:
            conn.close()
        units = UnitDumper(self.config, self.store, server, self.cancel)
        jobs = [(plan, outcome, unit) for plan, outcome in plans for unit in plan.units]
        if jobs:
            workers = min(self.config.workers, len(jobs))
            snapshot = take_snapshot(self.config.mysql, workers, self.config.replication, replica=replica)
            try:
                with DdlWatch(self.config.mysql, snapshot, self.config.ddl_wait_seconds), units.paced(
                    [unit for _plan, _outcome, unit in jobs], replica
                ):
                    results = run_parallel(
                        snapshot.connections,
                        jobs,
                        lambda c, job: self._dump_one(units, snapshot, c, job),
                        self.cancel,
                        retries=self.config.retries,
                    )
            finally:
                snapshot.close()
            if self.cancel.is_set():
                raise Cancelled("stopped by request; no unfinished unit was committed")
            for result in results:
                _plan, outcome, unit = result.job
                if result.error is None:
                    outcome.units.append(result.result)  # type: ignore[arg-type]
                elif outcome.status != "failed":
                    self._fail(outcome, f"{unit.label}: {describe_failure(result.error)}")
        for plan, outcome in plans:
            if outcome.status == "failed":
                continue
            try:
                outcome.rows = units.finish_table(plan, outcome.units)["rows"]
                outcome.status = "done"
            except TrackerError as exc:
                self._fail(outcome, str(exc))
        return outcomes

    def _dump_one(self, units: UnitDumper, snapshot: Snapshot, conn: pymysql.Connection, job: tuple) -> dict[str, Any]:
        plan, _outcome, unit = job
        snapshot.ensure_fresh(conn)
        scope = StopScope(self.cancel)
        units.pacer.before_unit(scope)
        with snapshot.unit(conn, scope):
            try:
                return units.dump(conn, plan, unit, snapshot.position_of(conn), cancel=scope)
            except Cancelled:
                if snapshot.is_stale(conn) and not self.cancel.is_set():
                    raise Requeue(f"{unit.label} interrupted to release a metadata lock") from None
                raise

    def _plan(self, conn: pymysql.Connection, outcome: TableOutcome, date: dt.date, force: bool) -> TablePlan | None:
        db, table = outcome.db, outcome.table
        try:
            plan = plan_table(conn, self.config.namespace, db, table, date, self.config.chunk_mb)
            if self.store.exists(plan.keys.success) and not force:
                outcome.status = "skipped"
                log.info("event=skip_complete table=%s.%s date=%s", db, table, date)
                return None
            self._clear_dataset(plan.keys)
            return plan
        except TrackerError as exc:
            return self._fail(outcome, str(exc))
        except pymysql.MySQLError as exc:
            return self._fail(outcome, f"reading table {db}.{table}: {error_text(exc)}")

    def _clear_dataset(self, keys: layout.DatasetKeys) -> None:
        """Remove what an earlier, incomplete or replaced attempt left.

        ``_SUCCESS`` goes first: from then on no reader trusts the dataset.
        """
        self.store.delete(keys.success)
        for key in self.store.list(keys.prefix + "/"):
            self.store.delete(key)

    @staticmethod
    def _fail(outcome: TableOutcome, message: str) -> None:
        outcome.status = "failed"
        outcome.error = message
        log.error("event=table_failed table=%s.%s error=%s", outcome.db, outcome.table, message)
        return None
