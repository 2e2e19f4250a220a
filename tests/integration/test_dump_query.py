"""The dump statement's answer, read on the worker's own thread (``DumpQuery``).

The worker sends the OUTFILE statement and follows its file; the answer is
read only once the socket holds it.  A wait that times out must leave the
answer for later: if it were taken as the answer, the statement's rows
would be lost and every later statement on the connection would read the
answer of the one before it.
"""

from __future__ import annotations

import os
import time

from tracker.db import SESSION_SETTINGS, kill_query
from tracker.dump.outfile import DumpQuery

from .helpers import held_table


def _statement(db: str, table: str, path) -> str:
    return f"SELECT * FROM `{db}`.`{table}` INTO OUTFILE '{path}'"


def _kill(server):
    def kill(connection_id: int) -> None:
        conn = server.connect()
        try:
            kill_query(conn, connection_id)
        finally:
            conn.close()

    return kill


def test_waits_that_time_out_leave_the_answer_for_later(master, replica, replica_set, fresh_db) -> None:
    master.sql(f"CREATE TABLE {fresh_db}.t (id INT PRIMARY KEY)")
    master.sql(f"INSERT INTO {fresh_db}.t VALUES (1), (2), (3)")
    replica_set.sync()
    conn = replica.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(SESSION_SETTINGS)
        paths = [replica.outfile_dir / f"dq-{os.getpid()}-{i}.tsv" for i in range(3)]
        with held_table(replica, f"{fresh_db}.t") as release:
            query = DumpQuery(conn, _statement(fresh_db, "t", paths[0]), _kill(replica))
            query.start()
            assert not query.done()
            assert not query.wait(0.05)  # still held: no answer yet, and none made up
            release()
            assert query.wait(30)
        assert query.outcome().error is None and query.outcome().rows == 3
        # The connection is in step: each later statement reads its own answer.
        for index, path in enumerate(paths[1:], start=1):
            master.sql(f"INSERT INTO {fresh_db}.t VALUES ({10 + index})")
            replica_set.sync()
            query = DumpQuery(conn, _statement(fresh_db, "t", path), _kill(replica))
            query.start()
            assert query.wait(30) and query.outcome().rows == 3 + index
        assert [len(p.read_bytes().splitlines()) for p in paths] == [3, 4, 5]
    finally:
        conn.close()
        for path in replica.outfile_dir.glob(f"dq-{os.getpid()}-*"):
            path.unlink()


def test_stop_kills_the_statement_and_reads_its_answer(master, replica, replica_set, fresh_db) -> None:
    master.sql(f"CREATE TABLE {fresh_db}.t (id INT PRIMARY KEY)")
    master.sql(f"INSERT INTO {fresh_db}.t VALUES (1)")
    replica_set.sync()
    conn = replica.connect()
    path = replica.outfile_dir / f"dq-{os.getpid()}-stop.tsv"
    try:
        with held_table(replica, f"{fresh_db}.t"):
            query = DumpQuery(conn, _statement(fresh_db, "t", path), _kill(replica))
            query.start()
            started = time.monotonic()
            query.stop(timeout=30)
            assert time.monotonic() - started < 30
        assert query.done() and query.outcome().error is not None
        assert "interrupted" in query.describe_error().lower() or "1317" in query.describe_error()
        with conn.cursor() as cur:  # the killed statement's answer was read: the next one gets its own
            cur.execute("SELECT 42")
            assert cur.fetchall() == ((42,),)
    finally:
        conn.close()
        path.unlink(missing_ok=True)
