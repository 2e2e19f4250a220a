"""Many tables' DDL in few round trips: each table gets its own, a dropped one fails alone.

``show_create_tables`` sends many ``SHOW CREATE TABLE`` statements as one
multi-statement query on a connection of its own.  Names only reach that
SQL through ``quote_ident``, so a name full of backticks, semicolons and
quotes must come back as its own table's DDL and run nothing else; and the
server stops a multi-statement query at its first error, so the statements
after a missing table must be sent again.  Every DDL is compared with what
one ``SHOW CREATE TABLE`` on an ordinary connection gives.
"""

from __future__ import annotations

import datetime as dt

import pymysql
import pytest

from sandbox.mariadb import free_port
from tracker.config import MySQLConfig
from tracker.db import connect, qualified, query_all, quote_ident
from tracker.dump.columns import find_tables
from tracker.dump.create_table import show_create_table, show_create_tables
from tracker.dump.plan import plan_tables
from tracker.errors import DumpFailed

NASTY = [
    "plain",
    "semi;colon",
    "back`tick",
    "x`; DROP TABLE `victim`; SELECT `1",
    "quote'single",
    'quote"double',
    "per%cent%s",
    "back\\slash",
    "表_ünïcödé",
    "victim",
]


def config_of(server) -> MySQLConfig:
    return MySQLConfig(host="127.0.0.1", port=server.port, user="root")


def create_nasty_tables(master, replica_set, db: str) -> list[tuple[str, str]]:
    """One table per nasty name, each with a column of its own (``c<index>``)."""
    conn = master.connect()
    try:
        with conn.cursor() as cur:
            for index, table in enumerate(NASTY):
                cur.execute(f"CREATE TABLE {qualified(db, table)} (id INT PRIMARY KEY, {quote_ident(f'c{index}')} INT)")
    finally:
        conn.close()
    replica_set.sync()
    return [(db, table) for table in NASTY]


def one_by_one(server, names: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    conn = connect(config_of(server))
    try:
        return {name: show_create_table(conn, *name) for name in names}
    finally:
        conn.close()


@pytest.fixture
def replica_conn(replica):
    """An ordinary connection to the replica (multi-statements off), closed after the test."""
    conn = connect(config_of(replica))
    yield conn
    conn.close()


def tables_in(server, db: str) -> set[str]:
    return {str(r[0]) for r in server.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,))}


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_each_nasty_name_gets_its_own_ddl(master, replica, replica_set, fresh_db, chunk) -> None:
    names = create_nasty_tables(master, replica_set, fresh_db)
    shown = show_create_tables(config_of(replica), names, chunk=chunk)
    assert shown == one_by_one(replica, names)
    for index, table in enumerate(NASTY):
        ddl = shown[(fresh_db, table)]
        assert ddl.startswith(f"CREATE TABLE {quote_ident(table)} (")
        assert f"`c{index}` int(11)" in ddl
    assert tables_in(replica, fresh_db) == set(NASTY)  # nothing was dropped by a name


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_a_missing_table_fails_alone(master, replica, replica_set, fresh_db, chunk) -> None:
    """Missing first, last, in a row and across chunk boundaries; every other table still gets its DDL."""
    present = create_nasty_tables(master, replica_set, fresh_db)
    gone = [(fresh_db, "gone1"), (fresh_db, "gone;2"), (fresh_db, "gone`3"), (f"{fresh_db}_nodb", "t")]
    names = [gone[0], present[0], present[1], gone[1], gone[2], *present[2:6], gone[3], *present[6:], (fresh_db, "gone_last")]
    shown = show_create_tables(config_of(replica), names, chunk=chunk)
    expected = one_by_one(replica, present)
    assert {name: shown[name] for name in present} == expected
    codes = {name: shown[name].args[0] for name in names if name not in expected}
    assert codes == {
        gone[0]: 1146,
        gone[1]: 1146,
        gone[2]: 1146,
        gone[3]: 1146,  # its database does not exist either
        (fresh_db, "gone_last"): 1146,
    }
    assert all(isinstance(shown[name], pymysql.MySQLError) for name in codes)


def test_a_plain_connection_answers_the_same_one_at_a_time(master, replica, replica_set, fresh_db, replica_conn) -> None:
    names = create_nasty_tables(master, replica_set, fresh_db)
    assert show_create_tables(replica_conn, names) == one_by_one(replica, names)
    # Multi-statements stay off on every connection that does not ask for them.
    with pytest.raises(pymysql.err.ProgrammingError) as refused:
        query_all(replica_conn, "SELECT 1; SELECT 2")
    assert refused.value.args[0] == 1064


def test_plan_tables_takes_each_schema_from_the_batch(master, replica, replica_set, fresh_db, replica_conn) -> None:
    names = create_nasty_tables(master, replica_set, fresh_db)
    batch = plan_tables(replica_conn, fresh_db, names, dt.date(2026, 11, 20), 0, mysql=config_of(replica))
    assert batch.failed == {} and batch.left == []
    assert {name: plan.schema for name, plan in batch.plans.items()} == one_by_one(replica, names)


def test_plan_tables_fails_every_table_when_the_ddl_connection_cannot_open(master, replica_set, fresh_db, replica_conn) -> None:
    """Nothing listens on the port: each table fails planning, as it did one by one."""
    names = create_nasty_tables(master, replica_set, fresh_db)
    nowhere = MySQLConfig(host="127.0.0.1", port=free_port(), user="root", connect_timeout=2)
    batch = plan_tables(replica_conn, fresh_db, names, dt.date(2026, 11, 20), 0, mysql=nowhere)
    assert batch.plans == {} and batch.left == []
    assert sorted(batch.failed) == sorted(names)
    assert all(isinstance(exc, DumpFailed) and "cannot connect" in str(exc) for exc in batch.failed.values())


def test_find_tables_reads_partitions_of_partitioned_tables_only(master, replica_set, fresh_db, replica_conn) -> None:
    """Partitions come from the tables the server lists as partitioned, in partition order."""
    master.sql(f"CREATE TABLE {qualified(fresh_db, 'flat')} (id INT PRIMARY KEY) COMMENT 'partitioned'")
    master.sql(
        f"CREATE TABLE {qualified(fresh_db, 'ranged')} (id INT PRIMARY KEY) PARTITION BY RANGE (id)"
        " SUBPARTITION BY HASH (id) SUBPARTITIONS 2"
        " (PARTITION p_z VALUES LESS THAN (10), PARTITION p_a VALUES LESS THAN MAXVALUE)"
    )
    master.sql(
        f"CREATE TABLE {qualified(fresh_db, 'versioned')} (id INT PRIMARY KEY) WITH SYSTEM VERSIONING"
        " PARTITION BY SYSTEM_TIME (PARTITION p_hist HISTORY, PARTITION p_cur CURRENT)"
    )
    replica_set.sync()
    found = find_tables(replica_conn, [(fresh_db, "flat"), (fresh_db, "ranged"), (fresh_db, "versioned")])
    shape = {
        name[1]: (info.partitions, len(info.partition_bytes), info.versioned, info.system_time_partitions)
        for name, info in found.items()
    }
    assert shape == {
        "flat": ((), 0, False, False),
        "ranged": (("p_z", "p_a"), 2, False, False),
        "versioned": (("p_hist", "p_cur"), 2, True, True),
    }
