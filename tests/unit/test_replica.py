"""Replica status parsing for both column vocabularies, and the caught-up rule."""

from __future__ import annotations

import datetime as dt

from tracker.replicaset.replica import cutoff_for, parse_status, progress_from_heartbeat, progress_from_lag

UTC = dt.timezone.utc

# Recorded from MariaDB 10.11 (SHOW SLAVE STATUS), trimmed to a few dozen columns.
MARIADB_ROW = {
    "Slave_IO_State": "Waiting for master to send event",
    "Master_Host": "127.0.0.1",
    "Master_User": "repl",
    "Master_Port": 40123,
    "Master_Log_File": "mysql-bin.000001",
    "Read_Master_Log_Pos": 2345,
    "Relay_Log_File": "relay-bin.000002",
    "Relay_Master_Log_File": "mysql-bin.000001",
    "Slave_IO_Running": "Yes",
    "Slave_SQL_Running": "Yes",
    "Exec_Master_Log_Pos": 2345,
    "Seconds_Behind_Master": 0,
    "Last_IO_Error": "",
    "Last_SQL_Error": "",
    "Using_Gtid": "Slave_Pos",
    "Gtid_IO_Pos": "0-1-17",
    "Slave_SQL_Running_State": "Slave has read all relay log; waiting for more updates",
}

# MySQL 8.0.22+ / 8.4 (SHOW REPLICA STATUS).
MYSQL_ROW = {
    "Replica_IO_State": "Waiting for source to send event",
    "Source_Host": "db-master.example",
    "Source_User": "repl",
    "Source_Port": 3306,
    "Source_Log_File": "binlog.000042",
    "Read_Source_Log_Pos": 157,
    "Relay_Source_Log_File": "binlog.000042",
    "Replica_IO_Running": "Yes",
    "Replica_SQL_Running": "No",
    "Exec_Source_Log_Pos": 120,
    "Seconds_Behind_Source": None,
    "Last_SQL_Error": "Error 'Duplicate entry' on query",
    "Executed_Gtid_Set": "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\n4E11FA47-71CA-11E1-9E33-C80AA9429562:1-9",
}


def test_mariadb_vocabulary() -> None:
    status = parse_status(MARIADB_ROW)
    assert status is not None
    assert (status.source_host, status.source_port) == ("127.0.0.1", 40123)
    assert status.io_running and status.sql_running
    assert status.seconds_behind == 0
    assert status.position == "mysql-bin.000001:2345"
    assert status.gtid_io_pos == "0-1-17"


def test_mysql_vocabulary() -> None:
    status = parse_status(MYSQL_ROW)
    assert status is not None
    assert (status.source_host, status.source_port) == ("db-master.example", 3306)
    assert status.io_running and not status.sql_running
    assert status.seconds_behind is None
    assert status.executed_gtid_set.count(":") == 2 and "\n" not in status.executed_gtid_set
    assert "Duplicate" in status.last_sql_error


def test_not_a_replica() -> None:
    assert parse_status(None) is None
    assert parse_status({}) is None
    assert parse_status({**MARIADB_ROW, "Master_Host": ""}) is None  # RESET SLAVE ALL


def test_cutoff_is_next_midnight_utc() -> None:
    assert cutoff_for(dt.date(2026, 11, 22)) == dt.datetime(2026, 11, 23, tzinfo=UTC)


def test_progress_from_lag() -> None:
    now = dt.datetime(2026, 11, 23, 0, 10, tzinfo=UTC)
    cutoff = cutoff_for(dt.date(2026, 11, 22))
    running = parse_status({**MARIADB_ROW, "Seconds_Behind_Master": 300})
    assert progress_from_lag(running, now).reaches(cutoff)
    late = parse_status({**MARIADB_ROW, "Seconds_Behind_Master": 1200})
    progress = progress_from_lag(late, now)
    assert not progress.reaches(cutoff)
    assert "600 s short" in progress.behind(cutoff)
    stopped = parse_status({**MARIADB_ROW, "Slave_SQL_Running": "No"})
    assert not progress_from_lag(stopped, now).reaches(cutoff)
    assert "not running" in progress_from_lag(stopped, now).behind(cutoff)


def test_progress_from_heartbeat() -> None:
    cutoff = cutoff_for(dt.date(2026, 11, 22))
    assert progress_from_heartbeat(dt.datetime(2026, 11, 23, 0, 0, 1, tzinfo=UTC)).reaches(cutoff)
    assert not progress_from_heartbeat(dt.datetime(2026, 11, 22, 23, 59, tzinfo=UTC)).reaches(cutoff)
    assert not progress_from_heartbeat(None).reaches(cutoff)
