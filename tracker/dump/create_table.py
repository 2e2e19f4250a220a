"""``SHOW CREATE TABLE``: the ``schema.sql`` of each dataset, one table at a time or a hundred per round trip."""

from __future__ import annotations

from typing import Sequence

import pymysql
from pymysql.constants import CLIENT

from tracker.config import MySQLConfig
from tracker.db import connect, error_code, qualified, query_one, quote_ident
from tracker.errors import DumpFailed


def show_create_table(conn: pymysql.Connection, db: str, table: str) -> str:
    row = query_one(conn, f"SHOW CREATE TABLE {quote_ident(db)}.{quote_ident(table)}")
    assert row is not None
    return str(row[1])


# SHOW CREATE TABLE statements per query on a multi-statement connection:
# 100 answers are a few tens of KiB, and the round trip is paid once.
SHOW_CHUNK = 100


def show_create_tables(
    source: MySQLConfig | pymysql.Connection, names: Sequence[tuple[str, str]], chunk: int = SHOW_CHUNK
) -> dict[tuple[str, str], str | pymysql.MySQLError]:
    """``SHOW CREATE TABLE`` of many tables, ``chunk`` statements per round trip.

    No catalog view prints the DDL that SHOW CREATE TABLE prints, and one
    statement per table costs one round trip per table.  Given a config, the
    statements go many to a query over a short-lived connection of its own
    with multi-statements on (no other connection has them on); given a
    connection, one to a query unless it has them on.  Names only reach the
    SQL through ``quote_ident``, so none can end its statement and start
    another.  A table the server cannot show (dropped meanwhile: 1146) maps
    to its error and fails alone; an error that is not the statement's own
    (the connection lost) is raised.
    """
    if not names:
        return {}
    if not isinstance(source, MySQLConfig):
        if not source.client_flag & CLIENT.MULTI_STATEMENTS:
            chunk = 1
        return _show_create_all(source, names, chunk)
    conn = connect(source, multi_statements=True)
    try:
        return _show_create_all(conn, names, chunk)
    finally:
        conn.close()


def _show_create_all(
    conn: pymysql.Connection, names: Sequence[tuple[str, str]], chunk: int
) -> dict[tuple[str, str], str | pymysql.MySQLError]:
    shown: dict[tuple[str, str], str | pymysql.MySQLError] = {}
    pending = list(names)
    while pending:
        batch = pending[:chunk]
        # The server stops a multi-statement query at its first error: the
        # statements after the failed one go again in the next query.
        pending = batch[_show_create_chunk(conn, batch, shown) :] + pending[chunk:]
    return shown


def _show_create_chunk(
    conn: pymysql.Connection, batch: list[tuple[str, str]], shown: dict[tuple[str, str], str | pymysql.MySQLError]
) -> int:
    """Send ``batch`` as one query, record each answer in ``shown``; how many statements were answered."""
    sql = ";".join(f"SHOW CREATE TABLE {qualified(db, table)}" for db, table in batch)
    with conn.cursor() as cur:
        for index, name in enumerate(batch):
            try:
                if index == 0:
                    cur.execute(sql)
                elif not cur.nextset():
                    raise DumpFailed(f"SHOW CREATE TABLE: the server answered {index} of {len(batch)} statements")
            except pymysql.MySQLError as exc:
                code = error_code(exc)
                if code is None or code >= 2000:  # a client error: the connection, not this table
                    raise
                shown[name] = exc
                return index + 1
            row = cur.fetchone()
            assert row is not None
            shown[name] = str(row[1])
    return len(batch)
