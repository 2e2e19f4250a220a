"""Statement choice per flavor and version, against the status columns the manuals document.

The column lists below are the replica status rows as the manuals print
them (MySQL 8.0/8.4/9.x reference manual, SHOW REPLICA STATUS and, before
8.0.22, SHOW SLAVE STATUS; MariaDB knowledge base, SHOW REPLICA STATUS);
the MariaDB 10.11 list is also checked against a real 10.11 server by
tests/integration/test_dialect.py.  Each is filled with the values of one
and the same replica state, so every flavor must parse to the same status.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.db import ServerInfo, flavor_of, parse_version
from tracker.errors import EXIT_REFUSED
from tracker.replicaset.dialect import Dialect, UnsupportedServer, dialect_for, read_only_is_on
from tracker.replicaset.replica import ReplicaStatus, parse_binlog_status, parse_status

# --- column sets as documented ----------------------------------------------------

_COMMON_HEAD = (
    "Replicate_Do_DB", "Replicate_Ignore_DB", "Replicate_Do_Table", "Replicate_Ignore_Table",
    "Replicate_Wild_Do_Table", "Replicate_Wild_Ignore_Table", "Last_Errno", "Last_Error", "Skip_Counter",
)

# MySQL 8.0.22 and later, 8.4 LTS, 9.x; Percona Server 8.0 and 8.4 alike.
MYSQL_REPLICA_COLUMNS = (
    "Replica_IO_State", "Source_Host", "Source_User", "Source_Port", "Connect_Retry", "Source_Log_File",
    "Read_Source_Log_Pos", "Relay_Log_File", "Relay_Log_Pos", "Relay_Source_Log_File", "Replica_IO_Running",
    "Replica_SQL_Running", *_COMMON_HEAD, "Exec_Source_Log_Pos", "Relay_Log_Space", "Until_Condition",
    "Until_Log_File", "Until_Log_Pos", "Source_SSL_Allowed", "Source_SSL_CA_File", "Source_SSL_CA_Path",
    "Source_SSL_Cert", "Source_SSL_Cipher", "Source_SSL_Key", "Seconds_Behind_Source",
    "Source_SSL_Verify_Server_Cert", "Last_IO_Errno", "Last_IO_Error", "Last_SQL_Errno", "Last_SQL_Error",
    "Replicate_Ignore_Server_Ids", "Source_Server_Id", "Source_UUID", "Source_Info_File", "SQL_Delay",
    "SQL_Remaining_Delay", "Replica_SQL_Running_State", "Source_Retry_Count", "Source_Bind",
    "Last_IO_Error_Timestamp", "Last_SQL_Error_Timestamp", "Source_SSL_Crl", "Source_SSL_Crlpath",
    "Retrieved_Gtid_Set", "Executed_Gtid_Set", "Auto_Position", "Replicate_Rewrite_DB", "Channel_Name",
    "Source_TLS_Version", "Source_public_key_path", "Get_Source_public_key", "Network_Namespace",
)

# MySQL 8.0.0 - 8.0.21: SHOW SLAVE STATUS, the old vocabulary.
MYSQL_SLAVE_COLUMNS = (
    "Slave_IO_State", "Master_Host", "Master_User", "Master_Port", "Connect_Retry", "Master_Log_File",
    "Read_Master_Log_Pos", "Relay_Log_File", "Relay_Log_Pos", "Relay_Master_Log_File", "Slave_IO_Running",
    "Slave_SQL_Running", *_COMMON_HEAD, "Exec_Master_Log_Pos", "Relay_Log_Space", "Until_Condition",
    "Until_Log_File", "Until_Log_Pos", "Master_SSL_Allowed", "Master_SSL_CA_File", "Master_SSL_CA_Path",
    "Master_SSL_Cert", "Master_SSL_Cipher", "Master_SSL_Key", "Seconds_Behind_Master",
    "Master_SSL_Verify_Server_Cert", "Last_IO_Errno", "Last_IO_Error", "Last_SQL_Errno", "Last_SQL_Error",
    "Replicate_Ignore_Server_Ids", "Master_Server_Id", "Master_UUID", "Master_Info_File", "SQL_Delay",
    "SQL_Remaining_Delay", "Slave_SQL_Running_State", "Master_Retry_Count", "Master_Bind",
    "Last_IO_Error_Timestamp", "Last_SQL_Error_Timestamp", "Master_SSL_Crl", "Master_SSL_Crlpath",
    "Retrieved_Gtid_Set", "Executed_Gtid_Set", "Auto_Position", "Replicate_Rewrite_DB", "Channel_Name",
    "Master_TLS_Version", "Master_public_key_path", "Get_master_public_key", "Network_Namespace",
)

# MariaDB 10.5: SHOW REPLICA STATUS and SHOW SLAVE STATUS, same columns
# (MariaDB renamed the statements, not the columns).
MARIADB_10_5_COLUMNS = (
    "Slave_IO_State", "Master_Host", "Master_User", "Master_Port", "Connect_Retry", "Master_Log_File",
    "Read_Master_Log_Pos", "Relay_Log_File", "Relay_Log_Pos", "Relay_Master_Log_File", "Slave_IO_Running",
    "Slave_SQL_Running", *_COMMON_HEAD, "Exec_Master_Log_Pos", "Relay_Log_Space", "Until_Condition",
    "Until_Log_File", "Until_Log_Pos", "Master_SSL_Allowed", "Master_SSL_CA_File", "Master_SSL_CA_Path",
    "Master_SSL_Cert", "Master_SSL_Cipher", "Master_SSL_Key", "Seconds_Behind_Master",
    "Master_SSL_Verify_Server_Cert", "Last_IO_Errno", "Last_IO_Error", "Last_SQL_Errno", "Last_SQL_Error",
    "Replicate_Ignore_Server_Ids", "Master_Server_Id", "Master_SSL_Crl", "Master_SSL_Crlpath", "Using_Gtid",
    "Gtid_IO_Pos", "Replicate_Do_Domain_Ids", "Replicate_Ignore_Domain_Ids", "Parallel_Mode", "SQL_Delay",
    "SQL_Remaining_Delay", "Slave_SQL_Running_State", "Slave_DDL_Groups", "Slave_Non_Transactional_Groups",
    "Slave_Transactional_Groups",
)
# MariaDB 10.11 appends Replicate_Rewrite_DB: exactly what a real 10.11.19
# returns, in order (checked by tests/integration/test_dialect.py).
MARIADB_COLUMNS = (*MARIADB_10_5_COLUMNS, "Replicate_Rewrite_DB")
# MariaDB 11.6 added the event-time columns (MDEV-33856; their position is not checked).
MARIADB_11_6_COLUMNS = (*MARIADB_COLUMNS, "Master_last_event_time", "Slave_last_event_time", "Master_Slave_time_diff")

# --- one replica state, in every vocabulary ---------------------------------------

STATE = {
    "host": "db-master.example",
    "port": 3306,
    "file": "binlog.000042",
    "pos": 157,
    "behind": 3,
    "sql_error": "",
    "io_error": "",
}
MYSQL_GTID = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\n4E11FA47-71CA-11E1-9E33-C80AA9429562:1-9"
MARIADB_GTID = "0-1-17"

# The values of STATE under each documented name (written out, not derived
# from the dialect, so a wrong column in the dialect cannot go unnoticed).
_VALUES = {
    **dict.fromkeys(("Source_Host", "Master_Host"), STATE["host"]),
    **dict.fromkeys(("Source_Port", "Master_Port"), STATE["port"]),
    **dict.fromkeys(("Replica_IO_Running", "Slave_IO_Running", "Replica_SQL_Running", "Slave_SQL_Running"), "Yes"),
    **dict.fromkeys(("Seconds_Behind_Source", "Seconds_Behind_Master"), STATE["behind"]),
    **dict.fromkeys(("Relay_Source_Log_File", "Relay_Master_Log_File"), STATE["file"]),
    **dict.fromkeys(("Exec_Source_Log_Pos", "Exec_Master_Log_Pos"), STATE["pos"]),
    "Last_SQL_Error": STATE["sql_error"],
    "Last_IO_Error": STATE["io_error"],
    "Executed_Gtid_Set": MYSQL_GTID,
    "Gtid_IO_Pos": MARIADB_GTID,
    # look-alikes that must not be read instead: the I/O thread's file, not the executed one
    **dict.fromkeys(("Source_Log_File", "Master_Log_File"), "binlog.000043"),
    **dict.fromkeys(("Read_Source_Log_Pos", "Read_Master_Log_Pos"), 9999),
}


def recorded_row(columns: tuple[str, ...]) -> dict[str, object]:
    """A status row with the documented columns: STATE's values, filler elsewhere."""
    return {column: _VALUES.get(column, f"<{column}>") for column in columns}


def expected_status(flavor: str) -> ReplicaStatus:
    mysql = flavor != "mariadb"
    return ReplicaStatus(
        source_host=STATE["host"],
        source_port=STATE["port"],
        io_running=True,
        sql_running=True,
        seconds_behind=STATE["behind"],
        relay_source_log_file=STATE["file"],
        exec_source_log_pos=STATE["pos"],
        executed_gtid_set=" ".join(MYSQL_GTID.split()) if mysql else "",
        gtid_io_pos="" if mysql else MARIADB_GTID,
        last_sql_error="",
        last_io_error="",
    )


# --- every supported flavor and version -------------------------------------------

MARIADB_COMMENT = "mariadb.org binary distribution"
MYSQL_COMMENT = "MySQL Community Server - GPL"

NEW = ("SHOW REPLICA STATUS", "STOP REPLICA SQL_THREAD", "START REPLICA SQL_THREAD")
OLD = ("SHOW SLAVE STATUS", "STOP SLAVE SQL_THREAD", "START SLAVE SQL_THREAD")
IS = "`information_schema`.`PROCESSLIST`"
PS = "`performance_schema`.`processlist`"

# (name, @@version, @@version_comment, @@performance_schema,
#  (status, stop, start), vocabulary, binlog status, gtid query, process list, documented columns)
CASES = [
    ("MariaDB 10.5", "10.5.27-MariaDB-log", MARIADB_COMMENT, False,
     NEW, "master", "SHOW BINLOG STATUS", "SELECT @@GLOBAL.gtid_slave_pos", IS, MARIADB_10_5_COLUMNS),
    ("MariaDB 10.11", "10.11.6-MariaDB-0+deb12u1-log", "Debian 12", False,
     NEW, "master", "SHOW BINLOG STATUS", "SELECT @@GLOBAL.gtid_slave_pos", IS, MARIADB_COLUMNS),
    ("MariaDB 11.4", "11.4.5-MariaDB-ubu2404", MARIADB_COMMENT, True,
     NEW, "master", "SHOW BINLOG STATUS", "SELECT @@GLOBAL.gtid_slave_pos", IS, MARIADB_COLUMNS),
    ("MariaDB 11.8", "11.8.2-MariaDB-ubu2404-log", MARIADB_COMMENT, False,
     NEW, "master", "SHOW BINLOG STATUS", "SELECT @@GLOBAL.gtid_slave_pos", IS, MARIADB_11_6_COLUMNS),
    ("MySQL 8.0.21", "8.0.21", MYSQL_COMMENT, True,
     OLD, "master", "SHOW MASTER STATUS", "SELECT @@GLOBAL.gtid_executed", IS, MYSQL_SLAVE_COLUMNS),
    ("MySQL 8.0.22", "8.0.22", MYSQL_COMMENT, True,
     NEW, "source", "SHOW MASTER STATUS", "SELECT @@GLOBAL.gtid_executed", PS, MYSQL_REPLICA_COLUMNS),
    ("MySQL 8.0.40", "8.0.40-log", MYSQL_COMMENT, True,
     NEW, "source", "SHOW MASTER STATUS", "SELECT @@GLOBAL.gtid_executed", PS, MYSQL_REPLICA_COLUMNS),
    ("MySQL 8.2", "8.2.0", MYSQL_COMMENT, True,
     NEW, "source", "SHOW BINARY LOG STATUS", "SELECT @@GLOBAL.gtid_executed", PS, MYSQL_REPLICA_COLUMNS),
    ("MySQL 8.4 LTS", "8.4.3", MYSQL_COMMENT, True,
     NEW, "source", "SHOW BINARY LOG STATUS", "SELECT @@GLOBAL.gtid_executed", PS, MYSQL_REPLICA_COLUMNS),
    ("MySQL 9.1", "9.1.0", MYSQL_COMMENT, True,
     NEW, "source", "SHOW BINARY LOG STATUS", "SELECT @@GLOBAL.gtid_executed", PS, MYSQL_REPLICA_COLUMNS),
    ("Percona 8.0", "8.0.39-30", "Percona Server (GPL), Release 30, Revision 5d3e2ddb", True,
     NEW, "source", "SHOW MASTER STATUS", "SELECT @@GLOBAL.gtid_executed", PS, MYSQL_REPLICA_COLUMNS),
    ("Percona 8.4", "8.4.2-2", "Percona Server (GPL), Release '2', Revision '8d3c6e5b'", True,
     NEW, "source", "SHOW BINARY LOG STATUS", "SELECT @@GLOBAL.gtid_executed", PS, MYSQL_REPLICA_COLUMNS),
]


def server(version: str, comment: str, performance_schema: bool = True) -> ServerInfo:
    return ServerInfo("db1", 3306, version, comment, "/var/lib/mysql-files", performance_schema)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_statements_per_flavor_and_version(case) -> None:
    name, version, comment, p_s, (status, stop, start), vocabulary, binlog, gtid, processlist, _ = case
    dialect = dialect_for(server(version, comment, p_s))
    expected_flavor = name.split()[0].lower()
    assert dialect == Dialect(
        flavor=expected_flavor,
        version=parse_version(version),
        replica_status=status,
        stop_sql_thread=stop,
        start_sql_thread=start,
        vocabulary=vocabulary,
        binlog_status=binlog,
        gtid_position=gtid,
        read_only="SELECT @@GLOBAL.read_only",
        processlist=processlist,
    )


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_documented_rows_parse_to_the_same_status(case) -> None:
    name, version, comment, p_s, *_, columns = case
    dialect = dialect_for(server(version, comment, p_s))
    row = recorded_row(columns)
    # every column the dialect reads is one the manual documents for that version
    missing = [column for column in dialect.status_columns.values() if column not in row]
    assert not missing, f"{name}: {missing}"
    assert parse_status(row) == expected_status(dialect.flavor)


def test_mysql_families_agree_and_differ_from_mariadb_only_in_gtid() -> None:
    statuses = {case[0]: parse_status(recorded_row(case[-1])) for case in CASES}
    mysql = {s for name, s in statuses.items() if not name.startswith("MariaDB")}
    mariadb = {s for name, s in statuses.items() if name.startswith("MariaDB")}
    assert len(mysql) == 1 and len(mariadb) == 1
    (one,), (other,) = mysql, mariadb
    assert dataclasses.replace(one, executed_gtid_set="", gtid_io_pos="") == dataclasses.replace(
        other, executed_gtid_set="", gtid_io_pos=""
    )


def test_vocabularies_do_not_mix() -> None:
    """A Source_* dialect never names a Master_* column, and the reverse."""
    for case in CASES:
        dialect = dialect_for(server(case[1], case[2], case[3]))
        columns = set(dialect.status_columns.values()) - {"Last_SQL_Error", "Last_IO_Error"}
        if dialect.vocabulary == "source":
            assert not any(c.startswith(("Master_", "Slave_")) or "_Master_" in c for c in columns), case[0]
        else:
            assert not any(c.startswith(("Source_", "Replica_")) or "_Source_" in c for c in columns), case[0]


def test_mysql_without_performance_schema_reads_information_schema() -> None:
    # performance_schema.processlist is empty when the Performance Schema is off
    assert dialect_for(server("8.4.3", MYSQL_COMMENT, performance_schema=False)).processlist == IS
    assert dialect_for(server("8.0.21", MYSQL_COMMENT, performance_schema=True)).processlist == IS


def test_mariadb_before_the_binlog_status_alias() -> None:
    # 10.5.1 has SHOW REPLICA STATUS; SHOW BINLOG STATUS arrived in 10.5.2
    dialect = dialect_for(server("10.5.1-MariaDB", MARIADB_COMMENT))
    assert (dialect.replica_status, dialect.binlog_status) == ("SHOW REPLICA STATUS", "SHOW MASTER STATUS")
    before = dialect_for(server("10.5.0-MariaDB", MARIADB_COMMENT))
    assert (before.replica_status, before.stop_sql_thread) == ("SHOW SLAVE STATUS", "STOP SLAVE SQL_THREAD")


@pytest.mark.parametrize(
    "version, comment, message",
    [
        ("5.7.44-log", "MySQL Community Server (GPL)", "db1:3306 runs mysql 5.7.44-log; tracker needs mysql 8.0 or later"),
        ("5.7.43-47", "Percona Server (GPL), Release 47", "db1:3306 runs percona 5.7.43-47; tracker needs percona 8.0 or later"),
        ("10.4.34-MariaDB", MARIADB_COMMENT, "db1:3306 runs mariadb 10.4.34-MariaDB; tracker needs mariadb 10.5 or later"),
        ("unknown", "Some Fork", "db1:3306 runs mysql unknown; tracker needs mysql 8.0 or later"),
    ],
)
def test_older_servers_are_refused_in_one_line(version: str, comment: str, message: str) -> None:
    with pytest.raises(UnsupportedServer) as refused:
        dialect_for(server(version, comment))
    assert str(refused.value) == message
    assert refused.value.exit_status == EXIT_REFUSED


@pytest.mark.parametrize(
    "version, comment, flavor, parsed",
    [
        ("10.11.6-MariaDB-0+deb12u1-log", "Debian 12", "mariadb", (10, 11, 6)),
        ("5.5.5-10.11.6-MariaDB", "mariadb.org binary distribution", "mariadb", (10, 11, 6)),
        ("11.8.2-MariaDB-ubu2404", "", "mariadb", (11, 8, 2)),
        ("8.0.36-28", "Percona Server (GPL), Release 28, Revision 47601f19", "percona", (8, 0, 36)),
        ("8.4.0-1", "Percona Server (GPL), Release '1', Revision '238b3c02'", "percona", (8, 4, 0)),
        ("8.4.3", "MySQL Community Server - GPL", "mysql", (8, 4, 3)),
        ("9.1.0-commercial", "MySQL Enterprise Server - Commercial", "mysql", (9, 1, 0)),
    ],
)
def test_flavor_and_version_from_the_server(version: str, comment: str, flavor: str, parsed: tuple) -> None:
    info = server(version, comment)
    assert (info.flavor, info.flavour, info.version_tuple) == (flavor, flavor, parsed)
    assert (flavor_of(version, comment), parse_version(version)) == (flavor, parsed)


@given(
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 999),
    st.sampled_from(["", "-log", "-MariaDB", "-MariaDB-0+deb12u1-log", "-28", "-commercial"]),
)
def test_parse_version_reads_the_leading_triple(major: int, minor: int, patch: int, suffix: str) -> None:
    assert parse_version(f"{major}.{minor}.{patch}{suffix}") == (major, minor, patch)


@pytest.mark.parametrize(
    "value, on",
    [(1, True), (0, False), ("1", True), ("0", False), (b"1", True), ("ON", True), ("OFF", False),
     ("NO_LOCK", True), ("NO_LOCK_NO_ADMIN", True), ("off", False)],
)
def test_read_only_as_boolean_or_mariadb_12_enum(value: object, on: bool) -> None:
    assert read_only_is_on(value) is on


def test_binlog_status_rows_of_both_flavors() -> None:
    # the manual's SHOW BINARY LOG STATUS example (MySQL 8.2+), and MariaDB's columns
    mysql = {
        "File": "source-bin.000002",
        "Position": 1307,
        "Binlog_Do_DB": "test",
        "Binlog_Ignore_DB": "manual, mysql",
        "Executed_Gtid_Set": "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5",
    }
    status = parse_binlog_status(mysql)
    assert status is not None
    assert (status.coordinates, status.gtid) == ("source-bin.000002:1307", "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5")
    mariadb = {"File": "mysql-bin.000003", "Position": 385, "Binlog_Do_DB": "", "Binlog_Ignore_DB": ""}
    status = parse_binlog_status(mariadb)
    assert status is not None and (status.coordinates, status.gtid) == ("mysql-bin.000003:385", "")
    assert parse_binlog_status(None) is None  # binary logging off: no row
