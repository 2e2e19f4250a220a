"""Moving units of tables from the local server to the store, and finishing datasets.

Shared by ``tracker dump`` (``dumper.py``) and ``tracker run``
(``runner.py``): a unit is dumped on a worker's snapshot connection through
the pipeline; a dataset is finished by writing ``schema.sql``,
``manifest.json`` and, last, ``_SUCCESS``, so a failed table leaves no
``_SUCCESS`` and a finished one a complete set.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import threading
from concurrent.futures import Executor
from typing import Any, Callable, Iterator, Sequence

import pymysql

from tracker.config import Config
from tracker.db import ServerInfo, connect, kill_query, server_info
from tracker.dump.columns import column_entry, select_list
from tracker.dump.outfile import DumpQuery, select_statement
from tracker.dump.pacing import Pacer, open_pacing
from tracker.dump.pipeline import run_unit
from tracker.dump.plan import TablePlan, Unit
from tracker.dump.progress import ProgressBar, combine
from tracker.dump.sources import FifoSource, FollowSource, Source
from tracker.errors import Cancelled, ConfigError, TrackerError
from tracker.replicaset.snapshot import Position
from tracker.store import layout, manifest
from tracker.store.sinks import Store, Uploads

log = logging.getLogger(__name__)

def check_outfile_dir(config: Config, server: ServerInfo) -> None:
    """outfile_dir must be where the server is allowed to write."""
    config.require_outfile_dir()  # optional at load time: a converter host's config has none
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
        # OUTFILE names: pid, a counter and a tag drawn once (a reused pid
        # cannot meet a dead process's leftovers; drawing per unit cost a
        # system call per small table).
        self._seq = itertools.count()
        self._tag = secrets.token_hex(4)
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
        uploads: Uploads | None = None,
    ) -> dict[str, Any]:
        """Dump one unit on ``conn`` (a snapshot connection); its manifest entry.

        ``uploads``: where its object goes, the store unless a commit group.
        """
        cancel = cancel or self.cancel
        if cancel.is_set():
            raise Cancelled("stopped by request")
        key = plan.keys.part(unit.index, self.config.compression)
        path = self._outfile_path()
        statement = select_statement(
            unit.label, select_list(plan.columns), unit.from_clause(), conn.escape(path), unit.where()
        )
        query = DumpQuery(conn, statement, self._kill_query)
        # A unit in a commit group is the one unit of a small table of a
        # batch, over in a millisecond: its start and end are news only when
        # debugging (-vv); its table's event=table_done line says the rest.
        # On a host of ten thousand such tables that halves the log, and a
        # log line cost as much as a third of dumping the table.
        level = logging.DEBUG if uploads is not None else logging.INFO
        log.log(level, "event=unit_start unit=%s source=%s", unit.label, self.source_kind)
        stats = run_unit(
            self._source(query, path, cancel),
            uploads or self.store,
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
        log.log(
            level,
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

    def _source(self, query: DumpQuery, path: str, cancel: threading.Event) -> Source:
        if self.source_kind == "fifo":
            return FifoSource(query, path, cancel)
        return FollowSource(query, path, cancel)

    def _outfile_path(self) -> str:
        name = f"tracker-{os.getpid()}-{next(self._seq)}-{self._tag}.tsv"
        return os.path.join(self.config.outfile_dir, name)

    def _kill_query(self, connection_id: int) -> None:
        conn = connect(self.config.mysql)
        try:
            if kill_query(conn, connection_id):
                log.info("event=query_killed connection=%s", connection_id)
        finally:
            conn.close()

    def finish_table(
        self, plan: TablePlan, units: list[dict[str, Any]], check: Callable[[], None] = lambda: None
    ) -> dict[str, Any]:
        """Write schema, manifest and, last, ``_SUCCESS``; returns the manifest.

        ``check`` (the dataset lease) runs right before each of the three
        writes: a writer that lost the dataset must not describe, or declare
        complete, parts another writer may have replaced.
        """
        document = self.manifest_of(plan, units)
        for key, data in self.final_writes(plan, document):
            check()
            self.store.put(key, data)
        self._log_done(plan, document)
        return document

    def declare_complete(
        self,
        items: Sequence[tuple[TablePlan, dict[str, Any]]],
        check: Callable[[list[TablePlan]], dict[layout.DatasetKeys, str]],
        pool: Executor,
    ) -> dict[layout.DatasetKeys, str]:
        """``_SUCCESS`` of datasets whose ``schema.sql`` and ``manifest.json`` (``items``' documents) are in place.

        One ``check(plans)`` (one statement for all their dataset leases; it
        returns the lost ones) comes first; the ``_SUCCESS`` objects then go
        out together (``Store.put_many``: PUTs at once on ``pool``, files
        made durable as a group).  Returns the datasets not declared, and why.
        """
        failed = dict(check([plan for plan, _ in items]))
        alive = [(plan, document) for plan, document in items if plan.keys not in failed]
        errors = self.store.put_many([(plan.keys.success, b"") for plan, _ in alive], pool)
        for plan, document in alive:
            if plan.keys.success in errors:
                failed[plan.keys] = str(errors[plan.keys.success])
            else:
                self._log_done(plan, document)
        return failed

    def manifest_of(self, plan: TablePlan, units: list[dict[str, Any]]) -> dict[str, Any]:
        return manifest.build(
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

    @staticmethod
    def final_writes(plan: TablePlan, document: dict[str, Any]) -> list[tuple[str, bytes]]:
        """``schema.sql``, ``manifest.json`` and, last, ``_SUCCESS``: the order is the contract."""
        return [
            (plan.keys.schema, plan.schema.encode() + b"\n"),
            (plan.keys.manifest, manifest.dumps(document)),
            (plan.keys.success, b""),
        ]

    @staticmethod
    def _log_done(plan: TablePlan, document: dict[str, Any]) -> None:
        log.info(
            "event=table_done table=%s.%s date=%s units=%d rows=%d bytes=%d",
            plan.info.db,
            plan.info.table,
            plan.keys.date,
            len(document["units"]),
            document["rows"],
            document["bytes"],
        )


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
