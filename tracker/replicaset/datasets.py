"""Dataset leases on the master: who may write one table's dataset for one date.

A unit claim (``claims.py``) keeps two hosts of a run from writing the same
part; it says nothing about a ``tracker dump --force`` of the same table,
which clears the whole dataset and writes its own parts under the same keys.
Without more, two writers can leave a manifest and ``_SUCCESS`` of one next
to parts of the other.  So a dataset -- (namespace, db, table, date) -- has
at most one holder at a time, one row in ``<locks.schema>.datasets``:

* ``kind = 'dump'``: one ``tracker dump`` process, alone.
* ``kind = 'run'``: the ``tracker run`` hosts of the replica set, together
  (they already split the units between them with unit claims).  A host
  joins the row, or creates it, right before it claims a unit of the table,
  and the row's token is then shared by every host that joined.

A holder takes the row by INSERT, or by taking over a row whose lease
expired (whatever its kind) with an UPDATE that only matches that expired
row, under a new token.  While it writes it extends the lease, and right
before every commit (each part, ``schema.sql``, ``manifest.json``,
``_SUCCESS``) it checks it: an UPDATE that must match exactly one row, its
own token, not expired.  A live row of another holder refuses a dump (the
table fails alone, nothing deleted) and makes a run leave the table to the
dump.  Every time is the master's ``NOW(6)``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Callable

import pymysql

from tracker.config import Config, MySQLConfig
from tracker.db import is_local, quote_ident
from tracker.errors import LeaseLost, TrackerError
from tracker.replicaset.claims import RETENTION_DAYS, ClaimStore, Owner
from tracker.replicaset.replica import ReplicaStatus, master_config

log = logging.getLogger(__name__)

_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
  namespace VARCHAR(64) NOT NULL,
  db VARCHAR(64) NOT NULL,
  tbl VARCHAR(64) NOT NULL,
  ds DATE NOT NULL,
  kind ENUM('dump', 'run') NOT NULL,
  token CHAR(32) NOT NULL,
  host VARCHAR(255) NOT NULL,
  port INT NOT NULL,
  pid INT NOT NULL,
  since DATETIME(6) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  PRIMARY KEY (namespace, db, tbl, ds)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""

_WHERE = "namespace = %s AND db = %s AND tbl = %s AND ds = %s"
# Rounds of "row there but gone, or changed, by the time we look again";
# each round is a few statements, so contention this long means a bug.
_ATTEMPTS = 20


def lock_master(config: Config, status: ReplicaStatus | None) -> MySQLConfig:
    """The server whose lock schema coordinates this host: the master.

    On a replica, like ``run``: ``master:`` if configured, else the server it
    replicates from.  On a server that is not a replica (``dump
    --allow-master``, ``locks`` on the master): ``master:`` if configured,
    else the local server itself -- it is its replica set's master.
    """
    if status is not None:
        return master_config(config, status)
    return config.master if config.master is not None else config.mysql


def open_dataset_leases(config: Config, status: ReplicaStatus | None, owner: Owner) -> "DatasetLeases":
    """A connection to the lock schema (created if need be) for ``dump``'s dataset leases."""
    store = ClaimStore(lock_master(config, status), config.locks, owner, config.namespace)
    try:
        leases = DatasetLeases(store, same_machine=is_local(config.mysql))
        store.ensure_table()  # the claims a dump deletes
        leases.ensure_table()
    except BaseException:
        store.close()
        raise
    return leases


class DatasetBusy(TrackerError):
    """Another live holder writes the dataset; nothing was changed."""


@dataclass(frozen=True)
class DatasetKey:
    namespace: str
    db: str
    table: str
    date: dt.date

    @property
    def args(self) -> tuple:
        return (self.namespace, self.db, self.table, self.date)

    @property
    def label(self) -> str:
        return f"{self.db}.{self.table} dt={self.date.isoformat()}"


@dataclass(frozen=True)
class Holder:
    """Who holds a dataset, for the one-line message and the log."""

    kind: str
    host: str
    port: int
    pid: int
    expires_at: dt.datetime

    def describe(self) -> str:
        return f"{self.host}:{self.port} pid {self.pid} ({self.kind}, until {self.expires_at:%Y-%m-%d %H:%M:%S} master time)"


class DatasetLease:
    """A held dataset row: extended, checked before each commit, released.

    ``start_keep_alive`` runs the extensions in a thread (a dump); a run's
    unit lease extends it instead, with its own keep-alive.  Once an
    extension failed, ``check`` raises ``LeaseLost`` for good.
    """

    def __init__(self, leases: "DatasetLeases", key: DatasetKey, kind: str, token: str, created: bool) -> None:
        self.leases = leases
        self.key = key
        self.kind = kind
        self.token = token
        self.created = created  # this process inserted or took over the row (not merely joined)
        self._lost: str | None = None
        self._on_lost: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def extend(self) -> None:
        """Push the expiry one lease ahead; ``LeaseLost`` unless the row is still ours and live."""
        if self._lost is not None:
            raise LeaseLost(self._lost)
        matched, _ = self.leases.store.execute(
            f"UPDATE {self.leases.table} SET expires_at = NOW(6) + INTERVAL {self.leases.lease_seconds} SECOND"
            f" WHERE {_WHERE} AND token = %s AND expires_at >= NOW(6)",
            (*self.key.args, self.token),
        )
        if matched != 1:
            self._lose(f"the dataset lease of {self.key.label} expired or was taken over; nothing more is committed")

    def check(self) -> None:
        """Right before a commit: still ours, for at least one more lease period."""
        self.extend()

    def take_for_finishing(self) -> bool:
        """Whether this holder, of all that saw the table's last unit done, is the one to finish it.

        Two workers (or hosts) marking the last two units done at once both
        see every unit done.  The one whose UPDATE moves the shared run row to
        a token of its own finishes the table; the other's finds the old
        token gone and leaves it (``False``): one manifest, one ``_SUCCESS``.
        """
        if self._lost is not None:
            return False
        mine = secrets.token_hex(16)
        matched, _ = self.leases.store.execute(
            f"UPDATE {self.leases.table} SET token = %s, expires_at = NOW(6) + INTERVAL {self.leases.lease_seconds} SECOND"
            f" WHERE {_WHERE} AND token = %s AND expires_at >= NOW(6)",
            (mine, *self.key.args, self.token),
        )
        if matched != 1:
            return False
        self.token = mine
        return True

    @property
    def lost(self) -> str | None:
        """Why the lease was lost, once it was."""
        return self._lost

    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            log.error("event=dataset_lease_lost table=%s.%s date=%s reason=%s", self.key.db, self.key.table, self.key.date, why)
            self._on_lost()
        raise LeaseLost(why)

    def start_keep_alive(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._keep_alive, name="dataset-lease", daemon=True)
        self._thread.start()

    def _keep_alive(self) -> None:
        while not self._stop.wait(max(self.leases.lease_seconds / 3, 0.5)):
            try:
                self.extend()
            except LeaseLost as exc:
                if self._lost is None:  # the master did not answer: the same as lost
                    self._lost = str(exc)
                    log.error("event=dataset_lease_lost table=%s.%s reason=%s", self.key.db, self.key.table, exc)
                    self._on_lost()
                return

    def release(self) -> None:
        """Delete our row (a dump at its end; a run's host that finished the table)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        try:
            self.leases.store.execute(f"DELETE FROM {self.leases.table} WHERE {_WHERE} AND token = %s", (*self.key.args, self.token))
        except LeaseLost as exc:  # it expires by itself
            log.warning("event=dataset_release_failed table=%s.%s error=%s", self.key.db, self.key.table, exc)


class DatasetLeases:
    """The datasets table, over a :class:`ClaimStore`'s master connection."""

    def __init__(self, store: ClaimStore, same_machine: bool = False) -> None:
        """``same_machine``: the local server runs on this machine, so a dump lease
        of this server's host:port was taken by a process of this machine."""
        self.store = store
        self.same_machine = same_machine
        self.table = f"{quote_ident(store.locks.schema)}.`datasets`"
        self.lease_seconds = store.locks.lease_seconds

    def ensure_table(self) -> None:
        self.store.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.store.locks.schema)}")
        self.store.execute(_TABLE.format(table=self.table))

    def purge(self) -> None:
        self.store.execute(f"DELETE FROM {self.table} WHERE ds < CURDATE() - INTERVAL {RETENTION_DAYS} DAY")

    def key(self, db: str, table: str, date: dt.date) -> DatasetKey:
        return DatasetKey(self.store.namespace, db, table, date)

    def take_for_dump(self, db: str, table: str, date: dt.date) -> DatasetLease:
        """The dataset for one dump, alone; ``DatasetBusy`` naming the live holder otherwise.

        Taking it also deletes the dataset's unit claims: the dump is about
        to delete every part, so no later run may finish the table from
        units marked done before.
        """
        got = self._acquire(self.key(db, table, date), "dump")
        if isinstance(got, Holder):
            raise DatasetBusy(f"its dataset dt={date.isoformat()} is being written by {got.describe()}; nothing deleted")
        cleared, _ = self.store.execute(f"DELETE FROM {self.store.table} WHERE {_WHERE}", got.key.args)
        log.info("event=dataset_taken table=%s.%s date=%s kind=dump claims_deleted=%d", db, table, date, cleared)
        return got

    def join_run(self, db: str, table: str, date: dt.date) -> DatasetLease | Holder:
        """The run hosts' shared lease (joined, or created); the holder if a dump has it."""
        return self._acquire(self.key(db, table, date), "run")

    def _acquire(self, key: DatasetKey, kind: str) -> DatasetLease | Holder:
        owner, lease = self.store.owner, self.lease_seconds
        for _ in range(_ATTEMPTS):
            token = secrets.token_hex(16)
            try:
                self.store.execute(
                    f"INSERT INTO {self.table} (namespace, db, tbl, ds, kind, token, host, port, pid, since, expires_at)"
                    f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NOW(6), NOW(6) + INTERVAL {lease} SECOND)",
                    (*key.args, kind, token, owner.host, owner.port, owner.pid),
                )
                return DatasetLease(self, key, kind, token, created=True)
            except pymysql.err.IntegrityError:
                pass
            _, rows = self.store.execute(
                f"SELECT kind, token, host, port, pid, expires_at, expires_at < NOW(6) FROM {self.table} WHERE {_WHERE}",
                key.args,
            )
            if not rows:
                continue  # released meanwhile: insert again
            held_kind, held_token, host, port, pid, expires_at, expired = rows[0]
            if expired or (kind == "dump" and self._dead_dump_here(str(held_kind), str(host), int(port), int(pid))):
                # Its holder died or froze: take it over, whatever its kind.
                taken, _ = self.store.execute(
                    f"UPDATE {self.table} SET kind = %s, token = %s, host = %s, port = %s, pid = %s, since = NOW(6),"
                    f" expires_at = NOW(6) + INTERVAL {lease} SECOND WHERE {_WHERE} AND token = %s",
                    (kind, token, owner.host, owner.port, owner.pid, *key.args, held_token),
                )
                if taken == 1:
                    log.info("event=dataset_taken_over table=%s.%s date=%s kind=%s from=%s:%s/%s", key.db, key.table, key.date, kind, host, port, held_kind)
                    return DatasetLease(self, key, kind, token, created=True)
                continue
            if kind == "run" and held_kind == "run":  # another host of this run set: join it
                joined, _ = self.store.execute(
                    f"UPDATE {self.table} SET expires_at = NOW(6) + INTERVAL {lease} SECOND"
                    f" WHERE {_WHERE} AND kind = 'run' AND token = %s AND expires_at >= NOW(6)",
                    (*key.args, held_token),
                )
                if joined == 1:
                    return DatasetLease(self, key, kind, held_token, created=False)
                continue
            return Holder(str(held_kind), str(host), int(port), int(pid), expires_at)
        raise LeaseLost(f"{key.label}: the dataset lease kept changing hands; try again")

    def close(self) -> None:
        self.store.close()

    def _dead_dump_here(self, kind: str, host: str, port: int, pid: int) -> bool:
        """A dump lease of a process of this machine that is gone (killed with SIGKILL).

        Only a dump's: a run lease is shared with other hosts.  Only for the
        local server's own host:port, reached locally: then the holder ran
        here, and its pid can be asked.  A pid reused since only makes us
        wait for the expiry, the safe way.
        """
        owner = self.store.owner
        if kind != "dump" or not self.same_machine or (host, port) != (owner.host, owner.port) or pid == owner.pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("event=dataset_holder_gone host=%s port=%d pid=%d", host, port, pid)
            return True
        except PermissionError:
            return False
        return False

    def listing(self, date: dt.date) -> list[tuple]:
        """Dataset leases of the date, in the shape of ``ClaimStore.listing`` rows (unit None)."""
        _, rows = self.store.execute(
            f"SELECT db, tbl, NULL, 0, kind, host, port, pid, since, expires_at, NULL, expires_at < NOW(6)"
            f" FROM {self.table} WHERE namespace = %s AND ds = %s ORDER BY db, tbl",
            (self.store.namespace, date),
        )
        return rows
