"""Keep a long dump from holding replication back behind a DDL statement.

A dump's transaction holds a shared metadata lock on every table it has
read until it ends, so an ``ALTER TABLE`` replicated from the master waits
behind it and the replica falls ever further behind.  A watcher polls the
process list: when the replication SQL thread (or a parallel worker) waits
for a metadata lock, it logs that within a poll interval; when the wait
reaches ``ddl_wait_seconds`` it ends the transactions that block it: only
the workers holding a lock on what the statement waits for, where the server
lists metadata locks with their owners (``tracker.replicaset.mdl``), else
every worker's.  An ended worker's in-flight unit stops and is dumped again
later from a fresh snapshot whose position it records; the other workers
finish their units and renew their snapshot before the next one.
"""

from __future__ import annotations

import logging
import threading

import pymysql

from tracker.config import MySQLConfig
from tracker.db import connect, error_text, query_all
from tracker.replicaset.dialect import dialect_of
from tracker.replicaset.mdl import find_blockers
from tracker.replicaset.snapshot import Snapshot

log = logging.getLogger(__name__)

def blocked_replication_query(processlist: str) -> str:
    """Replication threads waiting for a metadata lock, from the dialect's process list.

    ``processlist`` is the dialect's quoted table (information_schema on
    MariaDB, performance_schema on MySQL 8.0.22+); both have these columns.
    """
    return (
        f"SELECT ID, TIME, COALESCE(DB, ''), COALESCE(INFO, '') FROM {processlist}"
        " WHERE STATE LIKE 'Waiting for table metadata lock%%'"
        " AND (USER = 'system user' OR COMMAND LIKE 'Slave%%')"
    )


class DdlWatch:
    """A thread watching for replication blocked on a metadata lock."""

    def __init__(self, config: MySQLConfig, snapshot: Snapshot, wait_seconds: int) -> None:
        self.config = config
        self.snapshot = snapshot
        self.wait_seconds = wait_seconds
        self.interval = max(1.0, min(10.0, wait_seconds / 3))
        self._stop = threading.Event()
        self._reported: set[int] = set()
        self._refreshed_for: set[tuple[int, int]] = set()
        self._thread = threading.Thread(target=self._watch, name="ddl-watch", daemon=True)

    def __enter__(self) -> "DdlWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)

    def _watch(self) -> None:
        try:
            conn = connect(self.config)
        except Exception as exc:  # the dump goes on; only the safeguard is lost
            log.error("event=ddl_watch_unavailable error=%s", exc)
            return
        try:
            try:
                query = blocked_replication_query(dialect_of(conn).processlist)
            except Exception as exc:  # as above: only the safeguard is lost
                log.error("event=ddl_watch_unavailable error=%s", exc)
                return
            while not self._stop.wait(self.interval):
                try:
                    self._check(conn, query)
                except pymysql.MySQLError as exc:
                    log.warning("event=ddl_watch_error error=%s", error_text(exc))
        finally:
            conn.close()

    def _check(self, conn: pymysql.Connection, query: str) -> None:
        for thread_id, waited, db, statement in query_all(conn, query):
            thread_id, waited = int(thread_id), int(waited)
            if thread_id not in self._reported:
                self._reported.add(thread_id)
                log.warning(
                    "event=replication_waits_for_metadata_lock thread=%d secs=%d db=%s statement=%.200s",
                    thread_id, waited, db, " ".join(str(statement).split()),
                )
            # One refresh per ddl_wait_seconds of waiting: if the statement is
            # still blocked a period later (a transaction opened since, or a
            # lock tracker does not hold), it is asked again, not every poll.
            block = (thread_id, int(waited // max(self.wait_seconds, 1)))
            if waited >= self.wait_seconds and block not in self._refreshed_for:
                self._refreshed_for.add(block)
                self._release(conn, thread_id, waited)

    def _release(self, conn: pymysql.Connection, thread_id: int, waited: int) -> None:
        """End the workers' transactions that block ``thread_id``; all of them when the server can not tell."""
        reason = f"replication waited {waited} s for a metadata lock"
        found = find_blockers(conn, thread_id)
        if found is None:
            log.warning("event=ddl_blocker_unknown action=refresh_all thread=%d", thread_id)
            self.snapshot.request_refresh(reason)
            return
        method, holders = found
        ours = sorted(holders & set(self.snapshot.connection_ids()))
        log.warning(
            "event=ddl_blocker_found method=%s connections=%s others=%s thread=%d",
            method, ",".join(map(str, ours)) or "none", ",".join(map(str, sorted(holders - set(ours)))) or "none", thread_id,
        )
        if ours:
            self.snapshot.request_refresh(reason, only=ours)
