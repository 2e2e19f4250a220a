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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
from tracker.store.sinks import Store

log = logging.getLogger(__name__)

FINISH_THREADS = 8  # writes in flight while finishing a batch of tables


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

    def finish_table(
        self, plan: TablePlan, units: list[dict[str, Any]], check: Callable[[], None] = lambda: None
    ) -> dict[str, Any]:
        """Write schema, manifest and, last, ``_SUCCESS``; returns the manifest.

        ``check`` (the dataset lease) runs right before each of the three
        writes: a writer that lost the dataset must not describe, or declare
        complete, parts another writer may have replaced.
        """
        document = self._manifest(plan, units)
        for key, data in self._final_writes(plan, document):
            check()
            self.store.put(key, data)
        self._log_done(plan, document)
        return document

    def finish_tables(
        self,
        items: Sequence[tuple[TablePlan, list[dict[str, Any]]]],
        check: Callable[[list[TablePlan]], dict[layout.DatasetKeys, str]],
    ) -> dict[layout.DatasetKeys, str]:
        """Finish many datasets at once; the ones that could not be finished, and why.

        The same three writes as :meth:`finish_table`, each for every table
        before the next: ``check(plans)`` (one statement for all their
        dataset leases; it returns the lost ones) runs right before every
        ``schema.sql``, again before every ``manifest.json``, and again
        before every ``_SUCCESS``.  A table whose lease is lost or whose
        write fails gets nothing more written.
        """
        documents = {plan.keys: self._manifest(plan, units) for plan, units in items}
        failed: dict[layout.DatasetKeys, str] = {}
        alive = [plan for plan, _ in items]
        # The writes of one step go out together: an fsync (file://) or a
        # PUT (S3) costs milliseconds of waiting, and waits overlap.
        with ThreadPoolExecutor(max_workers=max(1, min(FINISH_THREADS, len(items))), thread_name_prefix="finish") as pool:
            for step in range(3):
                failed.update(check(alive))
                alive = [plan for plan in alive if plan.keys not in failed]
                writes = {
                    plan.keys: pool.submit(self.store.put, *self._final_writes(plan, documents[plan.keys])[step])
                    for plan in alive
                }
                for keys, write in writes.items():
                    try:
                        write.result()
                    except TrackerError as exc:
                        failed[keys] = str(exc)
                alive = [plan for plan in alive if plan.keys not in failed]
        for plan in alive:
            self._log_done(plan, documents[plan.keys])
        return failed

    def _manifest(self, plan: TablePlan, units: list[dict[str, Any]]) -> dict[str, Any]:
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
    def _final_writes(plan: TablePlan, document: dict[str, Any]) -> list[tuple[str, bytes]]:
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
