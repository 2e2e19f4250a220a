"""``tracker run``: the nightly cron job of every host of a replica set.

On a server that is not a replica it does nothing (a failover needs no
human).  On a replica it waits until the replica has applied the master's
events up to the dataset's cutoff, takes one consistent snapshot for its
workers, and dumps every wanted table's units that no other host holds or
finished, claiming each on the master first.  Whichever host completes a
table's last unit writes the table's manifest and ``_SUCCESS``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pymysql

from tracker.replicaset.claims import ClaimStore, Lease, Owner, UnitKey
from tracker.dump.columns import list_tables
from tracker.config import Config
from tracker.replicaset.ddl import DdlWatch
from tracker.dump.dumper import (
    TablePlan,
    Unit,
    UnitDumper,
    describe_failure,
    open_local,
    plan_table,
)
from tracker.errors import ConfigError, LeaseLost, TrackerError
from tracker.replicaset.kill import kill as kill_orphans_or_all
from tracker.store.layout import DatasetKeys
from tracker.replicaset.replica import master_config, read_status, wait_until_caught_up
from tracker.store.sinks import Store, open_store
from tracker.replicaset.snapshot import Snapshot, take_snapshot
from tracker.errors import Cancelled
from tracker.dump.workers import Requeue, StopScope, run_parallel

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What one run did; ``status`` is the exit status."""

    status: int = 0
    note: str = ""
    done: list[str] = field(default_factory=list)  # unit labels dumped here
    skipped: list[str] = field(default_factory=list)  # held or finished elsewhere
    failed: list[str] = field(default_factory=list)
    finished_tables: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)  # with --dry-run


@contextlib.contextmanager
def one_run_per_server(directory: Path, port: int, config_path: str) -> Iterator[bool]:
    """An exclusive, non-blocking lock file per local server; yields whether we got it."""
    path = directory / f"tracker-run-{port}.lock"
    try:
        handle = open(path, "a")
    except OSError as exc:
        raise ConfigError(f"{config_path}: run_lock_dir: cannot open {path}: {exc.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


@dataclass
class _Job:
    plan: TablePlan
    unit: Unit


def kill_orphans(config: Config) -> None:
    report = kill_orphans_or_all(config, orphans_only=True)
    if report.queries:
        log.warning("event=orphans_killed count=%d", len(report.queries))


class Runner:
    def __init__(self, config: Config, cancel: threading.Event, store: Store | None = None) -> None:
        self.config = config
        self.cancel = cancel
        self.store = store or open_store(config.destination, config.s3)

    def run(self, date: dt.date, *, workers: int | None = None, dry_run: bool = False) -> RunReport:
        if self.config.skip_file.exists():
            log.info("event=skipped reason=skip_file path=%s", self.config.skip_file)
            return RunReport(note=f"skip file {self.config.skip_file} exists; nothing done")
        conn, server = open_local(self.config)
        try:
            with one_run_per_server(self.config.run_lock_dir, server.port, self.config.path) as got_it:
                if not got_it:
                    log.info("event=skipped reason=already_running port=%d", server.port)
                    return RunReport(note="another tracker run for this server is running; nothing done")
                status = read_status(conn)
                if status is None:
                    log.info("event=skipped reason=not_a_replica server=%s", server.label)
                    return RunReport(note=f"{server.label} is not a replica; nothing to do")
                wait_until_caught_up(conn, date, self.config.replication, self.cancel)
                return self._run(conn, server, status, date, workers or self.config.workers, dry_run)
        finally:
            conn.close()

    def _run(self, conn, server, status, date, workers, dry_run) -> RunReport:
        if dry_run:  # changes nothing, anywhere: plans locally, without the master
            plans, _failed = self._plan(conn, date, board=None)
            planned = [unit.label for plan in plans for unit in plan.units]
            return RunReport(note=f"dry run: {len(planned)} units in {len(plans)} tables", planned=planned)
        # No other run of ours is alive (we hold the lock): any dump query
        # whose process is gone is an orphan writing for nobody.
        kill_orphans(self.config)
        owner = Owner(server.hostname, server.port)
        claims = ClaimStore(master_config(self.config, status), self.config.locks, owner, self.config.namespace)
        try:
            claims.ensure_table()
            claims.release_leftovers()
            claims.purge()
            stale = self.store.clean_stale(f"{self.config.namespace}/", dt.timedelta(hours=self.config.stale_upload_hours))
            if stale:
                log.warning("event=stale_uploads_cleaned count=%d", stale)
            plans, failed = self._plan(conn, date, board=claims)
            jobs = [_Job(plan, unit) for plan in plans for unit in plan.units]
            if not jobs:
                if failed:
                    return RunReport(status=1, note=f"{len(failed)} tables could not be planned", failed=failed)
                return RunReport(note="nothing to dump: every wanted table is complete")
            units = UnitDumper(self.config, self.store, server, self.cancel)
            snapshot = take_snapshot(self.config.mysql, min(workers, len(jobs)), self.config.replication, replica=True)
            try:
                with DdlWatch(self.config.mysql, snapshot, self.config.ddl_wait_seconds), units.paced(
                    [job.unit for job in jobs], replica=True
                ):
                    return self._dump(jobs, units, snapshot, claims, date, failed)
            finally:
                snapshot.close()
        finally:
            claims.close()

    def _pending(self, conn: pymysql.Connection, date: dt.date) -> list[tuple[str, str]]:
        """Wanted tables whose dataset is not complete yet, priority tables first."""
        tables = [
            (db, table)
            for db, table in list_tables(conn, (self.config.locks.schema,))
            if self.config.tables.wanted(db, table)
        ]
        tables.sort(key=lambda t: self.config.tables.rank(*t))
        pending = []
        for db, table in tables:
            # Check the destination first: a fleet re-run finds most tables
            # complete, and planning costs several queries per table.
            if self.store.exists(DatasetKeys(self.config.namespace, db, table, date).success):
                log.info("event=skip_complete table=%s.%s date=%s", db, table, date)
                continue
            pending.append((db, table))
        return pending

    def _plan(self, conn: pymysql.Connection, date: dt.date, board: ClaimStore | None) -> tuple[list[TablePlan], list[str]]:
        """Plans of the pending tables, in priority order; and the tables that failed planning.

        A table that cannot be planned (dropped meanwhile, or altered so that
        the plan stored on the master no longer fits) fails alone.
        """
        pending = self._pending(conn, date)
        plans: dict[tuple[str, str], TablePlan] = {}
        failed: list[str] = []
        # First pass: skip tables another host is planning (hosts started
        # together then plan different tables at once); second pass: wait.
        for wait in (False, True):
            for db, table in [t for t in pending if t not in plans]:
                try:
                    plan = plan_table(
                        conn, self.config.namespace, db, table, date, self.config.chunk_mb, board, self.cancel, wait
                    )
                except (TrackerError, pymysql.MySQLError) as exc:
                    if isinstance(exc, LeaseLost) or self.cancel.is_set():
                        raise  # the master is gone, or we were stopped: nothing else can be done either
                    log.error("event=plan_failed table=%s.%s error=%s", db, table, describe_failure(exc))
                    failed.append(f"{db}.{table}: planning failed: {describe_failure(exc)}")
                    pending.remove((db, table))
                    continue
                if plan is not None:
                    plans[(db, table)] = plan
        ordered = [plans[t] for t in pending if t in plans]  # priority order, as listed
        return ordered, failed

    def _dump(
        self, jobs: list[_Job], units: UnitDumper, snapshot: Snapshot, claims: ClaimStore, date: dt.date, failed: list[str]
    ) -> RunReport:
        report = RunReport(failed=list(failed))

        def work(conn: pymysql.Connection, job: _Job) -> str:
            snapshot.ensure_fresh(conn)
            key = UnitKey(self.config.namespace, job.plan.info.db, job.plan.info.table, date, job.unit.index)
            unit_cancel = StopScope(self.cancel)
            # Pause before claiming: while this replica lags or is over its
            # rate, the unit stays free for a host that can take it now.
            units.pacer.before_unit(unit_cancel)
            lease = claims.try_claim(key, len(job.plan.units), unit_cancel.set)
            if lease is None:
                if units.progress is not None:
                    units.progress.drop(job.unit.size_hint)
                return "skipped"
            with snapshot.unit(conn, unit_cancel):
                try:
                    return self._dump_claimed(conn, job, lease, unit_cancel, units, snapshot, claims)
                except Cancelled:
                    if snapshot.is_stale(conn) and not self.cancel.is_set():
                        raise Requeue(f"{job.unit.label} interrupted to release a metadata lock") from None
                    raise

        outcomes = run_parallel(snapshot.connections, jobs, work, self.cancel, retries=self.config.retries)
        if self.cancel.is_set():
            raise Cancelled("stopped by request; no unfinished unit was committed")
        for outcome in outcomes:
            label = outcome.job.unit.label
            if outcome.error is not None:
                log.error("event=unit_failed unit=%s attempts=%d error=%s", label, outcome.attempts, describe_failure(outcome.error))
                report.failed.append(f"{label}: {describe_failure(outcome.error)}")
            elif outcome.result == "skipped":
                report.skipped.append(label)
            else:
                report.done.append(label)
                if outcome.result == "finished":
                    report.finished_tables.append(f"{outcome.job.plan.info.db}.{outcome.job.plan.info.table}")
        report.status = 1 if report.failed else 0
        report.note = (
            f"units dumped here={len(report.done)} skipped={len(report.skipped)} failed={len(report.failed)}"
            f" tables finished here={len(report.finished_tables)}"
        )
        log.info("event=run_done %s", report.note)
        return report

    def _dump_claimed(self, conn, job: _Job, lease: Lease, unit_cancel, units: UnitDumper, snapshot: Snapshot, claims: ClaimStore) -> str:
        plan = job.plan
        try:
            key = plan.keys.part(job.unit.index, self.config.compression)
            # An object without a done claim was left by a host that died
            # between committing and marking done; we hold the claim now.
            overwrite = self.store.exists(key)
            entry = units.dump(
                conn, plan, job.unit, snapshot.position_of(conn), cancel=unit_cancel, checks=(lease.check,), overwrite=overwrite
            )
        except BaseException:
            lease.release()
            raise
        lease.mark_done(entry)
        total, results = claims.done_results(plan.info.db, plan.info.table, plan.keys.date)
        if len(results) < total:
            return "dumped"
        units.finish_table(plan, results)
        return "finished"
