"""Is the local server a replica, and has it applied the master's events up to a cutoff?

The status statement is the one the server's dialect names (``SHOW REPLICA
STATUS`` on MySQL 8.0.22+ and MariaDB 10.5.1+, else ``SHOW SLAVE STATUS``);
its columns come in one of two vocabularies: ``Source_*``/``Replica_*``
(MySQL 8.0.22+) or ``Master_*``/``Slave_*`` (MariaDB, older MySQL).
:func:`parse_status` maps either to one :class:`ReplicaStatus`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pymysql
import pymysql.cursors

from tracker.config import Config, MySQLConfig, ReplicationConfig
from tracker.db import qualified, query_one
from tracker.errors import Cancelled, NotAReplica, NotCaughtUp
from tracker.replicaset.dialect import STATUS_COLUMN_CHOICES, Dialect, dialect_of

log = logging.getLogger(__name__)

_FIELDS = STATUS_COLUMN_CHOICES


@dataclass(frozen=True)
class ReplicaStatus:
    """The parts of a replica's status tracker decides on."""

    source_host: str
    source_port: int
    io_running: bool
    sql_running: bool
    seconds_behind: int | None
    relay_source_log_file: str
    exec_source_log_pos: int
    executed_gtid_set: str
    gtid_io_pos: str
    last_sql_error: str
    last_io_error: str

    @property
    def position(self) -> str:
        """The master binlog position executed, as ``file:pos``."""
        return f"{self.relay_source_log_file}:{self.exec_source_log_pos}"


def _pick(row: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in row:
            return row[name]
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_status(row: Mapping[str, Any] | None) -> ReplicaStatus | None:
    """One status row (column name -> value) to a status; None if not a replica.

    No row, or a row without a source host (``RESET REPLICA ALL``, or a
    configuration that was deliberately cleared), means not a replica.
    """
    if not row:
        return None
    values = {field: _pick(row, names) for field, names in _FIELDS.items()}
    host = _text(values["source_host"])
    if not host:
        return None
    behind = values["seconds_behind"]
    return ReplicaStatus(
        source_host=host,
        source_port=int(values["source_port"] or 3306),
        io_running=_text(values["io_running"]) == "Yes",
        sql_running=_text(values["sql_running"]) == "Yes",
        seconds_behind=None if behind is None or behind == "" else int(behind),
        relay_source_log_file=_text(values["relay_source_log_file"]),
        exec_source_log_pos=int(values["exec_source_log_pos"] or 0),
        executed_gtid_set=" ".join(_text(values["executed_gtid_set"]).split()),
        gtid_io_pos=_text(values["gtid_io_pos"]),
        last_sql_error=_text(values["last_sql_error"]),
        last_io_error=_text(values["last_io_error"]),
    )


def cutoff_for(date: dt.date) -> dt.datetime:
    """The dataset for ``date`` needs every master event up to the next midnight UTC."""
    return dt.datetime.combine(date + dt.timedelta(days=1), dt.time(0), tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Progress:
    """How far the replica has applied the master's events, in master time."""

    applied_until: dt.datetime | None  # None: unknown (threads stopped, lag NULL)
    how: str  # "heartbeat" or "lag"

    def behind(self, cutoff: dt.datetime) -> str:
        if self.applied_until is None:
            return f"replication is not running or its lag is unknown ({self.how})"
        seconds = (cutoff - self.applied_until).total_seconds()
        return f"applied up to {self.applied_until:%Y-%m-%d %H:%M:%S} UTC, {seconds:.0f} s short of {cutoff:%Y-%m-%d %H:%M} UTC ({self.how})"

    def reaches(self, cutoff: dt.datetime) -> bool:
        return self.applied_until is not None and self.applied_until >= cutoff


def progress_from_lag(status: ReplicaStatus, now: dt.datetime) -> Progress:
    """Without a heartbeat: applied up to now minus the lag, if both threads run."""
    if not (status.io_running and status.sql_running) or status.seconds_behind is None:
        return Progress(None, "lag")
    return Progress(now - dt.timedelta(seconds=status.seconds_behind), "lag")


def progress_from_heartbeat(newest: dt.datetime | None) -> Progress:
    """With pt-heartbeat: the newest heartbeat row applied (its ``ts``, UTC)."""
    return Progress(newest, "heartbeat")


# --- reading the server -------------------------------------------------------


def read_status(conn: pymysql.Connection, dialect: Dialect | None = None) -> ReplicaStatus | None:
    """The local replica status, by the statement the server's dialect names.

    No fallback to the other spelling: a failure (a missing privilege
    included) is an error, never "not a replica".
    """
    statement = (dialect or dialect_of(conn)).replica_status
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(statement)
        return parse_status(cur.fetchone())


@dataclass(frozen=True)
class BinlogStatus:
    """The server's own binary log position (``SHOW BINARY LOG STATUS`` and aliases)."""

    file: str
    position: int
    gtid: str  # Executed_Gtid_Set on MySQL; MariaDB's statement has no GTID column

    @property
    def coordinates(self) -> str:
        return f"{self.file}:{self.position}"


def parse_binlog_status(row: Mapping[str, Any] | None) -> BinlogStatus | None:
    """One binlog status row to a status; None when binary logging is off (no row)."""
    if not row:
        return None
    return BinlogStatus(
        file=_text(row.get("File")),
        position=int(row.get("Position") or 0),
        gtid=" ".join(_text(row.get("Executed_Gtid_Set")).split()),
    )


def read_binlog_status(conn: pymysql.Connection, dialect: Dialect | None = None) -> BinlogStatus | None:
    """The local server's own binlog position, by the statement its dialect names."""
    statement = (dialect or dialect_of(conn)).binlog_status
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(statement)
        return parse_binlog_status(cur.fetchone())


def applied_gtid(conn: pymysql.Connection, dialect: Dialect | None = None) -> str:
    """The GTID set/position this replica has applied (gtid_executed or gtid_slave_pos)."""
    row = query_one(conn, (dialect or dialect_of(conn)).gtid_position)
    return " ".join(_text(row[0]).split()) if row else ""


def server_utc_now(conn: pymysql.Connection) -> dt.datetime:
    row = query_one(conn, "SELECT UTC_TIMESTAMP(6)")
    assert row is not None
    return row[0].replace(tzinfo=dt.timezone.utc)


def newest_heartbeat(conn: pymysql.Connection, table: tuple[str, str]) -> dt.datetime | None:
    """pt-heartbeat's newest ``ts`` (written in UTC with ``--utc``)."""
    row = query_one(conn, f"SELECT MAX(ts) FROM {qualified(*table)}")
    value = row[0] if row else None
    if value is None:
        return None
    if isinstance(value, (bytes, str)):
        text = value.decode() if isinstance(value, bytes) else value
        value = dt.datetime.fromisoformat(text.replace(" ", "T"))
    return value.replace(tzinfo=dt.timezone.utc)


def current_progress(conn: pymysql.Connection, status: ReplicaStatus, heartbeat: tuple[str, str] | None) -> Progress:
    if heartbeat is not None:
        return progress_from_heartbeat(newest_heartbeat(conn, heartbeat))
    return progress_from_lag(status, server_utc_now(conn))


def wait_until_caught_up(
    conn: pymysql.Connection,
    date: dt.date,
    config: ReplicationConfig,
    cancel: threading.Event,
) -> Progress:
    """Wait until the replica has applied the master's events up to the cutoff.

    Re-checks every ``poll_seconds`` for up to ``wait_seconds``; then raises
    ``NotCaughtUp`` saying how far behind it is.
    """
    cutoff = cutoff_for(date)
    deadline = time.monotonic() + config.wait_seconds
    while True:
        status = read_status(conn)
        if status is None:
            raise NotAReplica("the local server stopped being a replica while waiting")
        progress = current_progress(conn, status, config.heartbeat_table)
        if progress.reaches(cutoff):
            return progress
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotCaughtUp(f"replica not caught up after {config.wait_seconds} s: {progress.behind(cutoff)}")
        log.info("event=waiting_for_replica %s", progress.behind(cutoff))
        if cancel.wait(min(config.poll_seconds, remaining)):
            raise Cancelled("stopped by request while waiting for the replica")


def master_config(config: Config, status: ReplicaStatus) -> MySQLConfig:
    """The configured master, else the one the replica replicates from."""
    if config.master is not None:
        return config.master
    return MySQLConfig(
        host=status.source_host,
        port=status.source_port,
        user=config.mysql.user,
        password=config.mysql.password,
        connect_timeout=config.mysql.connect_timeout,
    )
