"""Keep a long dump from holding replication back behind a DDL statement.

A dump's transaction holds a shared metadata lock on every table it has
read until it ends, so an ``ALTER TABLE`` replicated from the master waits
behind it and the replica falls ever further behind.  A watcher polls the
process list: when the replication SQL thread (or a parallel worker) waits
for a metadata lock, it logs that within a poll interval; when the wait
reaches ``ddl_wait_seconds`` it asks the snapshot for a refresh, which ends
every worker's transaction (in-flight units stop and are dumped again later
from a fresh snapshot whose position they record).
"""

from __future__ import annotations

import logging
import threading

import pymysql

from tracker.config import MySQLConfig
from tracker.db import connect, error_text, query_all
from tracker.replicaset.snapshot import Snapshot

log = logging.getLogger(__name__)

_BLOCKED_REPLICATION = (
    "SELECT ID, TIME, COALESCE(DB, ''), COALESCE(INFO, '') FROM information_schema.PROCESSLIST"
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
            while not self._stop.wait(self.interval):
                try:
                    self._check(conn)
                except pymysql.MySQLError as exc:
                    log.warning("event=ddl_watch_error error=%s", error_text(exc))
        finally:
            conn.close()

    def _check(self, conn: pymysql.Connection) -> None:
        for thread_id, waited, db, statement in query_all(conn, _BLOCKED_REPLICATION):
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
                self.snapshot.request_refresh(f"replication waited {waited} s for a metadata lock")
