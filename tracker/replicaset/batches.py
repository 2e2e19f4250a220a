"""Small tables in batches: plans stored, units claimed and leases checked many at once.

A fleet host has thousands of tables of a few rows, and one round trip to
the master per step of each (plan, join the dataset, claim, check, mark
done, three checks, release) cost more than dumping them.  Nothing here
weakens a rule of ``claims.py`` or ``datasets.py``; each statement covers
many rows instead of one:

* plans that need no key walk are offered and read back many at once
  (``tracker/replicaset/plans.py``): every host dumps the plan the master holds;
* a batch of one-unit tables is claimed in four statements: the run's
  dataset rows are inserted (``INSERT IGNORE``), every live ``run`` row of
  the batch is joined (one ``UPDATE``), a claim is inserted for each table
  whose dataset is a live ``run`` row (``INSERT IGNORE ... SELECT``: the
  primary key keeps each claim atomic, and no claim is made on a dataset a
  dump holds), and one ``SELECT`` reads back which claims carry this
  batch's token.  A claim whose lease expired, or a dataset to take over,
  is left to the one-by-one path of ``claims.py``/``datasets.py``;
* right before a group of parts (each with its table's ``schema.sql`` and
  ``manifest.json``) is committed, one ``UPDATE`` extends every claim of
  the group and its dataset row together, and must match exactly those
  rows; a unit whose rows did not match is not committed;
* the committed units are marked done in one ``UPDATE``, and before every
  ``_SUCCESS`` of the batch one ``UPDATE`` checks every dataset row of the
  batch; a table whose row did not match fails alone and nothing more of
  it is written.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from tracker.errors import LeaseLost
from tracker.replicaset.claims import ClaimStore, UnitKey
from tracker.replicaset.datasets import DatasetLeases, Holder

log = logging.getLogger(__name__)

Name = tuple[str, str]


def _rows(width: int, count: int) -> str:
    """``(%s, %s), (%s, %s)``: ``count`` row constructors of ``width`` placeholders."""
    row = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([row] * count)


@dataclass
class Claimed:
    """A unit this batch claimed, and the dataset row (shared by the run's hosts) it writes under."""

    key: UnitKey
    dataset_token: str
    created: bool  # this batch inserted the dataset row (not merely joined it)

    @property
    def name(self) -> Name:
        return (self.key.db, self.key.table)

    @property
    def dataset_args(self) -> tuple:
        return (self.key.namespace, self.key.db, self.key.table, self.key.date)


@dataclass
class ClaimResult:
    """How each unit of a batch came out of claiming."""

    claimed: list[Claimed] = field(default_factory=list)
    taken: list[UnitKey] = field(default_factory=list)  # held by another host, or done
    busy: dict[UnitKey, Holder] = field(default_factory=dict)  # a dump writes the table
    single: list[UnitKey] = field(default_factory=list)  # an expired lease: the one-by-one path takes it over


class UnitBatch:
    """The claims of one batch of one-unit tables, kept alive together until done or released.

    ``on_lost(key)`` is called (from the keep-alive thread) when a unit's
    claim or dataset row stopped being ours; ``check`` raises ``LeaseLost``
    for it from then on.
    """

    def __init__(self, store: ClaimStore, datasets: DatasetLeases, on_lost: Callable[[UnitKey], None]) -> None:
        self.store = store
        self.datasets = datasets
        self.token = secrets.token_hex(16)
        self._on_lost = on_lost
        self._active: dict[UnitKey, Claimed] = {}  # claimed, not yet done or released
        self._datasets: dict[Name, Claimed] = {}  # dataset rows held, not yet released
        self._lost: dict[Name, str] = {}
        self._lock = threading.RLock()  # held by the keep-alive through one whole extension
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _expiry(self) -> str:
        return f"NOW(6) + INTERVAL {self.store.locks.lease_seconds} SECOND"

    # -- claiming --------------------------------------------------------------

    def claim(self, keys: Sequence[UnitKey]) -> ClaimResult:
        """Claim every unit of ``keys`` (each the one unit of its table) that is free, in four statements."""
        if any(k.unit != 0 for k in keys):
            raise ValueError("a batch claims the single unit of one-unit tables")
        owner, datasets, claims = self.store.owner, self.datasets.table, self.store.table
        table_keys = [a for k in keys for a in (k.namespace, k.db, k.table, k.date)]
        in_keys = f"(namespace, db, tbl, ds) IN ({_rows(4, len(keys))})"
        values = ", ".join([f"(%s, %s, %s, %s, 'run', %s, %s, %s, %s, NOW(6), {self._expiry})"] * len(keys))
        args: list[Any] = []
        for k in keys:
            args += [k.namespace, k.db, k.table, k.date, self.token, owner.host, owner.port, owner.pid]
        self.store.execute(
            f"INSERT IGNORE INTO {datasets} (namespace, db, tbl, ds, kind, token, host, port, pid, since, expires_at)"
            f" VALUES {values}",
            tuple(args),
        )
        # Join every live row of the run (ours, just inserted, or another host's).
        self.store.execute(
            f"UPDATE {datasets} SET expires_at = {self._expiry} WHERE {in_keys} AND kind = 'run' AND expires_at >= NOW(6)",
            tuple(table_keys),
        )
        self.store.execute(
            f"INSERT IGNORE INTO {claims} (namespace, db, tbl, ds, unit, units, state, host, port, pid, token,"
            f" claimed_at, expires_at) SELECT namespace, db, tbl, ds, 0, 1, 'active', %s, %s, %s, %s, NOW(6), {self._expiry}"
            f" FROM {datasets} WHERE {in_keys} AND kind = 'run' AND expires_at >= NOW(6)",
            (owner.host, owner.port, owner.pid, self.token, *table_keys),
        )
        _, rows = self.store.execute(
            f"SELECT 'c', db, tbl, token, state, expires_at < NOW(6), NULL, NULL, NULL, NULL FROM {claims}"
            f" WHERE {in_keys} AND unit = 0"
            f" UNION ALL SELECT 'd', db, tbl, token, kind, expires_at < NOW(6), host, port, pid, expires_at FROM {datasets}"
            f" WHERE {in_keys}",
            (*table_keys, *table_keys),
        )
        return self._classify(keys, rows)

    def _classify(self, keys: Sequence[UnitKey], rows: list[tuple]) -> ClaimResult:
        claim_rows = {(str(r[1]), str(r[2])): r for r in rows if r[0] == "c"}
        dataset_rows = {(str(r[1]), str(r[2])): r for r in rows if r[0] == "d"}
        result = ClaimResult()
        spare: list[UnitKey] = []  # tables another host holds or finished, whose dataset row this batch made
        for key in keys:
            name = (key.db, key.table)
            claim, dataset = claim_rows.get(name), dataset_rows.get(name)
            ours = claim is not None and claim[3] == self.token
            if ours and dataset is not None:
                entry = Claimed(key, str(dataset[3]), created=dataset[3] == self.token)
                result.claimed.append(entry)
                with self._lock:
                    self._active[key] = entry
                    self._datasets[name] = entry
                continue
            if ours:  # the dataset row went away meanwhile: give the claim back, try alone
                self.release(Claimed(key, "", created=False))
                result.single.append(key)
            elif claim is not None and (claim[4] == "done" or not claim[5]):
                # Done, or held by another host -- which may have joined the dataset row
                # this batch just made (run rows are shared), and checks it before every
                # write: the row stays; the host that finishes the table deletes it.
                result.taken.append(key)
                if dataset is not None and dataset[3] == self.token:
                    spare.append(key)
            elif claim is None and dataset is not None and dataset[4] == "dump" and not dataset[5]:
                _, _, _, _, kind, _, host, port, pid, until = dataset
                result.busy[key] = Holder(str(kind), str(host), int(port), int(pid), until)
            else:  # an expired claim or dataset row, or a race: taken over one by one
                result.single.append(key)
        if spare:
            self._delete_unjoined_datasets(spare)
        log.info(
            "event=batch_claimed claimed=%d taken=%d busy=%d single=%d",
            len(result.claimed), len(result.taken), len(result.busy), len(result.single),
        )
        if result.claimed:
            self._thread = threading.Thread(target=self._keep_alive, name="batch-lease", daemon=True)
            self._thread.start()
        return result

    # -- while dumping -----------------------------------------------------------

    def check(self, entry: Claimed) -> None:
        """Right before committing ``entry``'s part: its claim and its dataset row, ours for one more lease."""
        lost = self._lost.get(entry.name)
        if lost is not None:
            raise LeaseLost(lost)
        k = entry.key
        matched, _ = self.store.execute(
            f"UPDATE {self.store.table} c JOIN {self.datasets.table} d"
            " ON d.namespace = c.namespace AND d.db = c.db AND d.tbl = c.tbl AND d.ds = c.ds"
            f" SET c.expires_at = {self._expiry}, d.expires_at = {self._expiry}"
            " WHERE c.namespace = %s AND c.db = %s AND c.tbl = %s AND c.ds = %s AND c.unit = %s"
            " AND c.token = %s AND c.state = 'active' AND c.expires_at >= NOW(6)"
            " AND d.token = %s AND d.expires_at >= NOW(6)",
            (k.namespace, k.db, k.table, k.date, k.unit, self.token, entry.dataset_token),
        )
        if matched != 2:
            self._lose(entry.name, f"the claim on {k.db}.{k.table}/part-{k.unit:05d} or its dataset lease expired or was taken over")
            raise LeaseLost(self._lost[entry.name])

    def check_parts(self, entries: Sequence[Claimed]) -> dict[Name, str]:
        """Right before committing the parts of ``entries`` together: :meth:`check` for all, in one statement.

        Each claim and its dataset row are extended together (a joined
        ``UPDATE`` changes both rows of a table or neither), so all are ours
        exactly when twice as many rows matched as tables were checked; if
        not, one ``SELECT`` tells which.  Returns the tables lost, and why.
        """
        alive = [e for e in entries if e.name not in self._lost]
        if alive:
            claims = [a for e in alive for a in (*e.dataset_args, e.key.unit)]
            rows = [a for e in alive for a in (*e.dataset_args, e.dataset_token)]
            where = (
                f" WHERE (c.namespace, c.db, c.tbl, c.ds, c.unit) IN ({_rows(5, len(alive))})"
                " AND c.token = %s AND c.state = 'active' AND c.expires_at >= NOW(6)"
                f" AND (d.namespace, d.db, d.tbl, d.ds, d.token) IN ({_rows(5, len(alive))}) AND d.expires_at >= NOW(6)"
            )
            joined = (
                f"{self.store.table} c JOIN {self.datasets.table} d"
                " ON d.namespace = c.namespace AND d.db = c.db AND d.tbl = c.tbl AND d.ds = c.ds"
            )
            args = (*claims, self.token, *rows)
            matched, _ = self.store.execute(
                f"UPDATE {joined} SET c.expires_at = {self._expiry}, d.expires_at = {self._expiry}{where}", args
            )
            if matched != 2 * len(alive):
                _, found = self.store.execute(f"SELECT c.db, c.tbl FROM {joined}{where}", args)
                held = {(str(db), str(table)) for db, table in found}
                for e in alive:
                    if e.name not in held:
                        k = e.key
                        self._lose(e.name, f"the claim on {k.db}.{k.table}/part-{k.unit:05d} or its dataset lease expired or was taken over")
        return {e.name: self._lost[e.name] for e in entries if e.name in self._lost}

    def raise_if_lost(self, entry: Claimed) -> None:
        """What a unit can know without the master: ``LeaseLost`` once the keep-alive lost its claim."""
        lost = self._lost.get(entry.name)
        if lost is not None:
            raise LeaseLost(lost)

    def lost(self, entry: Claimed) -> str | None:
        """Why ``entry``'s claim or dataset row stopped being ours, once it did."""
        return self._lost.get(entry.name)

    def release(self, entry: Claimed) -> None:
        """Give a unit back after a failure (and the dataset row, if this batch made it)."""
        with self._lock:
            self._active.pop(entry.key, None)
        k = entry.key
        try:
            self.store.execute(
                f"DELETE FROM {self.store.table} WHERE namespace = %s AND db = %s AND tbl = %s AND ds = %s AND unit = %s"
                " AND token = %s AND state = 'active'",
                (k.namespace, k.db, k.table, k.date, k.unit, self.token),
            )
            if entry.created:
                self.release_datasets([entry])
        except LeaseLost as exc:  # it expires by itself
            log.warning("event=release_failed unit=%s.%s error=%s", k.db, k.table, exc)

    # -- finishing ---------------------------------------------------------------

    def mark_done(self, results: dict[UnitKey, dict[str, Any]]) -> set[UnitKey]:
        """Mark units done with their manifest entries in one statement; the ones that were still ours."""
        if not results:
            return set()
        with self._lock:
            for key in results:
                self._active.pop(key, None)
        keys = list(results)
        cases = " ".join(["WHEN db = %s AND tbl = %s THEN %s"] * len(keys))
        case_args = [a for k in keys for a in (k.db, k.table, json.dumps(results[k]))]
        unit_keys = [a for k in keys for a in (k.namespace, k.db, k.table, k.date, k.unit)]
        matched, _ = self.store.execute(
            f"UPDATE {self.store.table} SET state = 'done', done_at = NOW(6), result = CASE {cases} END"
            f" WHERE (namespace, db, tbl, ds, unit) IN ({_rows(5, len(keys))}) AND token = %s AND state = 'active'",
            (*case_args, *unit_keys, self.token),
        )
        if matched == len(keys):
            return set(keys)
        _, rows = self.store.execute(
            f"SELECT db, tbl FROM {self.store.table} WHERE (namespace, db, tbl, ds, unit) IN ({_rows(5, len(keys))})"
            " AND token = %s AND state = 'done'",
            (*unit_keys, self.token),
        )
        mine = {(str(db), str(table)) for db, table in rows}
        for key in keys:
            if (key.db, key.table) not in mine:
                # The object is committed and complete; only the bookkeeping raced.
                log.warning("event=mark_done_raced unit=%s.%s/part-%05d", key.db, key.table, key.unit)
        return {k for k in keys if (k.db, k.table) in mine}

    def check_datasets(self, entries: Sequence[Claimed]) -> dict[Name, str]:
        """Right before a finishing write: every dataset row of ``entries`` still ours; the lost ones, why."""
        alive = [e for e in entries if e.name not in self._lost]
        if alive:
            args = tuple(a for e in alive for a in (*e.dataset_args, e.dataset_token))
            in_rows = f"(namespace, db, tbl, ds, token) IN ({_rows(5, len(alive))})"
            matched, _ = self.store.execute(
                f"UPDATE {self.datasets.table} SET expires_at = {self._expiry} WHERE {in_rows} AND expires_at >= NOW(6)",
                args,
            )
            if matched != len(alive):
                _, rows = self.store.execute(
                    f"SELECT db, tbl FROM {self.datasets.table} WHERE {in_rows} AND expires_at >= NOW(6)", args
                )
                held = {(str(db), str(table)) for db, table in rows}
                for entry in alive:
                    if entry.name not in held:
                        self._lose(entry.name, f"the dataset lease of {entry.key.db}.{entry.key.table} expired or was taken over; nothing more is committed")
        return {e.name: self._lost[e.name] for e in entries if e.name in self._lost}

    def release_datasets(self, entries: Iterable[Claimed]) -> None:
        """Delete the dataset rows of finished tables (the next ``dump --force`` needs no wait)."""
        entries = list(entries)
        with self._lock:
            for entry in entries:
                self._datasets.pop(entry.name, None)
        if entries:
            self._delete_datasets([(*e.dataset_args, e.dataset_token) for e in entries])

    def _delete_unjoined_datasets(self, keys: Sequence[UnitKey]) -> None:
        """Delete the dataset rows this batch made for tables it did not claim, unless a claim may use them.

        Run rows are shared: a host that claimed after this batch made the row
        may have joined it and checks it before every write, so only a row no
        claim was made under (every claim of the table older than the row:
        the table was finished before) is deleted.  Others expire, or the host
        that finishes the table deletes them.
        """
        d, c = self.datasets.table, self.store.table
        try:
            self.store.execute(
                f"DELETE FROM {d} WHERE (namespace, db, tbl, ds, token) IN ({_rows(5, len(keys))})"
                f" AND NOT EXISTS (SELECT 1 FROM {c} WHERE {c}.namespace = {d}.namespace AND {c}.db = {d}.db"
                f" AND {c}.tbl = {d}.tbl AND {c}.ds = {d}.ds AND {c}.claimed_at >= {d}.since)",
                tuple(a for k in keys for a in (k.namespace, k.db, k.table, k.date, self.token)),
            )
        except LeaseLost as exc:  # they expire by themselves
            log.warning("event=dataset_release_failed count=%d error=%s", len(keys), exc)

    def _delete_datasets(self, rows: list[tuple]) -> None:
        try:
            self.store.execute(
                f"DELETE FROM {self.datasets.table} WHERE (namespace, db, tbl, ds, token) IN ({_rows(5, len(rows))})",
                tuple(a for row in rows for a in row),
            )
        except LeaseLost as exc:  # they expire by themselves
            log.warning("event=dataset_release_failed count=%d error=%s", len(rows), exc)

    def close(self) -> None:
        """Stop extending; give back every claim not done (a failure or a stop left them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            left = list(self._active.values())
        for entry in left:
            self.release(entry)

    # -- keeping alive -----------------------------------------------------------

    def _keep_alive(self) -> None:
        while not self._stop.wait(max(self.store.locks.lease_seconds / 3, 0.5)):
            try:
                self._extend()
            except LeaseLost as exc:  # the master did not answer: every unit of the batch stops
                with self._lock:
                    names = {e.name for e in (*self._active.values(), *self._datasets.values())}
                for name in names:
                    self._lose(name, str(exc))
                return

    def _extend(self) -> None:
        """One extension of every active claim and held dataset row; the ones not matched are lost."""
        with self._lock:  # a unit marked done or released meanwhile waits for this extension
            self._extend_locked()

    def _extend_locked(self) -> None:
        active = list(self._active.values())
        held = list(self._datasets.values())
        if active:
            args = tuple(a for e in active for a in (*e.dataset_args, e.key.unit))
            in_rows = f"(namespace, db, tbl, ds, unit) IN ({_rows(5, len(active))})"
            matched, _ = self.store.execute(
                f"UPDATE {self.store.table} SET expires_at = {self._expiry}"
                f" WHERE {in_rows} AND token = %s AND state = 'active' AND expires_at >= NOW(6)",
                (*args, self.token),
            )
            if matched != len(active):
                _, rows = self.store.execute(
                    f"SELECT db, tbl FROM {self.store.table} WHERE {in_rows} AND token = %s"
                    " AND (state = 'done' OR expires_at >= NOW(6))",
                    (*args, self.token),
                )
                mine = {(str(db), str(table)) for db, table in rows}
                for entry in active:
                    if entry.name not in mine:
                        self._lose(entry.name, f"the claim on {entry.key.db}.{entry.key.table} expired or was taken over by another host")
        if held:
            self.check_datasets(held)

    def _lose(self, name: Name, why: str) -> None:
        with self._lock:
            if name in self._lost:
                return
            self._lost[name] = why
            keys = [e.key for e in self._active.values() if e.name == name]
        log.error("event=lease_lost table=%s.%s reason=%s", name[0], name[1], why)
        for key in keys:
            self._on_lost(key)
