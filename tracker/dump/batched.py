"""``tracker run`` for many small tables: a batch of one-unit tables per worker turn.

Each small table alone costs about a dozen round trips to the master
(join the dataset, claim, check, mark done, three finishing checks,
release) and dumps in a millisecond, so on a host with thousands of them
the master's latency is the run.  A batch claims up to ``BATCH_UNITS``
one-unit tables in four statements, dumps them one after the other on the
worker's snapshot connection (each part committed right after a check of
its claim and dataset row: one statement), marks them done in one
statement and finishes them together: one statement checking every dataset
row before every ``schema.sql``, one before every ``manifest.json``, one
before every ``_SUCCESS``, and one releasing the rows (see
``tracker/replicaset/batches.py``).  Units the batch could not claim
because a lease expired go back to the one-by-one path, which takes leases
over.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pymysql

from tracker.dump.plan import TablePlan, Unit
from tracker.dump.units import UnitDumper
from tracker.dump.workers import StopScope
from tracker.errors import Cancelled, LeaseLost, TrackerError
from tracker.replicaset.batches import Claimed, UnitBatch
from tracker.replicaset.claims import ClaimStore, UnitKey
from tracker.replicaset.datasets import DatasetLeases
from tracker.replicaset.snapshot import Snapshot
from tracker.store.layout import DatasetKeys
from tracker.store.sinks import STALE_CANDIDATE, Store

log = logging.getLogger(__name__)

BATCH_UNITS = 32
# Only units this small are batched: a batch's claims wait while its
# earlier units dump, and a large unit would keep them from other hosts.
BATCH_UNIT_BYTES = 8 * 1024 * 1024

SINGLE = "single"  # a batch result: hand the unit to the one-by-one path


@dataclass
class Job:
    plan: TablePlan
    unit: Unit


@dataclass
class Batch:
    jobs: list[Job]


def batchable(plan: TablePlan) -> bool:
    return len(plan.units) == 1 and plan.units[0].size_hint <= BATCH_UNIT_BYTES


def group(jobs: list[Job]) -> list[Job | Batch]:
    """Runs of consecutive small one-unit tables become batches; the order (priority) is kept.

    A run of one stays a single job: batching it would save nothing.
    """
    grouped: list[Job | Batch] = []
    pending: list[Job] = []

    def flush() -> None:
        if len(pending) > 1:
            grouped.append(Batch(list(pending)))
        else:
            grouped.extend(pending)
        pending.clear()

    for job in jobs:
        if batchable(job.plan):
            pending.append(job)
            if len(pending) == BATCH_UNITS:
                flush()
        else:
            flush()
            grouped.append(job)
    flush()
    return grouped


class BatchDumper:
    """Dumps one batch on one worker connection; returns each job's result ("dumped", "finished",
    "skipped", ``SINGLE``) or its error."""

    def __init__(
        self,
        units: UnitDumper,
        snapshot: Snapshot,
        claims: ClaimStore,
        datasets: DatasetLeases,
        store: Store,
        cancel: threading.Event,
        on_dumped: Callable[[dict[str, Any]], None] = lambda entry: None,
    ) -> None:
        self.units = units
        self.snapshot = snapshot
        self.claims = claims
        self.datasets = datasets
        self.store = store
        self.cancel = cancel
        self.on_dumped = on_dumped

    def dump(self, conn: pymysql.Connection, batch: Batch) -> list[tuple[Job, object]]:
        by_key = {UnitKey(self.claims.namespace, j.plan.info.db, j.plan.info.table, j.plan.keys.date, 0): j for j in batch.jobs}
        in_flight: dict[UnitKey, StopScope] = {}

        def on_lost(key: UnitKey) -> None:
            scope = in_flight.get(key)
            if scope is not None:
                scope.set()

        # Pause before claiming: while this replica lags or is over its rate,
        # the units stay free for a host that can take them now.
        self.units.pacer.before_unit(StopScope(self.cancel))
        leases = UnitBatch(self.claims, self.datasets, on_lost)
        results: list[tuple[Job, object]] = []
        done: dict[UnitKey, dict[str, Any]] = {}
        entries: dict[UnitKey, Claimed] = {}
        try:
            claimed = leases.claim(list(by_key))
            for key in claimed.taken:
                results.append((by_key[key], self._skipped(by_key[key])))
            for key, holder in claimed.busy.items():
                log.info(
                    "event=dataset_busy table=%s.%s holder=%s:%d pid=%d kind=%s until=%s",
                    key.db, key.table, holder.host, holder.port, holder.pid, holder.kind, holder.expires_at.isoformat(),
                )
                results.append((by_key[key], self._skipped(by_key[key])))
            results += [(by_key[key], SINGLE) for key in claimed.single]
            try:
                for entry in claimed.claimed:
                    job = by_key[entry.key]
                    outcome = self._dump_one(conn, job, entry, leases, in_flight)
                    if isinstance(outcome, dict):
                        done[entry.key], entries[entry.key] = outcome, entry
                    else:
                        results.append((job, outcome))
            finally:  # also when stopped: what is committed is marked done, not dumped again
                marked = leases.mark_done(done)
                for result in done.values():
                    self.on_dumped(result)
            results += self._finish(leases, [(by_key[k], entries[k], done[k]) for k in done if k in marked])
            results += [(by_key[k], "dumped") for k in done if k not in marked]
            return results
        finally:
            leases.close()

    def _skipped(self, job: Job) -> str:
        if self.units.progress is not None:
            self.units.progress.drop(job.unit.size_hint)
        return "skipped"

    def _dump_one(
        self, conn: pymysql.Connection, job: Job, entry: Claimed, leases: UnitBatch, in_flight: dict[UnitKey, StopScope]
    ) -> object:
        """The unit's manifest entry, or what became of it ("skipped", ``SINGLE``, an error)."""
        part = job.plan.keys.part(job.unit.index, self.units.config.compression)
        # One listing of the dataset answers three questions (a HEAD each on
        # S3 otherwise): finished already, our part there, anything stray.
        try:
            present = self.store.list(job.plan.keys.prefix + "/")
        except Exception as exc:  # this unit fails alone; retryable ones go to the one-by-one path
            leases.release(entry)
            return SINGLE if getattr(exc, "retryable", False) else exc
        if job.plan.keys.success in present:
            # Finished by a dump since this run planned it: its parts must not be overwritten.
            log.info("event=skip_complete table=%s.%s date=%s", job.plan.info.db, job.plan.info.table, job.plan.keys.date)
            leases.release(entry)
            return self._skipped(job)
        lost = leases.lost(entry)
        if lost is not None:  # taken over while this batch dumped its earlier units
            leases.release(entry)
            return LeaseLost(lost)
        # An object without a done claim was left by a host that died between
        # committing and marking done, or by a dump that failed midway.
        overwrite = part in present
        strays = [
            k for k in present
            if k != part and STALE_CANDIDATE.search(name := k.rsplit("/", 1)[-1]) and not name.startswith(".")
        ]
        if strays:
            try:
                leases.check(entry)  # the table's only unit is ours and so is its dataset: no live writer owns these
            except LeaseLost as exc:
                leases.release(entry)
                return exc
            for key in strays:
                log.warning("event=stray_part_deleted key=%s", key)
                self.store.delete(key)
        while True:
            self.snapshot.ensure_fresh(conn)
            scope = StopScope(self.cancel)
            in_flight[entry.key] = scope
            try:
                self.units.pacer.before_unit(scope)
                with self.snapshot.unit(conn, scope):
                    return self.units.dump(
                        conn, job.plan, job.unit, self.snapshot.position_of(conn),
                        cancel=scope, checks=(lambda: leases.check(entry),), overwrite=overwrite,
                    )
            except Cancelled as exc:
                lost = leases.lost(entry)
                if lost is not None:
                    leases.release(entry)
                    return LeaseLost(lost)
                if self.snapshot.is_stale(conn) and not self.cancel.is_set():
                    log.info("event=requeued reason=%s interrupted to release a metadata lock", job.unit.label)
                    continue  # the same unit again, from a fresh snapshot
                leases.release(entry)
                if self.cancel.is_set():
                    raise
                return exc
            except Exception as exc:  # this unit fails alone; retryable ones go to the one-by-one path
                leases.release(entry)
                return SINGLE if getattr(exc, "retryable", False) else exc
            finally:
                in_flight.pop(entry.key, None)

    def _finish(self, leases: UnitBatch, done: list[tuple[Job, Claimed, dict[str, Any]]]) -> list[tuple[Job, object]]:
        """schema.sql, manifest.json and _SUCCESS of every table of the batch, each step after one check of all."""
        if not done:
            return []
        by_keys: dict[DatasetKeys, tuple[Job, Claimed]] = {job.plan.keys: (job, entry) for job, entry, _ in done}

        def check(plans: list[TablePlan]) -> dict[DatasetKeys, str]:
            lost = leases.check_datasets([by_keys[p.keys][1] for p in plans])
            return {p.keys: lost[(p.info.db, p.info.table)] for p in plans if (p.info.db, p.info.table) in lost}

        failed = self.units.finish_tables([(job.plan, [result]) for job, _, result in done], check)
        leases.release_datasets(entry for job, entry, _ in done if job.plan.keys not in failed)
        return [
            (job, TrackerError(failed[job.plan.keys]) if job.plan.keys in failed else "finished") for job, _, _ in done
        ]
