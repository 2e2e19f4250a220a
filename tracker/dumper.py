"""The dump use case: tables in, complete datasets out.

For each table: look it up, plan its units (one per partition, else one),
dump every unit through the pipeline on ``workers`` threads, then write
``schema.sql``, ``manifest.json`` and, last, ``_SUCCESS``: a failed table
leaves no object at all, a finished one a complete set.  A dataset that is not complete
(or is being replaced with ``force``) is cleared first, so every object
under a dataset prefix comes from one attempt.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import secrets
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from tracker import layout, manifest
from tracker.columns import Column, TableInfo, find_table, select_list, show_create_table, table_columns
from tracker.config import Config
from tracker.db import ServerInfo, connect, error_text, qualified, quote_ident, server_info
from tracker.errors import ConfigError, TrackerError
from tracker.outfile import SESSION_SETTINGS, DumpQuery, select_statement
from tracker.pipeline import run_unit
from tracker.sinks import Store, open_store
from tracker.sources import Cancelled, FifoSource, FollowSource, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One independently dumped and committed piece of a table."""

    db: str
    table: str
    index: int
    partition: str | None
    size_hint: int

    @property
    def label(self) -> str:
        return f"{layout.encode_segment(self.db)}.{layout.encode_segment(self.table)}/part-{self.index:05d}"

    def from_clause(self) -> str:
        base = qualified(self.db, self.table)
        return f"{base} PARTITION ({quote_ident(self.partition)})" if self.partition else base


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
    units: list[manifest.UnitEntry] = field(default_factory=list)


def plan_units(info: TableInfo) -> list[Unit]:
    """One unit per partition; one for an unpartitioned table."""
    if not info.partitions:
        return [Unit(info.db, info.table, 0, None, info.data_bytes)]
    share = info.data_bytes // len(info.partitions)
    return [Unit(info.db, info.table, i, p, share) for i, p in enumerate(info.partitions)]


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


class Dumper:
    """Dumps tables for one date with the configured workers."""

    def __init__(self, config: Config, cancel: threading.Event, store: Store | None = None) -> None:
        self.config = config
        self.cancel = cancel
        self.store = store or open_store(config.destination, config.s3)
        self._seq = itertools.count()
        self._server: ServerInfo | None = None
        self._source_kind = "follow"

    # -- entry point ---------------------------------------------------------

    def dump(self, tables: list[tuple[str, str]], date: dt.date, *, force: bool) -> list[TableOutcome]:
        conn = connect(self.config.mysql)
        try:
            self._server = server_info(conn)
            check_outfile_dir(self.config, self._server)
            self._source_kind = choose_source(self.config, self._server)
            outcomes: list[TableOutcome] = []
            plans: list[tuple[TablePlan, TableOutcome]] = []
            for db, table in tables:
                outcome = TableOutcome(db, table, "pending")
                outcomes.append(outcome)
                plan = self._plan_table(conn, db, table, date, force, outcome)
                if plan is not None:
                    plans.append((plan, outcome))
        finally:
            conn.close()
        self._run_units(plans)
        for plan, outcome in plans:
            self._finish_table(plan, outcome)
        return outcomes

    # -- planning --------------------------------------------------------------

    def _plan_table(
        self, conn: pymysql.Connection, db: str, table: str, date: dt.date, force: bool, outcome: TableOutcome
    ) -> TablePlan | None:
        keys = layout.DatasetKeys(self.config.namespace, db, table, date)
        try:
            info = find_table(conn, db, table)
            if self.store.exists(keys.success) and not force:
                outcome.status = "skipped"
                log.info("event=skip_complete table=%s.%s date=%s", db, table, date)
                return None
            columns = table_columns(conn, db, table)
            schema = show_create_table(conn, db, table)
            self._clear_dataset(keys)
        except TrackerError as exc:
            return self._fail(outcome, str(exc))
        except pymysql.MySQLError as exc:
            return self._fail(outcome, f"reading table {db}.{table}: {error_text(exc)}")
        return TablePlan(info, keys, columns, schema, plan_units(info))

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

    # -- running ---------------------------------------------------------------

    def _run_units(self, plans: list[tuple[TablePlan, TableOutcome]]) -> None:
        jobs = [(plan, outcome, unit) for plan, outcome in plans for unit in plan.units]
        if not jobs:
            return
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="worker") as pool:
            futures: dict[Future, tuple[TablePlan, TableOutcome, Unit]] = {
                pool.submit(self._dump_unit, plan, unit): (plan, outcome, unit) for plan, outcome, unit in jobs
            }
            try:
                pending = set(futures)
                while pending:
                    # A timed wait keeps the main thread responsive to signals.
                    _done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            except BaseException:
                self.cancel.set()
                raise
            finally:
                if self.cancel.is_set():
                    for future in futures:
                        future.cancel()
        for future, (_plan, outcome, unit) in futures.items():
            exc = future.exception()
            if exc is None:
                outcome.units.append(future.result())
            elif outcome.status != "failed":
                message = str(exc) if isinstance(exc, TrackerError) else f"{type(exc).__name__}: {exc}"
                self._fail(outcome, f"{unit.label}: {message}")
        if self.cancel.is_set():
            raise Cancelled("stopped by request; no unfinished unit was committed")

    def _dump_unit(self, plan: TablePlan, unit: Unit) -> manifest.UnitEntry:
        if self.cancel.is_set():
            raise Cancelled("stopped by request")
        key = plan.keys.part(unit.index, self.config.compression)
        conn = connect(self.config.mysql)
        try:
            with conn.cursor() as cur:
                cur.execute(SESSION_SETTINGS)
            path = self._outfile_path()
            statement = select_statement(
                unit.label, select_list(plan.columns), unit.from_clause(), conn.escape(str(path))
            )
            query = DumpQuery(conn, statement, self._kill_query)
            log.info("event=unit_start unit=%s source=%s", unit.label, self._source_kind)
            stats = run_unit(
                self._source(query, path),
                self.store,
                key,
                compression=self.config.compression,
                overwrite=False,
                size_hint=unit.size_hint,
                label=unit.label,
            )
        finally:
            conn.close()
        log.info(
            "event=unit_done unit=%s rows=%d bytes=%d raw_bytes=%d secs=%.2f mb_per_sec=%.1f",
            unit.label,
            stats.rows,
            stats.stored_bytes,
            stats.raw_bytes,
            stats.seconds,
            stats.raw_bytes / 1e6 / max(stats.seconds, 1e-9),
        )
        assert self._server is not None
        return manifest.UnitEntry(
            index=unit.index,
            key=key,
            url=self.store.url(key),
            rows=stats.rows,
            bytes=stats.stored_bytes,
            raw_bytes=stats.raw_bytes,
            crc32=stats.crc32,
            source=self._server.label,
            seconds=stats.seconds,
            partition=unit.partition,
        )

    def _source(self, query: DumpQuery, path: Path) -> Source:
        if self._source_kind == "fifo":
            return FifoSource(query, path, self.cancel)
        return FollowSource(query, path, self.cancel)

    def _outfile_path(self) -> Path:
        name = f"tracker-{os.getpid()}-{next(self._seq)}-{secrets.token_hex(4)}.tsv"
        return self.config.outfile_dir / name

    def _kill_query(self, connection_id: int) -> None:
        conn = connect(self.config.mysql)
        try:
            with conn.cursor() as cur:
                cur.execute("KILL QUERY %s", (connection_id,))
            log.info("event=query_killed connection=%s", connection_id)
        except pymysql.MySQLError as exc:
            if "Unknown thread" not in str(exc):
                raise
        finally:
            conn.close()

    # -- finishing -------------------------------------------------------------

    def _finish_table(self, plan: TablePlan, outcome: TableOutcome) -> None:
        if outcome.status == "failed":
            return
        assert self._server is not None
        document = manifest.build(
            namespace=self.config.namespace,
            db=plan.info.db,
            table=plan.info.table,
            date=plan.keys.date,
            columns=plan.columns,
            compression=self.config.compression,
            units=outcome.units,
            schema_key=plan.keys.schema,
            server_version=self._server.version,
        )
        try:
            self.store.put(plan.keys.schema, plan.schema.encode() + b"\n")
            self.store.put(plan.keys.manifest, manifest.dumps(document))
            self.store.put(plan.keys.success, b"")
        except TrackerError as exc:
            self._fail(outcome, str(exc))
            return
        outcome.status = "done"
        outcome.rows = document["rows"]
        log.info(
            "event=table_done table=%s.%s date=%s units=%d rows=%d bytes=%d",
            plan.info.db,
            plan.info.table,
            plan.keys.date,
            len(outcome.units),
            document["rows"],
            document["bytes"],
        )
