"""One consistent snapshot for every worker of a run.

All units one host dumps in one run must come from a single point of the
replication stream, so that tables written in the same transactions on the
master agree.  The SQL thread is stopped, every worker's connection opens a
``WITH CONSISTENT SNAPSHOT`` transaction, the position is recorded, and the
SQL thread starts again -- in a ``finally``, so an error or a signal can not
leave replication stopped, and within the time it takes to open the
connections.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Iterator

import pymysql

from tracker.config import MySQLConfig, ReplicationConfig
from tracker.db import SESSION_SETTINGS, connect
from tracker.replicaset.dialect import Dialect, dialect_of
from tracker.replicaset.replica import applied_gtid, newest_heartbeat, read_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    """Where in the master's stream a snapshot stands (recorded in manifests)."""

    gtid: str
    binlog_file: str
    binlog_pos: int
    heartbeat: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "gtid": self.gtid,
            "binlog_file": self.binlog_file,
            "binlog_pos": self.binlog_pos,
            "heartbeat": self.heartbeat,
        }


@dataclass
class Snapshot:
    """Worker connections that all see the same data, and where that is.

    A snapshot can be renewed worker by worker (:meth:`request_refresh`,
    :meth:`ensure_fresh`): a transaction holds a metadata lock on every table
    it read, so a DDL statement replicated from the master waits behind it;
    ending the transaction lets replication go on, and the worker's later
    units come from a fresh snapshot whose position they record.
    """

    connections: list[pymysql.Connection]
    position: Position | None  # None on a server that is not a replica
    config: MySQLConfig | None = None
    replication: ReplicationConfig | None = None
    generation: int = 0
    _positions: dict[int, tuple[int, Position | None]] = field(default_factory=dict)
    _in_flight: dict[int, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def position_of(self, conn: pymysql.Connection) -> Position | None:
        return self._positions.get(id(conn), (0, self.position))[1]

    def is_stale(self, conn: pymysql.Connection) -> bool:
        return self._positions.get(id(conn), (0, self.position))[0] < self.generation

    def request_refresh(self, reason: str, only: Collection[int] | None = None) -> None:
        """Every worker ends its transaction: in-flight units stop and run again later.

        ``only`` (server connection ids): just those workers' in-flight units
        stop now -- the transactions that block a DDL statement; the other
        workers finish their unit and renew before the next one, so no work
        of theirs is redone, yet no unit starts from a snapshot older than
        the DDL (such a snapshot can not read the altered table).
        """
        with self._lock:
            self.generation += 1
            in_flight = [
                stop for conn in self.connections
                if (stop := self._in_flight.get(id(conn))) is not None and (only is None or conn.thread_id() in only)
            ]
        log.warning("event=snapshot_refresh_requested reason=%s units_interrupted=%d", reason, len(in_flight))
        for stop in in_flight:
            stop.set()

    def connection_ids(self) -> list[int]:
        """The workers' server connection ids (they stay the same across renewals)."""
        return [conn.thread_id() for conn in self.connections]

    @contextlib.contextmanager
    def unit(self, conn: pymysql.Connection, stop: threading.Event) -> Iterator[None]:
        """Marks a unit in flight on ``conn``; a refresh sets ``stop``."""
        with self._lock:
            self._in_flight[id(conn)] = stop
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.pop(id(conn), None)

    def ensure_fresh(self, conn: pymysql.Connection) -> None:
        """Before a unit: renew this worker's snapshot if a refresh was asked for."""
        if not self.is_stale(conn):
            return
        assert self.config is not None and self.replication is not None
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")  # read-only: ending it releases its metadata locks
        generation = self.generation
        position = _renew(self.config, [conn], self.replication, replica=self.position is not None)
        self._positions[id(conn)] = (generation, position)

    def close(self) -> None:
        for conn in self.connections:
            try:
                conn.close()
            except Exception:  # closing is best effort; the server ends the transaction
                pass
        self.connections = []


def _sql_thread(conn: pymysql.Connection, statement: str) -> None:
    """Run the dialect's ``STOP``/``START ... SQL_THREAD`` (its spelling, no guessing)."""
    with conn.cursor() as cur:
        cur.execute(statement)


def _open_worker(config: MySQLConfig) -> pymysql.Connection:
    conn = connect(config)
    with conn.cursor() as cur:
        cur.execute(SESSION_SETTINGS)
    return conn


def _position(conn: pymysql.Connection, heartbeat_table: tuple[str, str] | None, dialect: Dialect) -> Position:
    status = read_status(conn, dialect)
    assert status is not None
    # MySQL's status carries Executed_Gtid_Set; MariaDB's does not, and its
    # applied position is gtid_slave_pos (the dialect's gtid_position).
    gtid = status.executed_gtid_set or applied_gtid(conn, dialect)
    beat = newest_heartbeat(conn, heartbeat_table) if heartbeat_table else None
    return Position(
        gtid=gtid,
        binlog_file=status.relay_source_log_file,
        binlog_pos=status.exec_source_log_pos,
        heartbeat=beat.isoformat() if beat else None,
    )


def _begin(conn: pymysql.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")


def _renew(
    config: MySQLConfig, connections: list[pymysql.Connection], replication: ReplicationConfig, *, replica: bool
) -> Position | None:
    """Begin a snapshot transaction on each connection at one stream position."""
    if not replica:
        for conn in connections:
            _begin(conn)
        return None
    control = connect(config)
    try:
        dialect = dialect_of(control)
        status = read_status(control, dialect)
        was_running = bool(status and status.sql_running)
        started = time.monotonic()
        if was_running:
            _sql_thread(control, dialect.stop_sql_thread)
        try:
            for conn in connections:
                _begin(conn)
            position = _position(control, replication.heartbeat_table, dialect)
        finally:
            if was_running:
                _sql_thread(control, dialect.start_sql_thread)
        log.info(
            "event=snapshot workers=%d gtid=%s binlog=%s:%d sql_thread_stopped_secs=%.3f",
            len(connections),
            position.gtid,
            position.binlog_file,
            position.binlog_pos,
            time.monotonic() - started if was_running else 0.0,
        )
        return position
    finally:
        control.close()


def take_snapshot(config: MySQLConfig, workers: int, replication: ReplicationConfig, *, replica: bool) -> Snapshot:
    """Open ``workers`` connections at one point of the replication stream.

    On a server that is not a replica (``dump --allow-master``) each
    connection still gets its own consistent snapshot, but there is no
    stream position to hold still or record.
    """
    connections: list[pymysql.Connection] = []
    try:
        connections = [_open_worker(config) for _ in range(workers)]
        position = _renew(config, connections, replication, replica=replica)
        return Snapshot(connections, position, config, replication)
    except BaseException:
        for conn in connections:
            conn.close()
        raise
