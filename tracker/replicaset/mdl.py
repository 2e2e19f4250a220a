"""Who holds the metadata lock a thread waits for, where the server can tell.

A replicated DDL statement waits behind every transaction holding a
metadata lock (MDL) on its table.  Two server features list metadata locks
with their owners' connection ids:

- ``performance_schema.metadata_locks`` (MySQL 5.7+, MariaDB 10.5+), filled
  only while the ``wait/lock/metadata/sql/mdl`` instrument is enabled; it
  shows granted and pending locks, so the waited-for object is exact;
- MariaDB's ``metadata_lock_info`` plugin
  (``information_schema.METADATA_LOCK_INFO``), which shows granted locks
  only: the waited-for tables are taken to be the tables the waiting thread
  already holds a lock on (an ``ALTER TABLE`` holds an upgradable lock on
  its table while it waits to upgrade it).

When neither is available, or the waiting thread's object or its holders
can not be seen, the answer is "unknown" (None), and the caller falls back
to ending every transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Collection

import pymysql

from tracker.db import error_text, query_all, query_one

log = logging.getLogger(__name__)

PERFORMANCE_SCHEMA = "performance_schema"
METADATA_LOCK_INFO = "metadata_lock_info"
MDL_INSTRUMENT = "wait/lock/metadata/sql/mdl"
TABLE = "TABLE"  # the one object kind both sources name alike, after normalising

# MariaDB lists its replication threads without a PROCESSLIST_ID: they
# count as REPLICATION (0, which no connection id is), any other such thread
# by its negated THREAD_ID (never one of ours).
REPLICATION = 0
_PS_LOCKS = (
    "SELECT CASE WHEN t.PROCESSLIST_ID IS NOT NULL THEN t.PROCESSLIST_ID"
    " WHEN t.NAME LIKE 'thread/sql/slave%%' OR t.NAME LIKE 'thread/sql/replica%%'"
    " OR t.NAME LIKE 'thread/sql/rpl_parallel%%' THEN 0 ELSE -t.THREAD_ID END, m.OBJECT_TYPE, COALESCE(m.OBJECT_SCHEMA, ''), COALESCE(m.OBJECT_NAME, ''),"
    " m.LOCK_STATUS"
    " FROM performance_schema.metadata_locks m"
    " JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID"
)
_MLI_LOCKS = (
    "SELECT THREAD_ID, LOCK_TYPE, COALESCE(TABLE_SCHEMA, ''), COALESCE(TABLE_NAME, '')"
    " FROM information_schema.METADATA_LOCK_INFO"
)


@dataclass(frozen=True)
class Mdl:
    """One metadata lock: its owner's connection id, the object, granted or waited for."""

    thread: int
    kind: str  # TABLE for a table; the source's own word for anything else
    schema: str
    name: str
    pending: bool = False

    @property
    def object(self) -> tuple[str, str, str]:
        return (self.kind, self.schema, self.name)


def blockers(waiters: Collection[int], locks: list[Mdl]) -> set[int] | None:
    """Connection ids holding a lock on what ``waiters`` wait for; None: can not tell.

    What it waits for: its pending locks when the source shows them, else
    the tables it holds a lock on.  None when that is nothing, or when no
    other connection visibly holds it (a lock taken before the instrument
    was enabled is not listed): guessing "nobody" would leave replication
    blocked.
    """
    waited = {lock.object for lock in locks if lock.thread in waiters and lock.pending}
    if not waited:
        waited = {lock.object for lock in locks if lock.thread in waiters and lock.kind == TABLE}
    if not waited:
        return None
    holders = {lock.thread for lock in locks if lock.thread not in waiters and not lock.pending and lock.object in waited}
    return holders or None


def lock_method(conn: pymysql.Connection) -> str | None:
    """Which lock listing the server offers now: performance_schema, metadata_lock_info, or None."""
    try:
        row = query_one(conn, "SELECT @@GLOBAL.performance_schema")
        if row and int(row[0]):
            row = query_one(
                conn, "SELECT ENABLED FROM performance_schema.setup_instruments WHERE NAME = %s", (MDL_INSTRUMENT,)
            )
            if row and str(row[0]).upper() == "YES":
                return PERFORMANCE_SCHEMA
        row = query_one(
            conn,
            "SELECT 1 FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'",
        )
        return METADATA_LOCK_INFO if row else None
    except pymysql.MySQLError as exc:  # a server without these tables: no method, not a failure
        log.info("event=mdl_listing_unavailable error=%s", error_text(exc))
        return None


def read_locks(conn: pymysql.Connection, method: str) -> list[Mdl]:
    """Every metadata lock the server lists through ``method``."""
    if method == PERFORMANCE_SCHEMA:
        return [
            Mdl(int(thread), TABLE if kind == "TABLE" else str(kind), str(schema), str(name), str(status) == "PENDING")
            for thread, kind, schema, name, status in query_all(conn, _PS_LOCKS)
            if status in ("GRANTED", "PENDING")  # not the transient states around acquiring and releasing
        ]
    return [
        Mdl(int(thread), TABLE if kind == "Table metadata lock" else str(kind), str(schema), str(name))
        for thread, kind, schema, name in query_all(conn, _MLI_LOCKS)
    ]


def find_blockers(conn: pymysql.Connection, waiter: int) -> tuple[str, set[int]] | None:
    """(method, connection ids blocking ``waiter``), or None when the server can not tell."""
    method = lock_method(conn)
    if method is None:
        return None
    try:
        # The replication thread by its connection id, or as REPLICATION where unnamed.
        found = blockers({waiter, REPLICATION}, read_locks(conn, method))
    except pymysql.MySQLError as exc:
        log.warning("event=mdl_listing_failed method=%s error=%s", method, error_text(exc))
        return None
    return None if found is None else (method, found)
