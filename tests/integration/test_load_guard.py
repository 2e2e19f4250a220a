"""``replication.max_threads_running``: a run waits while the replica is busy, then completes.

The test makes the replica busy itself and holds it so: connections running
``SELECT SLEEP(600)`` count in ``Threads_running`` until the test kills
their queries.  Nothing depends on timing: the test waits for the run's
``event=load_pause`` line, checks that no part was written meanwhile,
releases the sleepers, and the run then finishes.  The run's metrics file
(``metrics_file``) is checked on the way.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import lz4.frame
import pymysql
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox import MariaDB
from tests.integration.helpers import tracker_argv, wait_for, write_config
from tracker.db import qualified
from tracker.store.layout import encode_segment
from tracker.store.textformat import BlockParser

DATE = "2026-11-02"
ROWS = 50
SLEEPERS = 8
ER_QUERY_INTERRUPTED = 1317


def threads_running(server: MariaDB) -> int:
    return int(server.sql("SHOW GLOBAL STATUS LIKE 'Threads_running'")[0][1])


class Sleepers:
    """``count`` connections each running ``SELECT SLEEP(600)`` until :meth:`release` kills the queries."""

    def __init__(self, server: MariaDB, count: int) -> None:
        self.server = server
        self.conns = [server.connect() for _ in range(count)]
        self.ids = [conn.thread_id() for conn in self.conns]
        self.threads = [threading.Thread(target=self._sleep, args=(conn,), daemon=True) for conn in self.conns]

    @staticmethod
    def _sleep(conn) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT SLEEP(600)")
                cur.fetchall()
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != ER_QUERY_INTERRUPTED:  # what KILL QUERY does to it
                raise

    def __enter__(self) -> "Sleepers":
        for thread in self.threads:
            thread.start()
        assert wait_for(lambda: self.sleeping() == len(self.ids), 30), "sleepers did not start"
        return self

    def sleeping(self) -> int:
        marks = ",".join(str(i) for i in self.ids)
        return len(self.server.sql(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks}) AND INFO LIKE 'SELECT SLEEP%%'"))

    def release(self) -> None:
        for conn_id in self.ids:
            self.server.sql(f"KILL QUERY {int(conn_id)}")
        for thread in self.threads:
            thread.join(timeout=30)

    def __exit__(self, *exc: object) -> None:
        if any(t.is_alive() for t in self.threads):
            self.release()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def table(master, replica_set) -> Iterator[str]:
    db = f"lg_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {db}")
    master.sql(f"CREATE TABLE {qualified(db, 't')} (id INT PRIMARY KEY, b VARBINARY(40))")
    conn = master.connect(database=db)
    try:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, b"\x00\t\n\\" + str(i).encode()) for i in range(ROWS)])
    finally:
        conn.close()
    replica_set.sync()
    yield db
    master.sql(f"DROP DATABASE {db}")
    replica_set.sync()


def rows_of(part: Path) -> list[tuple[bytes | None, ...]]:
    parser = BlockParser(2)
    blocks = list(parser.feed(lz4.frame.decompress(part.read_bytes()))) + list(parser.finish())
    rows: list[tuple[bytes | None, ...]] = []
    for block in blocks:
        rows += zip(*(column.values() for column in block.columns))
    return rows


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the metrics file, as the Prometheus client library parses it."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_run_pauses_while_threads_running_is_high_then_completes(replica, table, tmp_path) -> None:
    dest = tmp_path / "dest"
    metrics_file = tmp_path / "textfile" / "tracker.prom"
    metrics_file.parent.mkdir()
    (tmp_path / "lock").mkdir()
    limit = threads_running(replica) + 3  # idle plus a margin; the sleepers push it well above
    config = write_config(
        tmp_path,
        replica,
        f"file://{dest}",
        namespace=table,
        tables={"include": [rf"{table}\..*"]},
        skip_file=str(tmp_path / "skip"),
        run_lock_dir=str(tmp_path / "lock"),
        workers=1,
        replication={"max_threads_running": limit, "poll_seconds": 1},
        metrics_file=str(metrics_file),
    )
    err_path = tmp_path / "stderr.txt"
    with Sleepers(replica, SLEEPERS) as sleepers:
        assert threads_running(replica) > limit
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(tracker_argv(config, "run", "--date", DATE), stdout=subprocess.PIPE, stderr=err)
        try:
            paused = wait_for(lambda: "event=load_pause" in err_path.read_text(), 120, interval=0.1)
            assert paused, err_path.read_text()
            directory = dest / table / encode_segment(table) / "t" / f"dt={DATE}"
            assert not directory.exists() or not list(directory.glob("part-*")), "a unit was dumped while paused"
            assert proc.poll() is None
            sleepers.release()
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = err_path.read_text()
    assert proc.returncode == 0, stderr
    pause = re.search(r"event=load_pause threads_running=(\d+) max=(\d+)", stderr)
    assert pause and int(pause.group(1)) > limit and int(pause.group(2)) == limit, stderr
    assert "event=load_resume" in stderr and stderr.index("event=load_resume") > stderr.index("event=load_pause")
    assert (directory / "_SUCCESS").is_file()
    server_rows = [(str(i).encode(), bytes(b)) for i, b in replica.sql(f"SELECT id, b FROM {qualified(table, 't')} ORDER BY id")]
    assert sorted(rows_of(directory / "part-00000.tsv.lz4"), key=lambda r: int(r[0])) == server_rows

    # The run's metrics: parsed by the Prometheus client library, values from the dataset.
    manifest = json.loads((directory / "manifest.json").read_text())
    got = samples(metrics_file.read_text())
    mine = (("command", "run"), ("namespace", table))
    assert got[("tracker_units_total", tuple(sorted(mine + (("result", "done"),))))] == len(manifest["units"])
    assert got[("tracker_units_total", tuple(sorted(mine + (("result", "failed"),))))] == 0
    assert got[("tracker_rows_total", mine)] == ROWS == manifest["rows"]
    assert got[("tracker_bytes_total", mine)] == manifest["bytes"]
    assert got[("tracker_last_success_timestamp_seconds", mine)] == got[("tracker_last_run_timestamp_seconds", mine)]
    assert abs(got[("tracker_last_run_timestamp_seconds", mine)] - time.time()) < 300
    assert got[("tracker_last_exit_status", mine)] == 0
    assert 0 <= got[("tracker_replica_lag_seconds", mine)] < 3600
    assert got[("tracker_run_duration_seconds", mine)] > 0
