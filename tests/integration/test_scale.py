"""The biggest tables: a gigabyte in ten key ranges across two replicas; load control.

The gigabyte table is generated on each replica with the binlog off, from
the same deterministic expression, so both replicas hold the same rows
without replicating a gigabyte (which would cost minutes on two cores).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path

import lz4.frame
import pytest

from sandbox import MariaDB
from tests.integration.helpers import (
    checksum,
    drop_unreplicated,
    restore,
    run_tracker,
    tagged_queries,
    unreplicated,
    wait_for,
    write_config,
)
from tests.integration.test_run import DATE, dataset_dir, run_config, source_port, spawn, wait_all_ok
from tracker.db import qualified

GB_ROWS = 1_000_000  # ~1.02 GB of OUTFILE text: 992 binary bytes a row, NULs and backslashes escaped
MIB = 1024 * 1024


def create_same_table(servers: list[MariaDB], db: str, rows: int) -> None:
    """The same table on every server, written with the binlog off (in parallel)."""

    def create(server: MariaDB) -> None:
        unreplicated(
            server,
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.big (id INT PRIMARY KEY, b VARBINARY(1000) NOT NULL)",
            f"INSERT INTO {db}.big SELECT seq, REPEAT(UNHEX(SHA2(seq, 256)), 31) FROM {db}.seq_1_to_{rows}",
            f"ANALYZE TABLE {db}.big",
        )

    threads = [threading.Thread(target=create, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for server in servers:
        assert server.sql(f"SELECT COUNT(*) FROM {db}.big")[0][0] == rows, f"table not made on {server.port}"


def test_gigabyte_table_in_ten_ranges_on_two_replicas(master, replica, replica2, tmp_path) -> None:
    db = f"gb_{uuid.uuid4().hex[:8]}"
    servers = [replica, replica2]
    try:
        create_same_table(servers, db, GB_ROWS)
        size = replica.sql(f"SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'")[0][0]
        chunk_mb = max(1, size // MIB // 10)  # a tenth of the table
        dest = tmp_path / "dest"
        procs = [
            spawn(tmp_path, run_config(tmp_path, s, dest, db, workers=1, chunk_mb=chunk_mb), "run", "--date", DATE)
            for s in servers
        ]
        wait_all_ok(procs, timeout=600)

        directory = dataset_dir(dest, db, db, "big")
        manifest = json.loads((directory / "manifest.json").read_text())
        units = manifest["units"]
        assert 9 <= len(units) <= 12, f"{len(units)} units for chunk_mb={chunk_mb} of {size} bytes"
        assert manifest["rows"] == GB_ROWS and manifest["raw_bytes"] >= 10**9
        assert {source_port(u) for u in units} == {replica.port, replica2.port}, "both replicas take units"
        assert all(u["range"]["columns"] == ["id"] for u in units)
        planners = [p.output() for p in procs if "event=key_split" in p.output()]
        assert len(planners) == 1, "one host plans; the other waits for its plan on the master"
        assert "method=even" in planners[0], "a dense integer key is cut evenly, not walked"

        restored = f"{db}_restored"
        unreplicated(master, f"CREATE DATABASE {restored}")
        parts = (lz4.frame.decompress((dest / u["key"]).read_bytes()) for u in units)
        restore(master, restored, (directory / "schema.sql").read_text(), manifest, parts, log_bin=False)
        assert checksum(master, restored, "big") == checksum(replica, db, "big") == checksum(replica2, db, "big")
    finally:
        for server in servers:
            drop_unreplicated(server, db)
        drop_unreplicated(master, f"{db}_restored")


def make_rows(master: MariaDB, db: str, table: str, rows: int, replica_set) -> None:
    master.sql(f"CREATE TABLE {qualified(db, table)} (id INT PRIMARY KEY, b VARBINARY(1000) NOT NULL)")
    master.sql(f"INSERT INTO {qualified(db, table)} SELECT seq, RANDOM_BYTES(1000) FROM {db}.seq_1_to_{rows}")
    master.sql(f"ANALYZE TABLE {qualified(db, table)}")
    replica_set.sync()


def timed_dump(config: Path, table: str) -> float:
    started = time.monotonic()
    result = run_tracker(config, "dump", table, "--date", DATE, "--force", timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return time.monotonic() - started


def test_rate_limit_holds_on_average(master, replica, replica_set, fresh_db, tmp_path) -> None:
    """With ``follow`` the server writes a unit at its own speed; the limit is kept between units.

    Paced time is a floor on any machine, so only that is asserted.  For the
    floor to tell a limit from none, the limit is set from this machine's
    own unpaced time: low enough that the floor is three times that time.
    """
    make_rows(master, fresh_db, "t", 16000, replica_set)  # ~16 MB
    dest = f"file://{tmp_path / 'dest'}"
    free = timed_dump(write_config(tmp_path, replica, dest, chunk_mb=1, workers=2), f"{fresh_db}.t")
    manifest_path = tmp_path / "dest" / "main" / fresh_db / "t" / f"dt={DATE}" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    moved = manifest["raw_bytes"] / 1e6
    biggest = max(u["raw_bytes"] for u in manifest["units"]) / 1e6
    assert len(manifest["units"]) >= 8
    # Everything but a one-second burst and each worker's last unit (whose
    # debt is never paid) is paced: the floor at R MB/s is (moved - 2 * biggest) / R - 1 s.
    rate = round((moved - 2 * biggest) / (3 * free + 1), 3)
    floor = (moved - 2 * biggest) / rate - 1  # = 3 * free
    config = write_config(tmp_path, replica, dest, chunk_mb=1, workers=2, max_mb_per_second=rate)
    limited = timed_dump(config, f"{fresh_db}.t")
    assert limited >= floor - 0.1, f"limited to {rate:.2f} MB/s, took {limited:.1f} s for {moved:.1f} MB (floor {floor:.1f} s, unpaced {free:.1f} s)"


def test_run_pauses_while_the_replica_lags(master, replica, replica_set, fresh_db, tmp_path) -> None:
    master.sql(f"CREATE TABLE `{fresh_db}`.heartbeat (id INT PRIMARY KEY, ts DATETIME(6) NOT NULL)")
    master.sql(f"INSERT INTO `{fresh_db}`.heartbeat VALUES (1, UTC_TIMESTAMP(6) - INTERVAL 600 SECOND)")
    make_rows(master, fresh_db, "t", 100, replica_set)
    dest = tmp_path / "dest"
    config = run_config(
        tmp_path, replica, dest, fresh_db,
        tables={"include": [f"{fresh_db}\\.t"]},
        replication={"heartbeat_table": f"{fresh_db}.heartbeat", "max_lag_seconds": 60, "poll_seconds": 1},
    )
    # Each lag poll reads the heartbeat row: with userstat on, the replica
    # counts the reads, so the test waits for polls, not for seconds.
    replica.sql("SET GLOBAL userstat = 1")
    proc = spawn(tmp_path, config, "run", "--date", DATE)
    try:
        assert wait_for(lambda: "event=lag_pause" in proc.stderr() or proc.proc.poll() is not None, 60)
        polls = heartbeat_reads(replica, fresh_db)
        # paused, it stays paused: three more polls, each measuring 600 s of lag
        assert wait_for(lambda: heartbeat_reads(replica, fresh_db) >= polls + 3 or proc.proc.poll() is not None, 60)
        assert proc.proc.poll() is None, f"run ended while the replica lagged 600 s: {proc.output()}"
        assert not tagged_queries(replica), "a unit is dumped while the replica lags"
        assert not (dataset_dir(dest, fresh_db, fresh_db, "t") / "_SUCCESS").exists()
        master.sql(f"UPDATE `{fresh_db}`.heartbeat SET ts = UTC_TIMESTAMP(6) WHERE id = 1")
        assert proc.wait(timeout=60) == 0, proc.output()
    finally:
        proc.kill()
        replica.sql("SET GLOBAL userstat = 0")
    assert (dataset_dir(dest, fresh_db, fresh_db, "t") / "_SUCCESS").exists()
    log = proc.output()
    assert "event=lag_pause" in log and "event=lag_resume" in log, log


def heartbeat_reads(replica: MariaDB, db: str) -> int:
    """Rows of ``db``.heartbeat read on ``replica`` since userstat was turned on."""
    rows = replica.sql(
        "SELECT ROWS_READ FROM information_schema.TABLE_STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'heartbeat'",
        (db,),
    )
    return int(rows[0][0]) if rows else 0


def claim_store(master: MariaDB, namespace: str, host: str, lease_seconds: int = 300):
    from tracker.replicaset.claims import ClaimStore, Owner
    from tracker.config import LocksConfig, MySQLConfig

    store = ClaimStore(
        MySQLConfig(host="127.0.0.1", port=master.port, user="root"),
        LocksConfig(lease_seconds=lease_seconds),
        Owner(host, 1),
        namespace,
    )
    store.ensure_table()
    return store


def stored_plan(master: MariaDB, namespace: str, db: str, table: str, plan: dict) -> None:
    """Put a plan on the master as if another host had planned the table first."""
    store = claim_store(master, namespace, "elsewhere")
    try:
        assert store.shared_plan(db, table, dt.date.fromisoformat(DATE), lambda: plan) == plan
    finally:
        store.close()


THREE_RANGES = {
    "version": 1,
    "key": {"index": "PRIMARY", "columns": ["id"]},
    "units": [
        {"partition": None, "bytes": 0, "range": {"columns": ["id"], "lower": None, "upper": ["30"]}},
        {"partition": None, "bytes": 0, "range": {"columns": ["id"], "lower": ["30"], "upper": ["70"]}},
        {"partition": None, "bytes": 0, "range": {"columns": ["id"], "lower": ["70"], "upper": None}},
    ],
}


def test_run_dumps_the_plan_stored_on_the_master(master, replica, replica_set, fresh_db, tmp_path) -> None:
    """Whatever this host would plan (chunk_mb: 0 means one unit), it dumps the stored plan."""
    make_rows(master, fresh_db, "t", 100, replica_set)
    stored_plan(master, fresh_db, fresh_db, "t", THREE_RANGES)
    dest = tmp_path / "dest"
    proc = spawn(tmp_path, run_config(tmp_path, replica, dest, fresh_db, chunk_mb=0), "run", "--date", DATE)
    assert proc.wait(timeout=120) == 0, proc.output()
    manifest = json.loads((dataset_dir(dest, fresh_db, fresh_db, "t") / "manifest.json").read_text())
    assert [u["rows"] for u in manifest["units"]] == [29, 40, 31]
    assert [u["range"]["where"] for u in manifest["units"]] == ["`id` < 30", "`id` >= 30 AND `id` < 70", "`id` >= 70"]


def test_a_stored_plan_that_no_longer_fits_fails_that_table_alone(master, replica, replica_set, fresh_db, tmp_path) -> None:
    make_rows(master, fresh_db, "t", 100, replica_set)
    make_rows(master, fresh_db, "other", 10, replica_set)
    hostile = json.loads(json.dumps(THREE_RANGES))
    hostile["units"][1]["range"]["lower"] = ["30 OR 1=1"]
    stored_plan(master, fresh_db, fresh_db, "t", hostile)
    dest = tmp_path / "dest"
    proc = spawn(tmp_path, run_config(tmp_path, replica, dest, fresh_db), "run", "--date", DATE)
    assert proc.wait(timeout=120) == 1, proc.output()
    assert "planning failed: boundary value '30 OR 1=1' is not a valid int for column 'id'" in proc.output()
    assert "Traceback" not in proc.output()
    assert (dataset_dir(dest, fresh_db, fresh_db, "other") / "_SUCCESS").exists()
    assert not dataset_dir(dest, fresh_db, fresh_db, "t").exists()


def planning(master: MariaDB, namespace: str, table: str) -> list[tuple]:
    """(host, plan) of the plans row of ``table`` on the master; [] without one."""
    return [
        tuple(row)
        for row in master.sql(
            "SELECT host, plan FROM tracker.plans WHERE namespace = %s AND tbl = %s AND ds = %s", (namespace, table, DATE)
        )
    ]


def test_one_host_plans_the_others_wait_and_take_over_if_it_dies(master, fresh_db) -> None:
    date = dt.date.fromisoformat(DATE)
    first, second = claim_store(master, fresh_db, "first"), claim_store(master, fresh_db, "second")
    try:
        release = threading.Event()
        got: dict[str, dict] = {}

        def slow_plan() -> dict:
            release.wait(10)
            return {"by": "first"}

        planner = threading.Thread(target=lambda: got.setdefault("first", first.shared_plan(fresh_db, "t", date, slow_plan)))
        planner.start()
        # the first host holds the planning lease now: its row, without a plan, is on the master
        assert wait_for(lambda: planning(master, fresh_db, "t") == [("first", None)], 30), planning(master, fresh_db, "t")
        # Not waiting means returning while the plan is still being made (release is not set):
        # a host that waited would get the first host's plan, not None.
        assert second.shared_plan(fresh_db, "t", date, lambda: {"by": "second"}, wait=False) is None
        waiter = threading.Thread(
            target=lambda: got.setdefault("second", second.shared_plan(fresh_db, "t", date, lambda: {"by": "second"}))
        )
        asked = second.round_trips
        waiter.start()
        # Each look costs two statements (the plan, a takeover attempt): after three looks it still waits.
        assert wait_for(lambda: second.round_trips >= asked + 6 or not waiter.is_alive(), 30)
        assert "second" not in got, "the second host did not wait for the plan being made"
        release.set()
        planner.join(10)
        waiter.join(10)
        assert got == {"first": {"by": "first"}, "second": {"by": "first"}}

        # A planner that died: its row has no plan and its lease runs out.
        started = time.monotonic()
        master.sql(
            f"INSERT INTO tracker.plans (namespace, db, tbl, ds, host, token, expires_at)"
            f" VALUES ('{fresh_db}', '{fresh_db}', 'dead', '{DATE}', 'gone', REPEAT('0', 32), NOW(6) + INTERVAL 1 SECOND)"
        )
        assert second.shared_plan(fresh_db, "dead", date, lambda: {"by": "second"}) == {"by": "second"}
        # the lease is a floor on any machine; the ceiling only says it took over (generous)
        assert 0.9 <= time.monotonic() - started < 60

        # A planner that fails gives the planning back at once.
        def broken() -> dict:
            raise RuntimeError("planning failed")

        with pytest.raises(RuntimeError):
            first.shared_plan(fresh_db, "broken", date, broken)
        assert planning(master, fresh_db, "broken") == [], "the failed planner's row (lease: 300 s) is still there"
        assert second.shared_plan(fresh_db, "broken", date, lambda: {"by": "second"}) == {"by": "second"}
    finally:
        first.close()
        second.close()


def test_progress_bar_on_a_terminal_plain_lines_under_cron(master, replica, replica_set, fresh_db, tmp_path) -> None:
    import os
    import subprocess

    from tests.integration.helpers import tracker_argv

    make_rows(master, fresh_db, "t", 4000, replica_set)
    config = write_config(tmp_path, replica, f"file://{tmp_path / 'dest'}", chunk_mb=1)
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen(
            tracker_argv(config, "dump", f"{fresh_db}.t", "--date", DATE), stdout=subprocess.PIPE, stderr=secondary
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(primary)
    terminal = b"".join(chunks).decode(errors="replace")
    assert "\r[" in terminal and "units" in terminal and "100%" in terminal, terminal[-2000:]
    assert "event=unit_done" in terminal  # log lines still appear, each on a line cleared of the bar

    piped = run_tracker(config, "dump", f"{fresh_db}.t", "--date", DATE, "--force")
    assert piped.returncode == 0
    assert "\r" not in piped.stderr.decode() and "units  " not in piped.stderr.decode()  # cron: log lines only


def test_a_stored_plan_missing_a_partition_fails_the_table(master, replica, replica_set, fresh_db, tmp_path) -> None:
    master.sql(
        f"CREATE TABLE {qualified(fresh_db, 'p')} (id INT PRIMARY KEY) PARTITION BY RANGE (id)"
        " (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE)"
    )
    master.sql(f"INSERT INTO {qualified(fresh_db, 'p')} VALUES (1), (20)")
    replica_set.sync()
    # planned before p1 existed: p1's rows would be missing from a "complete" dataset
    stored_plan(master, fresh_db, fresh_db, "p", {"version": 1, "key": None, "units": [{"partition": "p0", "range": None}]})
    dest = tmp_path / "dest"
    proc = spawn(tmp_path, run_config(tmp_path, replica, dest, fresh_db), "run", "--date", DATE)
    assert proc.wait(timeout=120) == 1, proc.output()
    assert "made for partitions ['p0'], the table has ['p0', 'p1']" in proc.output()
    assert not dataset_dir(dest, fresh_db, fresh_db, "p").exists()


def test_locks_shows_tables_being_planned(master, replica, fresh_db, tmp_path) -> None:
    claim_store(master, fresh_db, "setup").close()  # the tables exist
    master.sql(
        "INSERT INTO tracker.plans (namespace, db, tbl, ds, host, token, expires_at)"
        f" VALUES ('{fresh_db}', 'shop', 'orders', '{DATE}', 'db-7', REPEAT('0', 32), NOW(6) + INTERVAL 300 SECOND)"
    )
    config = run_config(tmp_path, replica, tmp_path / "dest", fresh_db)
    result = run_tracker(config, "locks", "--date", DATE, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    lines = [line.split() for line in result.stdout.decode().splitlines()]
    assert ["planning", "shop.orders", "(its", "units)", "db-7"] == lines[1][:5], lines
