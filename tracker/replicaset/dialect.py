"""Which statements and column names the local server understands.

MySQL 8.4 removed ``SHOW SLAVE STATUS``, ``START/STOP SLAVE`` and ``SHOW
MASTER STATUS`` (renamed in 8.0.22 and 8.2); MariaDB accepts both spellings
from 10.5 but keeps the ``Master_*``/``Slave_*`` column names; MySQL keeps
GTIDs in ``gtid_executed``, MariaDB in ``gtid_slave_pos``.  Rather than try
one spelling and fall back on a syntax error (which also hides a missing
privilege), the flavor and version are read once per connection and
:func:`dialect_for` picks every statement from them.  Nothing else in
tracker spells a replication statement.

What each version accepts follows the MySQL 8.0/8.4/9.x reference manuals
and the MariaDB knowledge base; only MariaDB 10.11 is exercised for real.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import pymysql

from tracker.db import ServerInfo, qualified, server_info
from tracker.errors import SafetyRefusal

# The oldest release of each flavor tracker runs on.  MySQL 5.7 and MariaDB
# 10.4 are past their end of life, and their privileges (SUPER for
# everything) are not what the README documents.
MINIMUM = {"mariadb": (10, 5, 0), "mysql": (8, 0, 0), "percona": (8, 0, 0)}

# (our field, column in the Source/Replica vocabulary, column in the Master/Slave one)
_STATUS_COLUMNS = (
    ("source_host", "Source_Host", "Master_Host"),
    ("source_port", "Source_Port", "Master_Port"),
    ("io_running", "Replica_IO_Running", "Slave_IO_Running"),
    ("sql_running", "Replica_SQL_Running", "Slave_SQL_Running"),
    ("seconds_behind", "Seconds_Behind_Source", "Seconds_Behind_Master"),
    ("relay_source_log_file", "Relay_Source_Log_File", "Relay_Master_Log_File"),
    ("exec_source_log_pos", "Exec_Source_Log_Pos", "Exec_Master_Log_Pos"),
    ("last_sql_error", "Last_SQL_Error", "Last_SQL_Error"),
    ("last_io_error", "Last_IO_Error", "Last_IO_Error"),
)
# GTID columns exist in one flavor only, whatever the statement's spelling.
_GTID_COLUMNS = {"mysql": ("executed_gtid_set", "Executed_Gtid_Set"), "mariadb": ("gtid_io_pos", "Gtid_IO_Pos")}


# Every name a field may have, in either vocabulary: parse_status takes a
# row from any flavor, so a recorded row can be parsed without knowing it.
STATUS_COLUMN_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        **{field: tuple(dict.fromkeys((source, master))) for field, source, master in _STATUS_COLUMNS},
        **{field: (column,) for field, column in _GTID_COLUMNS.values()},
    }
)


class UnsupportedServer(SafetyRefusal):
    """The local server is a flavor or version tracker does not run on."""


@dataclass(frozen=True)
class Dialect:
    """The statements and column names for one flavor and version.

    Every field is a fixed string chosen here, never user input, so they
    are safe to execute as they are.
    """

    flavor: str  # mariadb, mysql or percona
    version: tuple[int, int, int]
    replica_status: str  # SHOW REPLICA STATUS | SHOW SLAVE STATUS
    stop_sql_thread: str
    start_sql_thread: str
    vocabulary: str  # "source" (Source_*/Replica_* columns) or "master" (Master_*/Slave_*)
    binlog_status: str  # SHOW BINARY LOG STATUS | SHOW BINLOG STATUS | SHOW MASTER STATUS
    gtid_position: str  # the GTID the replica has applied, as one SELECT
    read_only: str  # SELECT of the read_only flag
    processlist: str  # quoted schema.table of the process list

    @property
    def status_columns(self) -> Mapping[str, str]:
        """Our field -> the column this server's replica status names it."""
        new = self.vocabulary == "source"
        columns = {field: (source if new else master) for field, source, master in _STATUS_COLUMNS}
        gtid_field, gtid_column = _GTID_COLUMNS["mariadb" if self.flavor == "mariadb" else "mysql"]
        columns[gtid_field] = gtid_column
        return MappingProxyType(columns)


def at_least(version: tuple[int, int, int], *minimum: int) -> bool:
    return version >= tuple(minimum)


def dialect_for(server: ServerInfo) -> Dialect:
    """The dialect of ``server``; ``UnsupportedServer`` for one too old to run on.

    Versions (manuals): ``SHOW REPLICA STATUS``/``START|STOP REPLICA`` from
    MySQL 8.0.22 and MariaDB 10.5.1; ``SHOW BINARY LOG STATUS`` from MySQL
    8.2.0 (``SHOW MASTER STATUS`` is gone in 8.4), MariaDB's alias ``SHOW
    BINLOG STATUS`` from 10.5.2; ``performance_schema.processlist`` from
    MySQL 8.0.22, where ``information_schema.PROCESSLIST`` became deprecated.
    """
    flavor, version = server.flavor, server.version_tuple
    if version < MINIMUM[flavor]:
        oldest = ".".join(map(str, MINIMUM[flavor][:2]))
        raise UnsupportedServer(
            f"{server.label} runs {flavor} {server.version}; tracker needs {flavor} {oldest} or later"
        )
    if flavor == "mariadb":
        replica = at_least(version, 10, 5, 1)
        return Dialect(
            flavor=flavor,
            version=version,
            replica_status="SHOW REPLICA STATUS" if replica else "SHOW SLAVE STATUS",
            stop_sql_thread="STOP REPLICA SQL_THREAD" if replica else "STOP SLAVE SQL_THREAD",
            start_sql_thread="START REPLICA SQL_THREAD" if replica else "START SLAVE SQL_THREAD",
            vocabulary="master",  # MariaDB renamed the statements, not the columns
            binlog_status="SHOW BINLOG STATUS" if at_least(version, 10, 5, 2) else "SHOW MASTER STATUS",
            gtid_position="SELECT @@GLOBAL.gtid_slave_pos",
            read_only="SELECT @@GLOBAL.read_only",
            processlist=qualified("information_schema", "PROCESSLIST"),
        )
    replica = at_least(version, 8, 0, 22)
    # The performance_schema table is empty when the Performance Schema is
    # off; the deprecated information_schema one still works on 9.x.
    modern_processlist = replica and server.performance_schema
    return Dialect(
        flavor=flavor,
        version=version,
        replica_status="SHOW REPLICA STATUS" if replica else "SHOW SLAVE STATUS",
        stop_sql_thread="STOP REPLICA SQL_THREAD" if replica else "STOP SLAVE SQL_THREAD",
        start_sql_thread="START REPLICA SQL_THREAD" if replica else "START SLAVE SQL_THREAD",
        vocabulary="source" if replica else "master",
        binlog_status="SHOW BINARY LOG STATUS" if at_least(version, 8, 2, 0) else "SHOW MASTER STATUS",
        gtid_position="SELECT @@GLOBAL.gtid_executed",
        read_only="SELECT @@GLOBAL.read_only",
        processlist=(
            qualified("performance_schema", "processlist")
            if modern_processlist
            else qualified("information_schema", "PROCESSLIST")
        ),
    )


def read_only_is_on(value: Any) -> bool:
    """``@@read_only`` as a flag: 0/1 everywhere, an enum on MariaDB 12.0+.

    MariaDB 12.0 made read_only ``OFF``/``ON``/``NO_LOCK``/``NO_LOCK_NO_ADMIN``;
    every value but OFF keeps ordinary users from writing.
    """
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip().upper() not in ("0", "OFF", "")


# One dialect per open connection: the server behind a connection does not
# change, and callers such as read_status() are handed only the connection.
_by_connection: "weakref.WeakKeyDictionary[pymysql.Connection, Dialect]" = weakref.WeakKeyDictionary()
_by_connection_lock = threading.Lock()


def dialect_of(conn: pymysql.Connection) -> Dialect:
    """The dialect of the server behind ``conn``, asked once per connection."""
    with _by_connection_lock:
        known = _by_connection.get(conn)
    if known is not None:
        return known
    dialect = dialect_for(server_info(conn))
    with _by_connection_lock:
        _by_connection[conn] = dialect
    return dialect
