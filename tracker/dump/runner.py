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
import gc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pymysql

from tracker.replicaset.plans import PlanBatch
from tracker.replicaset.claims import ClaimStore, Lease, Owner, UnitKey
from tracker.replicaset.datasets import DatasetLease, DatasetLeases
from tracker.dump.batched import SINGLE, Batch, BatchDumper, Job, group
from tracker.dump.columns import list_objects
from tracker.config import Config
from tracker.replicaset.ddl import DdlWatch
from tracker.dump.plan import TablePlan, plan_table, plan_tables
from tracker.dump.units import UnitDumper, describe_failure, open_local
from tracker.errors import ConfigError, LeaseLost, TrackerError
from tracker.replicaset.kill import kill as kill_orphans_or_all
from tracker.store.layout import DatasetKeys
from tracker.replicaset.replica import master_config, read_status, wait_until_caught_up
from tracker.store.sinks import STALE_CANDIDATE, Store, open_store
from tracker.replicaset.snapshot import Snapshot, take_snapshot
from tracker.errors import Cancelled
from tracker.dump.workers import Outcome, Requeue, StopScope, run_parallel
from tracker.dump.pacing import lag_now

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
    rows: int = 0  # of the units dumped here
    bytes: int = 0  # stored, of the units dumped here
    replica_lag_seconds: float | None = None  # when the run started; None: unknown
    already_running: bool = False  # another run of this server holds the lock: it reports for both


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


def kill_orphans(config: Config) -> None:
    report = kill_orphans_or_all(config, orphans_only=True)
    if report.queries:
        log.warning("event=orphans_killed count=%d", len(report.queries))


# Where a killed run can have left temporary files on a file tree: the
# datasets of the run's date and of the week before it, plus the days a
# file must age before it counts as abandoned.  Searching every date would
# read the whole history on every run.
STALE_SEARCH_DAYS = 7


def stale_search_dates(date: dt.date, stale_hours: int) -> list[str]:
    days = STALE_SEARCH_DAYS + -(-stale_hours // 24)
    return [(date - dt.timedelta(days=back)).isoformat() for back in range(days + 1)]


class Runner:
    def __init__(self, config: Config, cancel: threading.Event, store: Store | None = None) -> None:
        self.config = config
        self.cancel = cancel
        self.store = store or open_store(config.destination, config.s3)
        self._moved: list[tuple[int, int]] = []  # (rows, bytes) of each unit dumped here

    def run(self, date: dt.date, *, workers: int | None = None, dry_run: bool = False) -> RunReport:
        if self.config.skip_file.exists():
            log.info("event=skipped reason=skip_file path=%s", self.config.skip_file)
            return RunReport(note=f"skip file {self.config.skip_file} exists; nothing done")
        conn, server = open_local(self.config)
        try:
            with one_run_per_server(self.config.run_lock_dir, server.port, self.config.path) as got_it:
                if not got_it:
                    log.info("event=skipped reason=already_running port=%d", server.port)
                    return RunReport(note="another tracker run for this server is running; nothing done", already_running=True)
                status = read_status(conn)
                if status is None:
                    log.info("event=skipped reason=not_a_replica server=%s", server.label)
                    return RunReport(note=f"{server.label} is not a replica; nothing to do")
                lag = lag_now(conn, self.config.replication.heartbeat_table)
                wait_until_caught_up(conn, date, self.config.replication, self.cancel)
                report = self._run(conn, server, status, date, workers or self.config.workers, dry_run)
                report.replica_lag_seconds = lag
                return report
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
        datasets = DatasetLeases(claims)
        try:
            claims.ensure_table()
            datasets.ensure_table()
            claims.release_leftovers()
            claims.purge()
            datasets.purge()
            stale = self.store.clean_stale(
                f"{self.config.namespace}/",
                dt.timedelta(hours=self.config.stale_upload_hours),
                dates=stale_search_dates(date, self.config.stale_upload_hours),
            )
            if stale:
                log.warning("event=stale_uploads_cleaned count=%d", stale)
            plans, failed = self._plan(conn, date, board=claims)
            jobs = [Job(plan, unit) for plan in plans for unit in plan.units]
            if not jobs:
                if failed:
                    return RunReport(status=1, note=f"{len(failed)} tables could not be planned", failed=failed)
                return RunReport(note="nothing to dump: every wanted table is complete")
            units = UnitDumper(self.config, self.store, server, self.cancel)
            snapshot = take_snapshot(self.config.mysql, min(workers, len(jobs)), self.config.replication, replica=True)
            # What lives through the dump (config, plans, connections) is left
            # out of the collections meanwhile: with thousands of tables each
            # full collection walked them all, again and again, for no garbage.
            gc.freeze()
            try:
                with DdlWatch(self.config.mysql, snapshot, self.config.ddl_wait_seconds), units.paced(
                    [job.unit for job in jobs], replica=True
                ):
                    return self._dump(jobs, units, snapshot, claims, datasets, date, failed)
            finally:
                gc.unfreeze()  # collected again as usual (a caller may go on running)
                snapshot.close()
        finally:
            claims.close()

    def _pending(self, conn: pymysql.Connection, date: dt.date) -> list[tuple[str, str]]:
        """Wanted tables whose dataset is not complete yet, priority tables first."""
        found, sequences = list_objects(conn, (self.config.locks.schema,))
        tables = [(db, table) for db, table in found if self.config.tables.wanted(db, table)]
        tables.sort(key=lambda t: self.config.tables.rank(*t))
        for db, table in sequences:
            if self.config.tables.wanted(db, table):
                log.info("event=skip_sequence table=%s.%s", db, table)
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
        # Tables that need no key walk: planned, and their plans stored on
        # the master, a few statements for all of them.
        batch = plan_tables(
            conn,
            self.config.namespace,
            pending,
            date,
            self.config.chunk_mb,
            PlanBatch(board) if board is not None else None,
            mysql=self.config.mysql,
        )
        plans: dict[tuple[str, str], TablePlan] = dict(batch.plans)
        failed: list[str] = []
        for (db, table), exc in batch.failed.items():
            log.warning("event=plan_failed table=%s.%s error=%s", db, table, describe_failure(exc))
            failed.append(f"{db}.{table}: planning failed: {describe_failure(exc)}")
            pending.remove((db, table))
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
                    log.warning("event=plan_failed table=%s.%s error=%s", db, table, describe_failure(exc))
                    failed.append(f"{db}.{table}: planning failed: {describe_failure(exc)}")
                    pending.remove((db, table))
                    continue
                if plan is not None:
                    plans[(db, table)] = plan
        ordered = [plans[t] for t in pending if t in plans]  # priority order, as listed
        return ordered, failed

    def _dump(
        self,
        jobs: list[Job],
        units: UnitDumper,
        snapshot: Snapshot,
        claims: ClaimStore,
        datasets: DatasetLeases,
        date: dt.date,
        failed: list[str],
    ) -> RunReport:
        report = RunReport(failed=list(failed))
        busy: set[tuple[str, str]] = set()  # tables a dump holds: left to it for this run

        def work(conn: pymysql.Connection, job: Job) -> str:
            snapshot.ensure_fresh(conn)
            db, table = job.plan.info.db, job.plan.info.table
            key = UnitKey(self.config.namespace, db, table, date, job.unit.index)
            unit_cancel = StopScope(self.cancel)
            # Pause before claiming: while this replica lags or is over its
            # rate, the unit stays free for a host that can take it now.
            units.pacer.before_unit(unit_cancel)
            dataset = None if (db, table) in busy else self._join_dataset(datasets, job.plan, busy)
            lease = None
            if dataset is not None:
                lease = claims.try_claim(key, len(job.plan.units), unit_cancel.set, companions=(dataset.extend,))
            if lease is None:
                if units.progress is not None:
                    units.progress.drop(job.unit.size_hint)
                return "skipped"
            with snapshot.unit(conn, unit_cancel):
                try:
                    return self._dump_claimed(conn, job, lease, dataset, unit_cancel, units, snapshot, claims)
                except Cancelled:
                    if snapshot.is_stale(conn) and not self.cancel.is_set():
                        raise Requeue(f"{job.unit.label} interrupted to release a metadata lock") from None
                    raise

        batches = BatchDumper(
            units, snapshot, claims, datasets, self.store, self.cancel,
            on_dumped=lambda entry: self._moved.append((entry["rows"], entry["bytes"])),
        )

        def work_or_batch(conn: pymysql.Connection, item: Job | Batch) -> object:
            return batches.dump(conn, item) if isinstance(item, Batch) else work(conn, item)

        try:
            grouped = run_parallel(snapshot.connections, group(jobs), work_or_batch, self.cancel, retries=self.config.retries)
        finally:
            batches.close()
        outcomes = self._flatten(grouped)
        # Units a batch left alone because a lease expired: the one-by-one path takes them over.
        single = [o.job for o in outcomes if o.result == SINGLE]
        if single and not self.cancel.is_set():
            outcomes = [o for o in outcomes if o.result != SINGLE]
            outcomes += run_parallel(snapshot.connections, single, work, self.cancel, retries=self.config.retries)
        if self.cancel.is_set():
            raise Cancelled("stopped by request; no unfinished unit was committed")
        for outcome in outcomes:
            label = outcome.job.unit.label
            if outcome.error is not None:
                log.warning("event=unit_failed unit=%s attempts=%d error=%s", label, outcome.attempts, describe_failure(outcome.error))
                report.failed.append(f"{label}: {describe_failure(outcome.error)}")
            elif outcome.result == "skipped":
                report.skipped.append(label)
            else:
                report.done.append(label)
                if outcome.result == "finished":
                    report.finished_tables.append(f"{outcome.job.plan.info.db}.{outcome.job.plan.info.table}")
        report.status = 1 if report.failed else 0
        report.rows, report.bytes = sum(r for r, _ in self._moved), sum(b for _, b in self._moved)
        report.note = (
            f"units dumped here={len(report.done)} skipped={len(report.skipped)} failed={len(report.failed)}"
            f" tables finished here={len(report.finished_tables)}"
        )
        log.info("event=run_done %s master_queries=%d", report.note, claims.round_trips)
        return report

    @staticmethod
    def _flatten(outcomes: list[Outcome]) -> list[Outcome]:
        """One outcome per unit: a batch's own list, or its error for each of its units."""
        flat: list[Outcome] = []
        for outcome in outcomes:
            if not isinstance(outcome.job, Batch):
                flat.append(outcome)
            elif outcome.error is not None:
                flat += [Outcome(job, None, outcome.error, outcome.attempts) for job in outcome.job.jobs]
            else:
                for job, result in outcome.result.resolve():  # type: ignore[attr-defined]
                    if isinstance(result, BaseException):
                        flat.append(Outcome(job, None, result, outcome.attempts))
                    else:
                        flat.append(Outcome(job, result, None, outcome.attempts))
        return flat

    def _join_dataset(self, datasets: DatasetLeases, plan: TablePlan, busy: set[tuple[str, str]]) -> DatasetLease | None:
        """The run's shared dataset lease, right before claiming a unit; None: leave the table alone.

        A live dump lease means a ``tracker dump`` writes the table: not a
        failure, the table is the dump's.  A dataset found complete after
        joining was finished by a dump since this run planned it: its parts
        must not be overwritten.
        """
        db, table = plan.info.db, plan.info.table
        joined = datasets.join_run(db, table, plan.keys.date)
        if not isinstance(joined, DatasetLease):
            log.info(
                "event=dataset_busy table=%s.%s holder=%s:%d pid=%d kind=%s until=%s",
                db, table, joined.host, joined.port, joined.pid, joined.kind, joined.expires_at.isoformat(),
            )
            busy.add((db, table))
            return None
        if self.store.exists(plan.keys.success):
            log.info("event=skip_complete table=%s.%s date=%s", db, table, plan.keys.date)
            busy.add((db, table))
            if joined.created:
                joined.release()
            return None
        return joined

    def _dump_claimed(
        self, conn, job: Job, lease: Lease, dataset: DatasetLease, unit_cancel, units: UnitDumper, snapshot: Snapshot, claims: ClaimStore
    ) -> str:
        plan = job.plan
        try:
            key = plan.keys.part(job.unit.index, self.config.compression)
            # An object without a done claim was left by a host that died
            # between committing and marking done (we hold the claim now), or
            # by a dump that failed (it deleted the claims with the dataset).
            overwrite = self.store.exists(key)
            entry = units.dump(
                conn,
                plan,
                job.unit,
                snapshot.position_of(conn),
                cancel=unit_cancel,
                checks=(lease.check, dataset.check),
                overwrite=overwrite,
            )
        except BaseException as exc:
            lease.release()
            if lease.lost is not None and not isinstance(exc, LeaseLost) and not self.cancel.is_set():
                # The lease's loss stopped the unit (its query was killed):
                # what the unit died of is only the symptom; say the cause.
                raise LeaseLost(f"lease lost, unit stopped: {lease.lost}") from exc
            raise
        lease.mark_done(entry)
        self._moved.append((entry["rows"], entry["bytes"]))
        total, results = claims.done_results(plan.info.db, plan.info.table, plan.keys.date)
        if len(results) < total:
            return "dumped"
        if not dataset.take_for_finishing():
            log.info("event=finish_left_to_other table=%s.%s date=%s", plan.info.db, plan.info.table, plan.keys.date)
            return "dumped"
        self._remove_strays(plan, results, dataset)
        units.finish_table(plan, results, check=dataset.check)
        dataset.release()  # the table is finished: the next dump --force needs no wait
        return "finished"

    def _remove_strays(self, plan: TablePlan, results: list[dict], dataset: DatasetLease) -> None:
        """Delete part objects the manifest will not list: left by a dump that failed midway.

        Such a dump planned the table alone, so its units (and part names)
        may differ from the run's.  Every unit is done and the dataset
        lease is ours, so no live writer owns anything deleted here.
        """
        listed = {r["key"] for r in results}
        dataset.check()
        for key in self.store.list(plan.keys.prefix + "/"):
            name = key.rsplit("/", 1)[-1]
            if key not in listed and STALE_CANDIDATE.search(name) and not name.startswith("."):
                log.warning("event=stray_part_deleted key=%s", key)
                self.store.delete(key)
