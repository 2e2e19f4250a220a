"""``tracker run`` for many small tables: a batch of one-unit tables per worker turn.

Each small table alone costs about a dozen round trips to the master
(join the dataset, claim, check, mark done, three finishing checks,
release) and a handful of fsyncs, and dumps in a millisecond, so on a host
with thousands of them those fixed costs are the run.  A batch claims up
to ``BATCH_UNITS`` one-unit tables in four statements and dumps them one
after the other on the worker's snapshot connection into a commit group
(:class:`tracker.store.sinks.CommitGroup`): each table's part, and after
it the table's ``schema.sql`` and ``manifest.json`` (its one unit makes
its manifest known), wait uncommitted until one statement has checked
every claim and dataset row of the group, and then commit together.  The
rest goes on in the background while the worker dumps its next batch:
the units are marked done in one statement, one statement checks every
dataset row before the ``_SUCCESS`` of each table, and one releases the
rows (see ``tracker/replicaset/batches.py``).  Units the batch could not
claim because a lease expired go back to the one-by-one path, which takes
leases over.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

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
from tracker.store.sinks import STALE_CANDIDATE, CommitGroup, Store

log = logging.getLogger(__name__)

BATCH_UNITS = 32
# Only units this small are batched: a batch's claims wait while its
# earlier units dump, and a large unit would keep them from other hosts.
BATCH_UNIT_BYTES = 8 * 1024 * 1024

# A group of parts commits after one check once it holds this much
# (compressed): what waits is on disk, or in memory for S3.
GROUP_BYTES = 16 * 1024 * 1024
COMMIT_THREADS = 8
FINISH_THREADS = 4  # batches finishing at once (each worker's latest)

SINGLE = "single"  # a batch result: hand the unit to the one-by-one path


@dataclass
class Job:
    plan: TablePlan
    unit: Unit


@dataclass
class Batch:
    jobs: list[Job]


@dataclass
class StagedUnit:
    """A unit whose part waits in a commit group; after it, its table's ``schema.sql`` and ``manifest.json``."""

    entry: Claimed
    outcome: dict[str, Any]  # its manifest entry
    keys: list[str] = field(default_factory=list)  # what of it waits: the part first
    document: dict[str, Any] | None = None  # the table's manifest, once staged

    def description(self, group: CommitGroup) -> object:
        """The table's manifest if its ``schema.sql`` and ``manifest.json`` were committed; else why not."""
        if self.document is None:
            return LeaseLost(f"schema.sql and manifest.json of {self.entry.key.db}.{self.entry.key.table} were not written")
        for key in self.keys[1:]:
            if key not in group.committed:
                return group.failed.get(key) or LeaseLost(f"{key} was not committed")
        return self.document


@dataclass
class Staged:
    """A commit group and the units waiting in it."""

    group: CommitGroup = None  # type: ignore[assignment]  # set by the ``with`` that opens it
    units: list[StagedUnit] = field(default_factory=list)
    owners: dict[str, StagedUnit] = field(default_factory=dict)  # every key waiting, to its unit

    def add(self, key: str, unit: StagedUnit) -> None:
        if not unit.keys:
            self.units.append(unit)
        unit.keys.append(key)
        self.owners[key] = unit


@dataclass
class BatchResult:
    """What a batch came to: the results known when its worker moved on, and its finishing."""

    results: list[tuple[Job, object]]
    finishing: Future | None = None  # the results of the units whose parts it committed, or not
    committed: list[Job] = field(default_factory=list)  # those units

    def resolve(self) -> list[tuple[Job, object]]:
        """Every unit's result, once the finishing ended (its error for each committed unit if it failed)."""
        if self.finishing is None:
            return self.results
        try:
            return self.results + self.finishing.result()
        except Exception as exc:
            return self.results + [(job, exc) for job in self.committed]


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
        # Commits and finishing writes of every worker's batches: an fsync
        # (file://) or a PUT (S3) costs milliseconds of waiting, and waits overlap.
        self.pool = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="commit")
        self.committers = ThreadPoolExecutor(FINISH_THREADS, thread_name_prefix="group-commit")
        self.finishers = ThreadPoolExecutor(FINISH_THREADS, thread_name_prefix="finish")
        self._finishing: dict[int, Future] = {}  # by worker connection: its batch still finishing

    def close(self) -> None:
        """Waits for every batch still finishing."""
        self.finishers.shutdown(wait=True)
        self.committers.shutdown(wait=True)
        self.pool.shutdown(wait=True)

    def dump(self, conn: pymysql.Connection, batch: Batch) -> "BatchResult":
        """Claim and dump the batch's units; their commit and finishing go on in the background.

        The commit groups' checks and commits, marking done, ``_SUCCESS``
        and the release wait on the master and on fsyncs, not on this
        worker's connection: they run while the worker dumps its next batch.
        A worker waits for its previous batch's finishing before handing
        over the next one, so it holds the leases of two batches at most.
        """
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
        groups: list[Staged] = []
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
            pending = list(claimed.claimed)
            while pending:
                results += self._dump_group(conn, pending, by_key, leases, in_flight, groups)
        except BaseException:
            try:  # also when stopped: what is committed is marked done, not dumped again
                done, _, _ = self._settle(leases, by_key, groups)
                self._mark_done(leases, done)
            finally:
                leases.close()
            raise
        previous = self._finishing.pop(id(conn), None)
        if previous is not None:
            wait([previous])
        finishing = self.finishers.submit(self._complete, leases, by_key, groups)
        self._finishing[id(conn)] = finishing
        return BatchResult(results, finishing, [by_key[unit.entry.key] for g in groups for unit in g.units])

    def _complete(self, leases: UnitBatch, by_key: dict[UnitKey, Job], groups: list["Staged"]) -> list[tuple[Job, object]]:
        """Once the groups committed: mark their units done, finish the tables, release the batch (a finisher thread)."""
        try:
            done, described, results = self._settle(leases, by_key, groups)
            marked = self._mark_done(leases, done)
            ready = [(by_key[k], done[k][0], described[k]) for k in done if k in marked and isinstance(described[k], dict)]
            results += self._finish(leases, ready)  # type: ignore[arg-type]
            results += [(by_key[k], described[k]) for k in done if k in marked and not isinstance(described[k], dict)]
            return results + [(by_key[k], "dumped") for k in done if k not in marked]
        finally:
            leases.close()

    def _settle(
        self, leases: UnitBatch, by_key: dict[UnitKey, Job], groups: list["Staged"]
    ) -> tuple[dict[UnitKey, tuple[Claimed, dict[str, Any]]], dict[UnitKey, object], list[tuple[Job, object]]]:
        """Wait for the groups' commits.

        Returns the units whose part was committed; for each of them its
        manifest if its ``schema.sql`` and ``manifest.json`` were committed
        too, else why not; and what became of the other units (released).
        """
        done: dict[UnitKey, tuple[Claimed, dict[str, Any]]] = {}
        described: dict[UnitKey, object] = {}
        results: list[tuple[Job, object]] = []
        for staged in groups:
            group = staged.group
            try:
                group.wait()
            except Exception as exc:  # the check failed (the master did not answer): nothing of it was committed
                group.failed.update({key: exc for key in staged.owners if key not in group.committed})
            for unit in staged.units:
                entry, part = unit.entry, unit.keys[0]
                if part in group.committed:
                    done[entry.key] = (entry, unit.outcome)
                    described[entry.key] = unit.description(group)
                    continue
                leases.release(entry)
                error = group.failed.get(part)
                retry = getattr(error, "retryable", False)
                results.append((by_key[entry.key], SINGLE if retry else error or LeaseLost("not committed")))
        return done, described, results

    def _mark_done(self, leases: UnitBatch, done: dict[UnitKey, tuple[Claimed, dict[str, Any]]]) -> set[UnitKey]:
        marked = leases.mark_done({key: outcome for key, (_, outcome) in done.items()})
        for _, outcome in done.values():
            self.on_dumped(outcome)
        return marked

    def _skipped(self, job: Job) -> str:
        if self.units.progress is not None:
            self.units.progress.drop(job.unit.size_hint)
        return "skipped"

    def _dump_group(
        self,
        conn: pymysql.Connection,
        pending: list[Claimed],
        by_key: dict[UnitKey, Job],
        leases: UnitBatch,
        in_flight: dict[UnitKey, StopScope],
        groups: list["Staged"],
    ) -> list[tuple[Job, object]]:
        """Dump units of ``pending`` into one commit group; what became of the units that did not get there.

        The group takes units until it holds ``GROUP_BYTES`` (what waits
        for the commit is on disk or, on S3, in memory).  Its one check of
        every claim and dataset row, and then its commits, run in the
        background (``committers``): the group is added to ``groups`` for
        :meth:`_settle` to wait for.
        """
        staged = Staged()
        results: list[tuple[Job, object]] = []

        def check(keys: Sequence[str]) -> dict[str, BaseException]:
            units = {id(staged.owners[key]): staged.owners[key] for key in keys}.values()
            lost = leases.check_parts([unit.entry for unit in units])
            names = {key: staged.owners[key].entry.name for key in keys}
            return {key: LeaseLost(lost[name]) for key, name in names.items() if name in lost}

        held = 0
        with CommitGroup(self.store, check, self.pool, background=self.committers) as staged.group:
            groups.append(staged)
            while pending and held < GROUP_BYTES:
                entry = pending.pop(0)
                job = by_key[entry.key]
                outcome = self._dump_one(conn, job, entry, leases, in_flight, staged.group)
                if not isinstance(outcome, dict):
                    results.append((job, outcome))
                    continue
                unit = StagedUnit(entry, outcome)
                staged.add(outcome["key"], unit)
                try:
                    held += outcome["bytes"] + self._stage_description(staged, job, unit, leases)
                except LeaseLost as exc:  # the group's check refuses its part too
                    results.append((job, exc))
        return results

    def _stage_description(self, staged: Staged, job: Job, unit: StagedUnit, leases: UnitBatch) -> int:
        """The table's ``schema.sql`` and ``manifest.json``, into the group after its part; their size.

        The table has this one unit, so its manifest is known now: committed
        with the part, after the same check, it saves the finishing a round
        trip and a round of fsyncs.  ``_SUCCESS`` still comes only once the
        unit is marked done and the dataset lease checked again.
        """
        document = self.units.manifest_of(job.plan, [unit.outcome])
        writes = self.units.final_writes(job.plan, document)[:2]
        for key, data in writes:
            with staged.group.upload(key, lambda: leases.raise_if_lost(unit.entry), overwrite=True) as upload:
                upload.write(data)
            staged.add(key, unit)
        unit.document = document
        return sum(len(data) for _, data in writes)

    def _dump_one(
        self,
        conn: pymysql.Connection,
        job: Job,
        entry: Claimed,
        leases: UnitBatch,
        in_flight: dict[UnitKey, StopScope],
        group: CommitGroup,
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
                    # Its part waits in the group, whose one check of all the leases comes before any commit.
                    return self.units.dump(
                        conn, job.plan, job.unit, self.snapshot.position_of(conn),
                        cancel=scope, checks=(lambda: leases.raise_if_lost(entry),), overwrite=overwrite,
                        uploads=group,
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

    def _finish(self, leases: UnitBatch, ready: list[tuple[Job, Claimed, dict[str, Any]]]) -> list[tuple[Job, object]]:
        """``_SUCCESS`` of every table of the batch whose part, ``schema.sql`` and ``manifest.json`` are in place."""
        if not ready:
            return []
        by_keys: dict[DatasetKeys, tuple[Job, Claimed]] = {job.plan.keys: (job, entry) for job, entry, _ in ready}

        def check(plans: list[TablePlan]) -> dict[DatasetKeys, str]:
            lost = leases.check_datasets([by_keys[p.keys][1] for p in plans])
            return {p.keys: lost[(p.info.db, p.info.table)] for p in plans if (p.info.db, p.info.table) in lost}

        failed = self.units.declare_complete([(job.plan, document) for job, _, document in ready], check, self.pool)
        leases.release_datasets(entry for job, entry, _ in ready if job.plan.keys not in failed)
        return [
            (job, TrackerError(failed[job.plan.keys]) if job.plan.keys in failed else "finished") for job, _, _ in ready
        ]
