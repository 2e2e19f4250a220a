"""Every spelling MariaDB accepts, forced one by one on a real MariaDB replica set.

MariaDB 10.11 takes both ``SHOW REPLICA STATUS`` and ``SHOW SLAVE STATUS``,
``STOP/START REPLICA|SLAVE SQL_THREAD``, ``SHOW BINLOG STATUS`` and ``SHOW
MASTER STATUS``: the dialect tracker detects uses the first of each; the
legacy dialect forces the second.  Both must read the same values, and those
values must be the server's own (gtid_slave_pos, SHOW BINARY LOGS, the
connection ids).  Everything runs as the tracker account, so the grants the
sandbox gives it are shown to be enough for every statement.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pymysql
import pymysql.cursors
import pytest

from sandbox.mariadb import TRACKER_PASSWORD, TRACKER_USER
from tests.unit.test_dialect import MARIADB_COLUMNS
from tracker.config import MySQLConfig, ReplicationConfig
from tracker.db import TAG_PREFIX, connect, parse_version
from tracker.replicaset import snapshot as snapshot_module
from tracker.replicaset.ddl import blocked_replication_query
from tracker.replicaset.dialect import Dialect, dialect_of, read_only_is_on
from tracker.replicaset.kill import TaggedQuery, failover_reason, tagged_queries
from tracker.replicaset.replica import applied_gtid, read_binlog_status, read_status
from tracker.replicaset.snapshot import _sql_thread, take_snapshot


def config_for(server) -> MySQLConfig:
    return MySQLConfig(host="127.0.0.1", port=server.port, user=TRACKER_USER, password=TRACKER_PASSWORD)


@pytest.fixture
def on_replica(replica) -> Iterator[pymysql.Connection]:
    conn = connect(config_for(replica))
    yield conn
    conn.close()


@pytest.fixture
def on_master(master) -> Iterator[pymysql.Connection]:
    conn = connect(config_for(master))
    yield conn
    conn.close()


def legacy(dialect: Dialect) -> Dialect:
    """The same server, spoken to in the spellings MariaDB kept from before 10.5."""
    return dataclasses.replace(
        dialect,
        replica_status="SHOW SLAVE STATUS",
        stop_sql_thread="STOP SLAVE SQL_THREAD",
        start_sql_thread="START SLAVE SQL_THREAD",
        binlog_status="SHOW MASTER STATUS",
    )


def raw_status(conn: pymysql.Connection, statement: str) -> dict:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(statement)
        return dict(cur.fetchone())


def test_detected_dialect_is_mariadbs_modern_one(on_replica, replica) -> None:
    ((version,),) = replica.sql("SELECT @@version")
    dialect = dialect_of(on_replica)
    assert dialect.flavor == "mariadb" and dialect.version == parse_version(version)
    assert dialect.version >= (10, 5, 2)
    assert (dialect.replica_status, dialect.stop_sql_thread, dialect.start_sql_thread, dialect.binlog_status) == (
        "SHOW REPLICA STATUS",
        "STOP REPLICA SQL_THREAD",
        "START REPLICA SQL_THREAD",
        "SHOW BINLOG STATUS",
    )
    assert dialect_of(on_replica) is dialect  # asked once per connection


def test_both_status_spellings_return_the_documented_columns_and_agree(on_replica, replica_set) -> None:
    replica_set.sync()
    modern = raw_status(on_replica, "SHOW REPLICA STATUS")
    old = raw_status(on_replica, "SHOW SLAVE STATUS")
    # MariaDB renamed the statement, not the columns: the unit fixture's list is what 10.11 returns
    assert list(modern) == list(old) == list(MARIADB_COLUMNS)
    dialect = dialect_of(on_replica)
    assert set(dialect.status_columns.values()) <= set(modern)
    new_status, old_status = read_status(on_replica, dialect), read_status(on_replica, legacy(dialect))
    assert new_status is not None and new_status == old_status
    assert (new_status.source_host, new_status.source_port) == (modern["Master_Host"], modern["Master_Port"])
    assert new_status.io_running and new_status.sql_running


@pytest.mark.parametrize("spelling", ["modern", "legacy"])
def test_sql_thread_stops_and_starts_in_each_spelling(on_replica, replica_set, spelling: str) -> None:
    detected = dialect_of(on_replica)
    dialect = detected if spelling == "modern" else legacy(detected)
    _sql_thread(on_replica, dialect.stop_sql_thread)
    try:
        stopped = read_status(on_replica, dialect)
        assert stopped is not None and not stopped.sql_running and stopped.io_running
    finally:
        _sql_thread(on_replica, dialect.start_sql_thread)
    started = read_status(on_replica, dialect)
    assert started is not None and started.sql_running
    replica_set.sync()  # replication really goes on


def test_snapshot_position_is_the_same_in_both_spellings(replica, replica_set, master, monkeypatch) -> None:
    """take_snapshot, the real path, forced to each spelling: one position, the server's."""
    replica_set.sync()
    config = config_for(replica)
    positions = []
    for force in (lambda d: d, legacy):
        monkeypatch.setattr(snapshot_module, "dialect_of", lambda conn, force=force: force(dialect_of(conn)))
        snap = take_snapshot(config, 1, ReplicationConfig(), replica=True)
        try:
            positions.append(snap.position)
        finally:
            snap.close()
    assert positions[0] == positions[1]
    ((slave_pos,),) = replica.sql("SELECT @@GLOBAL.gtid_slave_pos")
    ((binlog_pos,),) = master.sql("SELECT @@GLOBAL.gtid_binlog_pos")
    assert positions[0].gtid == slave_pos == binlog_pos
    status = replica.slave_status()
    assert (positions[0].binlog_file, positions[0].binlog_pos) == (
        status["Relay_Master_Log_File"],
        status["Exec_Master_Log_Pos"],
    )
    assert replica.slave_status()["Slave_SQL_Running"] == "Yes"  # restarted after each snapshot


def test_applied_gtid_is_the_replicas_slave_pos(on_replica, replica, replica_set) -> None:
    replica_set.sync()
    ((expected,),) = replica.sql("SELECT @@GLOBAL.gtid_slave_pos")
    assert applied_gtid(on_replica) == expected != ""


def test_binlog_status_spellings_agree_with_show_binary_logs(on_master, master) -> None:
    dialect = dialect_of(on_master)
    modern = read_binlog_status(on_master, dialect)
    old = read_binlog_status(on_master, legacy(dialect))
    assert modern is not None and modern == old
    last_file, last_size = master.sql("SHOW BINARY LOGS")[-1][:2]
    assert (modern.file, modern.position) == (last_file, last_size)
    assert modern.gtid == ""  # MariaDB reports GTIDs in gtid_binlog_pos, not here


@pytest.fixture
def held_tagged_query(replica) -> Iterator[tuple[int, int]]:
    """A tagged statement kept running (waiting on a user lock) until the test ends."""
    holder = replica.connect()
    runner = replica.connect()
    lock = f"trk-dialect-{id(holder)}"
    with holder.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 0)", (lock,))
    fake_pid = 4_000_000  # above any pid_max: no live tracker process has it
    thread = threading.Thread(
        target=lambda: runner.cursor().execute(f"{TAG_PREFIX}pid={fake_pid} */ SELECT GET_LOCK(%s, 60)", (lock,))
    )
    thread.start()
    try:
        wanted = TaggedQuery(runner.thread_id(), fake_pid)
        for _ in range(200):
            if wanted in tagged_queries(holder):
                break
            threading.Event().wait(0.05)
        yield runner.thread_id(), fake_pid
    finally:
        with holder.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
        thread.join(30)
        holder.close()
        runner.close()


def test_processlist_finds_tagged_queries_by_connection_id(on_replica, held_tagged_query) -> None:
    connection_id, pid = held_tagged_query
    dialect = dialect_of(on_replica)
    assert dialect.processlist == "`information_schema`.`PROCESSLIST`"  # MariaDB has no other
    found = tagged_queries(on_replica, dialect)
    assert TaggedQuery(connection_id, pid) in found
    assert all(query.connection_id != on_replica.thread_id() for query in found)


def test_ddl_watch_query_runs_on_the_dialects_processlist(on_replica) -> None:
    # nothing blocks replication here: the query is valid and finds nothing
    with on_replica.cursor() as cur:
        cur.execute(blocked_replication_query(dialect_of(on_replica).processlist))
        assert cur.fetchall() == ()


@pytest.fixture
def read_only_restored(replica) -> Iterator[None]:
    """The replica's read_only as it was (a restart by another test may have reset it)."""
    ((before,),) = replica.sql("SELECT @@GLOBAL.read_only")
    yield
    replica.sql("SET GLOBAL read_only = %s", (before,))


def test_failover_reason_follows_read_only_in_both_spellings(on_replica, replica, read_only_restored) -> None:
    legacy_dialect = legacy(dialect_of(on_replica))
    replica.sql("SET GLOBAL read_only = ON")
    ((value,),) = replica.sql("SELECT @@GLOBAL.read_only")
    assert read_only_is_on(value)
    assert failover_reason(on_replica) == failover_reason(on_replica, legacy_dialect) == ""
    replica.sql("SET GLOBAL read_only = OFF")  # what a promotion does
    ((value,),) = replica.sql("SELECT @@GLOBAL.read_only")
    assert not read_only_is_on(value)
    assert (
        failover_reason(on_replica)
        == failover_reason(on_replica, legacy_dialect)
        == "read_only is off on the local server"
    )


# The MariaDB 10.5.9+ grants the README documents for the replicas (the dump
# itself also needs FILE and SELECT; REPLICATION CLIENT is BINLOG MONITOR there).
README_MARIADB_GRANTS = "SELECT, SHOW VIEW, FILE, PROCESS, REPLICATION CLIENT, REPLICATION SLAVE ADMIN, REPLICA MONITOR"


@pytest.fixture
def account(replica) -> Iterator:
    """Make a local-only account on the replica (not binlogged, so the master never sees it)."""
    made: list[str] = []

    def make(grants: str) -> MySQLConfig:
        name = f"trk_grants_{len(made)}"
        admin = replica.connect()
        try:
            with admin.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY 'pw'", (name,))
                cur.execute(f"GRANT {grants} ON *.* TO %s@'127.0.0.1'", (name,))
        finally:
            admin.close()
        made.append(name)
        return MySQLConfig(host="127.0.0.1", port=replica.port, user=name, password="pw")

    yield make
    admin = replica.connect()
    try:
        with admin.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            for name in made:
                cur.execute("DROP USER IF EXISTS %s@'127.0.0.1'", (name,))
    finally:
        admin.close()


def test_readme_grants_suffice_for_every_statement_in_both_spellings(
    account, replica, replica_set, read_only_restored
) -> None:
    replica.sql("SET GLOBAL read_only = ON")  # a healthy replica
    conn = connect(account(README_MARIADB_GRANTS))
    try:
        dialect = dialect_of(conn)
        for spoken in (dialect, legacy(dialect)):
            assert read_status(conn, spoken) is not None
            _sql_thread(conn, spoken.stop_sql_thread)
            _sql_thread(conn, spoken.start_sql_thread)
            assert read_binlog_status(conn, spoken) is not None
            assert applied_gtid(conn, spoken) != ""
            assert failover_reason(conn, spoken) == ""
            tagged_queries(conn, spoken)
    finally:
        conn.close()
    replica_set.sync()


def test_without_replica_monitor_the_status_is_refused_not_taken_for_not_a_replica(account) -> None:
    """MariaDB 10.5.9 moved SHOW REPLICA STATUS to REPLICA MONITOR: no grant, an error."""
    conn = connect(account(README_MARIADB_GRANTS.replace(", REPLICA MONITOR", "")))
    try:
        for spoken in (dialect_of(conn), legacy(dialect_of(conn))):
            with pytest.raises(pymysql.MySQLError) as denied:
                read_status(conn, spoken)
            assert denied.value.args[0] == 1227  # ER_SPECIFIC_ACCESS_DENIED_ERROR
    finally:
        conn.close()
