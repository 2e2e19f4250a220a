"""``tracker dump``: the named tables, now, from one snapshot.

Each table is planned alone (no replica set shares the work), taken under
its dataset lease on the master, cleared of an earlier attempt, dumped unit
by unit through ``units.py`` and finished with ``_SUCCESS`` last.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import pymysql

from tracker.config import Config
from tracker.db import error_text
from tracker.dump.plan import TablePlan, plan_table
from tracker.dump.units import UnitDumper, describe_failure, open_local
from tracker.dump.workers import Requeue, StopScope, run_parallel
from tracker.errors import Cancelled, LeaseLost, NotAReplica, TrackerError
from tracker.replicaset.claims import Owner
from tracker.replicaset.datasets import DatasetLease, DatasetLeases, open_dataset_leases
from tracker.replicaset.ddl import DdlWatch
from tracker.replicaset.replica import read_status
from tracker.replicaset.snapshot import Snapshot, take_snapshot
from tracker.store import layout
from tracker.store.sinks import Store, open_store

log = logging.getLogger(__name__)


@dataclass
class TableOutcome:
    """What happened to one requested table (``status``: done, skipped, failed)."""

    db: str
    table: str
    status: str
    rows: int = 0
    error: str | None = None
    units: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Held:
    """A table's dataset lease during a dump, and the stop flag its loss sets."""

    lease: DatasetLease
    stop: StopScope


class Dumper:
    """``tracker dump``: the named tables, now, from one snapshot."""

    def __init__(self, config: Config, cancel: threading.Event, store: Store | None = None) -> None:
        self.config = config
        self.cancel = cancel
        self.store = store or open_store(config.destination, config.s3)

    def dump(
        self, tables: list[tuple[str, str]], date: dt.date, *, force: bool, allow_master: bool = False
    ) -> list[TableOutcome]:
        """Each table under its dataset lease on the master, taken before anything is deleted."""
        conn, server = open_local(self.config)
        try:
            status = read_status(conn)
            replica = status is not None
            if not replica and not allow_master:
                raise NotAReplica(
                    f"{server.label} is not a replica; refusing to dump from a master (use --allow-master)"
                )
            leases = open_dataset_leases(self.config, status, Owner(server.hostname, server.port))
        except BaseException:
            conn.close()
            raise
        held: dict[layout.DatasetKeys, _Held] = {}
        try:
            try:
                outcomes = [TableOutcome(db, table, "pending") for db, table in tables]
                plans = [(p, o) for o in outcomes if (p := self._plan(conn, o, date, force, leases, held)) is not None]
            finally:
                conn.close()
            units = UnitDumper(self.config, self.store, server, self.cancel)
            self._dump_units(units, plans, replica, held)
            for plan, outcome in plans:
                lease = held.pop(plan.keys).lease
                try:
                    if outcome.status != "failed":
                        outcome.rows = units.finish_table(plan, outcome.units, check=lease.check)["rows"]
                        outcome.status = "done"
                except TrackerError as exc:
                    self._fail(outcome, str(exc))
                finally:
                    lease.release()
            return outcomes
        finally:  # also on failure and Ctrl-C: a dataset lease of a dead dump blocks the table for a lease period
            for entry in held.values():
                entry.lease.release()
            leases.close()

    def _dump_units(
        self, units: UnitDumper, plans: list[tuple[TablePlan, TableOutcome]], replica: bool, held: dict[layout.DatasetKeys, "_Held"]
    ) -> None:
        """Dump every unit of ``plans`` from one snapshot; each outcome gets its units or fails."""
        jobs = [(plan, outcome, unit) for plan, outcome in plans for unit in plan.units]
        if not jobs:
            return
        workers = min(self.config.workers, len(jobs))
        snapshot = take_snapshot(self.config.mysql, workers, self.config.replication, replica=replica)
        try:
            with DdlWatch(self.config.mysql, snapshot, self.config.ddl_wait_seconds), units.paced(
                [unit for _plan, _outcome, unit in jobs], replica
            ):
                results = run_parallel(
                    snapshot.connections,
                    jobs,
                    lambda c, job: self._dump_one(units, snapshot, c, job, held[job[0].keys]),
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

    def _dump_one(
        self, units: UnitDumper, snapshot: Snapshot, conn: pymysql.Connection, job: tuple, held: "_Held"
    ) -> dict[str, Any]:
        plan, _outcome, unit = job
        snapshot.ensure_fresh(conn)
        scope = StopScope(held.stop)  # stops on the run's stop, and when the table's lease is lost
        try:
            units.pacer.before_unit(scope)
            with snapshot.unit(conn, scope):
                try:
                    return units.dump(
                        conn, plan, unit, snapshot.position_of(conn), cancel=scope, checks=(held.lease.check,)
                    )
                except Cancelled:
                    if snapshot.is_stale(conn) and not held.stop.is_set():
                        raise Requeue(f"{unit.label} interrupted to release a metadata lock") from None
                    raise
        except Cancelled:
            if held.lease.lost is not None:
                raise LeaseLost(held.lease.lost) from None
            raise

    def _plan(
        self,
        conn: pymysql.Connection,
        outcome: TableOutcome,
        date: dt.date,
        force: bool,
        leases: DatasetLeases,
        held: dict[layout.DatasetKeys, "_Held"],
    ) -> TablePlan | None:
        """The table's plan, its dataset lease taken and its old dataset cleared; None if skipped or failed."""
        db, table = outcome.db, outcome.table
        try:
            plan = plan_table(conn, self.config.namespace, db, table, date, self.config.chunk_mb)
            if self.store.exists(plan.keys.success) and not force:
                outcome.status = "skipped"
                log.info("event=skip_complete table=%s.%s date=%s", db, table, date)
                return None
            lease = leases.take_for_dump(db, table, date)  # DatasetBusy: this table fails alone
            stop = StopScope(self.cancel)
            lease.start_keep_alive(stop.set)
            held[plan.keys] = _Held(lease, stop)
            self._clear_dataset(plan.keys)
            return plan
        except TrackerError as exc:
            return self._fail(outcome, str(exc))
        except pymysql.MySQLError as exc:
            return self._fail(outcome, f"reading table {db}.{table}: {error_text(exc)}")

    def _clear_dataset(self, keys: layout.DatasetKeys) -> None:
        """Remove what an earlier, incomplete or replaced attempt left.

        Only under the dataset's lease (``_plan``): no other dump or run
        writes the dataset meanwhile, so nothing deleted here belongs to a
        live writer.  ``_SUCCESS`` goes first: from then on no reader trusts
        the dataset.
        """
        self.store.delete(keys.success)
        for key in self.store.list(keys.prefix + "/"):
            self.store.delete(key)

    @staticmethod
    def _fail(outcome: TableOutcome, message: str) -> None:
        outcome.status = "failed"
        outcome.error = message
        log.warning("event=table_failed table=%s.%s error=%s", outcome.db, outcome.table, message)
        return None
