"""Claims on the master: which replica dumps which unit, as expiring leases.

One row per unit (namespace, db, table, date, unit) in ``<schema>.claims``.
The primary key makes a second claim of a unit fail atomically; a claim
whose lease expired can be taken over with an UPDATE that only matches an
expired row.  Every time is the master's ``NOW(6)``, never a host's clock.
The claimant extends its lease regularly and, right before committing, once
more: the extension is an UPDATE that must match exactly one row (its own
token, still active, not expired), or the lease is lost and nothing is
committed.  A finished unit is marked done with its manifest entry, so the
host that finishes a table's last unit can write the table's manifest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pymysql

from tracker.config import LocksConfig, MySQLConfig
from tracker.db import bind, connect, error_text, quote_ident
from tracker.errors import LeaseLost, TrackerError

log = logging.getLogger(__name__)

RETENTION_DAYS = 30

_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
  namespace VARCHAR(64) NOT NULL,
  db VARCHAR(64) NOT NULL,
  tbl VARCHAR(64) NOT NULL,
  ds DATE NOT NULL,
  unit INT NOT NULL,
  units INT NOT NULL,
  state ENUM('active', 'done') NOT NULL,
  host VARCHAR(255) NOT NULL,
  port INT NOT NULL,
  pid INT NOT NULL,
  token CHAR(32) NOT NULL,
  claimed_at DATETIME(6) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  done_at DATETIME(6) NULL,
  result LONGTEXT NULL,
  PRIMARY KEY (namespace, db, tbl, ds, unit),
  KEY by_owner (host, port, state),
  KEY by_date (ds)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""


# The units of a (table, date), as the first host to plan it stored them:
# every host dumps the same units even though their size estimates differ.
# ``plan`` is NULL while its host plans (under a lease like a unit's), so
# the others wait rather than walk the same index again.
_PLANS = """
CREATE TABLE IF NOT EXISTS {table} (
  namespace VARCHAR(64) NOT NULL,
  db VARCHAR(64) NOT NULL,
  tbl VARCHAR(64) NOT NULL,
  ds DATE NOT NULL,
  host VARCHAR(255) NOT NULL,
  token CHAR(32) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  plan LONGTEXT NULL,
  PRIMARY KEY (namespace, db, tbl, ds)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""
PLAN_POLL_SECONDS = 1.0


class PlanningStopped(TrackerError):
    """The run was stopped while another host planned a table."""


@dataclass(frozen=True)
class UnitKey:
    namespace: str
    db: str
    table: str
    date: dt.date
    unit: int

    def where(self) -> tuple[str, tuple]:
        return (
            "namespace = %s AND db = %s AND tbl = %s AND ds = %s AND unit = %s",
            (self.namespace, self.db, self.table, self.date, self.unit),
        )


@dataclass(frozen=True)
class Owner:
    """Who claims: the local server (``@@hostname``, port) and this process."""

    host: str
    port: int
    pid: int = os.getpid()


class ClaimStore:
    """The claims table, over one master connection shared under a lock."""

    def __init__(self, master: MySQLConfig, locks: LocksConfig, owner: Owner, namespace: str) -> None:
        self.master = master
        self.locks = locks
        self.owner = owner
        self.namespace = namespace
        self.table = f"{quote_ident(locks.schema)}.`claims`"
        self.plans = f"{quote_ident(locks.schema)}.`plans`"
        self._conn = self._connect()
        self._lock = threading.Lock()
        self.round_trips = 0  # statements sent to the master (each one round trip), for the run's log

    def _connect(self) -> pymysql.Connection:
        # A hung master must fail an extension well within one lease, so the
        # unit stops before another host could take it over.  The timeout
        # bounds the TCP connect, the handshake and every read; writes are
        # small statements the kernel's send buffer takes without waiting.
        timeout = max(2, min(30, self.locks.lease_seconds // 3))
        master = dataclasses.replace(self.master, connect_timeout=min(self.master.connect_timeout, timeout))
        return connect(master, read_timeout=timeout, found_rows=True, what="the master")

    def execute(self, sql: str, args: tuple = ()) -> tuple[int, list[tuple]]:
        """Run one statement; returns (matched rows, fetched rows).

        One reconnect on a dropped connection: every statement here is
        idempotent or guarded by the token, so running it again is safe.
        """
        with self._lock:
            for attempt in (1, 2):
                self.round_trips += 1
                try:
                    with self._conn.cursor() as cur:
                        count = cur.execute(bind(self._conn, sql, args))
                        return count, list(cur.fetchall())
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                    # InterfaceError: the connection was closed, e.g. by a failed reconnect.
                    if attempt == 2:
                        raise LeaseLost(f"master {self.master.host}:{self.master.port} unreachable: {error_text(exc)}") from None
                    log.warning("event=master_reconnect error=%s", error_text(exc))
                    try:
                        self._conn = self._connect()
                    except Exception as again:
                        raise LeaseLost(f"master unreachable: {again}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- housekeeping --------------------------------------------------------

    def ensure_table(self) -> None:
        self.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.locks.schema)}")
        self.execute(_TABLE.format(table=self.table))
        self.execute(_PLANS.format(table=self.plans))

    def release_leftovers(self) -> int:
        """Drop active claims an earlier process on this server left behind."""
        count, _ = self.execute(
            f"DELETE FROM {self.table} WHERE host = %s AND port = %s AND state = 'active'",
            (self.owner.host, self.owner.port),
        )
        if count:
            log.info("event=released_leftover_claims count=%d", count)
        return count

    def purge(self) -> None:
        for table in (self.table, self.plans):
            self.execute(f"DELETE FROM {table} WHERE ds < CURDATE() - INTERVAL {RETENTION_DAYS} DAY")

    # -- plans -------------------------------------------------------------------

    def shared_plan(
        self,
        db: str,
        table: str,
        date: dt.date,
        compute: Callable[[], dict[str, Any]],
        cancel: threading.Event | None = None,
        wait: bool = True,
    ) -> dict[str, Any] | None:
        """The table's plan for ``date``: the stored one, else ``compute()``'s, stored first.

        The first host inserts a row without a plan and computes it under a
        lease (kept alive while it works); the others wait for the plan, and
        take the planning over if that lease expires (its host died).  With
        ``wait=False`` a table another host is planning returns None at once,
        so the caller can plan other tables meanwhile.
        """
        where = "namespace = %s AND db = %s AND tbl = %s AND ds = %s"
        args = (self.namespace, db, table, date)
        token = secrets.token_hex(16)
        expiry = f"NOW(6) + INTERVAL {self.locks.lease_seconds} SECOND"
        cancel = cancel or threading.Event()
        while True:
            _, rows = self.execute(f"SELECT plan FROM {self.plans} WHERE {where}", args)
            if rows and rows[0][0]:
                return json.loads(rows[0][0])
            if rows:  # another host plans: take over only if its lease expired
                mine, _ = self.execute(
                    f"UPDATE {self.plans} SET host = %s, token = %s, expires_at = {expiry}"
                    f" WHERE {where} AND plan IS NULL AND expires_at < NOW(6)",
                    (self.owner.host, token, *args),
                )
            else:
                mine, _ = self.execute(
                    f"INSERT IGNORE INTO {self.plans} (namespace, db, tbl, ds, host, token, expires_at)"
                    f" VALUES (%s, %s, %s, %s, %s, %s, {expiry})",
                    (*args, self.owner.host, token),
                )
            if mine == 1:
                document = self._plan_under_lease(where, args, token, compute)
                if document is not None:
                    return document
                continue  # our lease lapsed and another host's plan won
            if not wait:
                return None
            if cancel.wait(PLAN_POLL_SECONDS):
                raise PlanningStopped(f"stopped while waiting for another host to plan {db}.{table}")

    def _plan_under_lease(
        self, where: str, args: tuple, token: str, compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """Compute and store the plan while extending the planning lease; None if it was lost."""
        mine = f"{where} AND token = %s AND plan IS NULL"
        stop = threading.Event()

        def keep_alive() -> None:
            while not stop.wait(max(self.locks.lease_seconds / 3, 0.5)):
                try:
                    self.execute(
                        f"UPDATE {self.plans} SET expires_at = NOW(6) + INTERVAL {self.locks.lease_seconds} SECOND"
                        f" WHERE {mine}",
                        (*args, token),
                    )
                except LeaseLost as exc:  # storing the plan will fail too, and say so
                    log.warning("event=plan_lease_not_extended error=%s", exc)
                    return

        thread = threading.Thread(target=keep_alive, name="plan-lease", daemon=True)
        thread.start()
        try:
            document = compute()
        except BaseException:
            stop.set()
            thread.join(5)
            self.execute(f"DELETE FROM {self.plans} WHERE {mine}", (*args, token))
            raise
        stop.set()
        thread.join(5)
        stored, _ = self.execute(f"UPDATE {self.plans} SET plan = %s WHERE {mine}", (json.dumps(document), *args, token))
        return document if stored == 1 else None

    # -- claiming --------------------------------------------------------------

    def try_claim(
        self, key: UnitKey, units: int, on_lost: Callable[[], None], companions: Sequence[Callable[[], None]] = ()
    ) -> "Lease | None":
        """Claim ``key`` (new, or taking over an expired lease); None if held or done.

        ``companions`` are extended with the claim (the run's dataset lease).
        """
        token = secrets.token_hex(16)
        lease = self.locks.lease_seconds
        try:
            self.execute(
                f"INSERT INTO {self.table} (namespace, db, tbl, ds, unit, units, state, host, port, pid, token,"
                " claimed_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, 'active', %s, %s, %s, %s, NOW(6),"
                f" NOW(6) + INTERVAL {lease} SECOND)",
                (key.namespace, key.db, key.table, key.date, key.unit, units,
                 self.owner.host, self.owner.port, self.owner.pid, token),
            )
        except pymysql.err.IntegrityError:
            where, args = key.where()
            taken, _ = self.execute(
                f"UPDATE {self.table} SET host = %s, port = %s, pid = %s, token = %s, units = %s,"
                f" claimed_at = NOW(6), expires_at = NOW(6) + INTERVAL {lease} SECOND"
                f" WHERE {where} AND state = 'active' AND expires_at < NOW(6)",
                (self.owner.host, self.owner.port, self.owner.pid, token, units, *args),
            )
            if taken != 1:
                return None
            log.info("event=lease_taken_over unit=%s", _label(key))
        return Lease(self, key, token, on_lost, companions)

    def done_results(self, db: str, table: str, date: dt.date) -> tuple[int, list[dict[str, Any]]]:
        """(units the table has, results of its done units)."""
        _, rows = self.execute(
            f"SELECT units, state, result FROM {self.table}"
            " WHERE namespace = %s AND db = %s AND tbl = %s AND ds = %s",
            (self.namespace, db, table, date),
        )
        units = max((int(r[0]) for r in rows), default=0)
        return units, [json.loads(r[2]) for r in rows if r[1] == "done" and r[2]]

    def listing(self, date: dt.date) -> list[tuple]:
        """Tables being planned (state ``planning``, unit None), then every claim."""
        _, planning = self.execute(
            f"SELECT db, tbl, NULL, 0, 'planning', host, NULL, NULL, NULL, expires_at, NULL, expires_at < NOW(6)"
            f" FROM {self.plans} WHERE namespace = %s AND ds = %s AND plan IS NULL ORDER BY db, tbl",
            (self.namespace, date),
        )
        _, rows = self.execute(
            f"SELECT db, tbl, unit, units, state, host, port, pid, claimed_at, expires_at, done_at,"
            f" expires_at < NOW(6) FROM {self.table} WHERE namespace = %s AND ds = %s ORDER BY db, tbl, unit",
            (self.namespace, date),
        )
        return planning + rows


def _label(key: UnitKey) -> str:
    return f"{key.db}.{key.table}/part-{key.unit:05d}"


class Lease:
    """A held claim, extended in the background until released or done.

    If an extension fails (taken over, master unreachable), ``on_lost`` is
    called so the unit stops; ``check`` raises ``LeaseLost`` from then on.
    """

    def __init__(
        self, store: ClaimStore, key: UnitKey, token: str, on_lost: Callable[[], None],
        companions: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.store = store
        self._companions = tuple(companions)
        self.key = key
        self.token = token
        self._on_lost = on_lost
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="lease", daemon=True)
        self._thread.start()

    def _keep_alive(self) -> None:
        interval = max(self.store.locks.lease_seconds / 3, 0.5)
        while not self._stop.wait(interval):
            try:
                self._extend()
                for extend in self._companions:
                    extend()
            except LeaseLost as exc:
                self._lose(str(exc))
                return

    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            log.error("event=lease_lost unit=%s reason=%s", _label(self.key), why)
            self._on_lost()

    def _extend(self) -> None:
        where, args = self.key.where()
        matched, _ = self.store.execute(
            f"UPDATE {self.store.table} SET expires_at = NOW(6) + INTERVAL {self.store.locks.lease_seconds} SECOND"
            f" WHERE {where} AND token = %s AND state = 'active' AND expires_at >= NOW(6)",
            (*args, self.token),
        )
        if matched != 1:
            raise LeaseLost(f"the claim on {_label(self.key)} expired or was taken over by another host")

    @property
    def lost(self) -> str | None:
        """Why the lease was lost (its unit was stopped for it), or None while it holds."""
        return self._lost

    def check(self) -> None:
        """Right before a commit: still ours, for at least one more lease period."""
        if self._lost is not None:
            raise LeaseLost(self._lost)
        try:
            self._extend()
        except LeaseLost as exc:
            self._lose(str(exc))
            raise

    def mark_done(self, result: dict[str, Any]) -> None:
        self._stop_thread()
        where, args = self.key.where()
        matched, _ = self.store.execute(
            f"UPDATE {self.store.table} SET state = 'done', done_at = NOW(6), result = %s"
            f" WHERE {where} AND token = %s AND state = 'active'",
            (json.dumps(result), *args, self.token),
        )
        if matched != 1:
            # The object is committed and complete; only the bookkeeping raced.
            log.warning("event=mark_done_raced unit=%s", _label(self.key))

    def release(self) -> None:
        """Give the unit back (after a failure), unless it is done."""
        self._stop_thread()
        where, args = self.key.where()
        try:
            self.store.execute(
                f"DELETE FROM {self.store.table} WHERE {where} AND token = %s AND state = 'active'",
                (*args, self.token),
            )
        except LeaseLost as exc:
            log.warning("event=release_failed unit=%s error=%s", _label(self.key), exc)

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
