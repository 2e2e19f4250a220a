"""A DDL statement replicated behind a running dump is let through.

The dump's transaction holds a metadata lock on every table it read; an
``ALTER TABLE`` of such a table, replicated from the master, waits behind
it.  After ``ddl_wait_seconds`` tracker ends its transactions, the ALTER
applies, and the interrupted unit is dumped again from a fresh snapshot.

The dump of ``big`` is held by the test (``held_table``: its query waits
for a metadata lock, its transaction still holding the one on ``small``)
until the ALTER has been let through, so the test does not depend on how
long this machine takes to dump a table; ``big`` needs only a few rows.
"""

from __future__ import annotations

import json
import re
import time
from typing import Iterator

import pytest

from tests.integration.helpers import held_dumps, held_table, start_tracker, wait_for, write_config
from tracker.db import qualified
from tracker.replicaset.mdl import MDL_INSTRUMENT

BIG_ROWS = 1_000


def create_big_on_replica(replica, db: str) -> None:
    conn = replica.connect(database=db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")  # dropped with the database by the master's DROP
            cur.execute("CREATE TABLE big (id INT PRIMARY KEY, b VARBINARY(1100))")
            cur.execute(f"INSERT INTO big SELECT seq, CONCAT(RANDOM_BYTES(500), x'005c', RANDOM_BYTES(500)) FROM seq_1_to_{BIG_ROWS}")
    finally:
        conn.close()


def test_alter_of_a_table_read_by_a_running_dump(master, replica, replica_set, fresh_db, tmp_path) -> None:
    master.sql(f"CREATE TABLE {qualified(fresh_db, 'small')} (id INT PRIMARY KEY)")
    master.sql(f"INSERT INTO {qualified(fresh_db, 'small')} VALUES (1), (2), (3)")
    replica_set.sync()
    create_big_on_replica(replica, fresh_db)
    dest = tmp_path / "dest"
    config = write_config(
        tmp_path,
        replica,
        f"file://{dest}",
        namespace=fresh_db,
        workers=1,
        ddl_wait_seconds=3,
        tables={"include": [rf"{fresh_db}\..*"], "priority": [rf"{fresh_db}\.small"]},
        replication={"wait_seconds": 30, "poll_seconds": 1},
        run_lock_dir=str(tmp_path),
    )
    with held_table(replica, f"{fresh_db}.big") as release:
        proc = start_tracker(config, "run", "--date", "2026-11-01")
        try:
            assert wait_for(lambda: any("`big`" in str(info) for _id, info in held_dumps(replica)), 60)
            master.sql(f"ALTER TABLE {qualified(fresh_db, 'small')} ADD COLUMN added INT")
            altered = time.monotonic()
            replica_set.sync(timeout=3 + 60)  # applied on the replica: the SQL thread was released
            released = time.monotonic() - altered
            release()  # now big may be dumped, from a snapshot taken after the ALTER
            _out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    log = err.decode()
    assert proc.returncode == 0, log
    assert released < 3 + 60
    assert "replication_waits_for_metadata_lock" in log and "snapshot_refresh_requested" in log, log
    assert "event=ddl_blocker_unknown action=refresh_all" in log, log  # no lock listing on this replica
    manifests = {t: json.loads((dest / fresh_db / fresh_db / t / "dt=2026-11-01" / "manifest.json").read_text()) for t in ("small", "big")}
    assert manifests["small"]["rows"] == 3 and manifests["big"]["rows"] == BIG_ROWS
    small_pos = manifests["small"]["units"][0]["position"]
    big_pos = manifests["big"]["units"][0]["position"]
    assert big_pos["gtid"] != small_pos["gtid"], "big was redone from a fresh snapshot, after the ALTER"
    assert (dest / fresh_db / fresh_db / "big" / "dt=2026-11-01" / "_SUCCESS").exists()


# --- ending only the blocker ---------------------------------------------------------
#
# ``x`` is dumped first (priority) and committed; the worker that dumped it
# keeps its shared metadata lock on ``x`` (its snapshot transaction is
# open) and goes on to one unit of ``y``, which the test holds; the other
# worker holds the other unit of ``y`` (two partitions: two units, never
# batched).  An ALTER of ``x`` replicated behind them is blocked by the
# first worker alone: where the server lists metadata locks, only that
# worker's unit of ``y`` is interrupted and redone; without a listing both
# are.


@pytest.fixture
def ps_replica(replica_set, replica2) -> Iterator:
    """replica2 restarted with performance_schema and its MDL instrument on; restored after."""
    options = ["--performance-schema=ON", f"--performance-schema-instrument={MDL_INSTRUMENT}=ON"]
    replica2.options = options
    replica2.restart()
    replica2.sql("SET GLOBAL read_only = ON")  # a restart forgets it
    try:
        yield replica2
    finally:
        replica2.options = []
        replica2.restart()
        replica2.sql("SET GLOBAL read_only = ON")
        replica_set.sync()


@pytest.fixture
def mli_replica(replica) -> Iterator:
    """replica with MariaDB's metadata_lock_info plugin, uninstalled after (other tests see no listing)."""
    replica.sql("INSTALL SONAME 'metadata_lock_info'")
    try:
        yield replica
    finally:
        replica.sql("UNINSTALL SONAME 'metadata_lock_info'")


def _alter_behind_two_held_units(server, master, replica_set, db: str, tmp_path) -> tuple[str, dict, dict[int, int]]:
    """Run tracker on ``server`` through the scenario above; (log, manifests, unit index by worker connection)."""
    master.sql(f"CREATE TABLE {qualified(db, 'x')} (id INT PRIMARY KEY)")
    master.sql(f"INSERT INTO {qualified(db, 'x')} VALUES (1), (2), (3)")
    master.sql(f"CREATE TABLE {qualified(db, 'y')} (id INT PRIMARY KEY, v VARCHAR(40)) PARTITION BY HASH (id) PARTITIONS 2")
    master.sql(f"INSERT INTO {qualified(db, 'y')} VALUES " + ", ".join(f"({i}, MD5({i}))" for i in range(1, 11)))
    replica_set.sync()
    dest = tmp_path / "dest"
    config = write_config(
        tmp_path,
        server,
        f"file://{dest}",
        namespace=db,
        workers=2,
        ddl_wait_seconds=2,
        tables={"include": [rf"{db}\..*"], "priority": [rf"{db}\.x"]},
        replication={"wait_seconds": 30, "poll_seconds": 1},
        run_lock_dir=str(tmp_path),
    )
    with held_table(server, f"{db}.y") as release:
        proc = start_tracker(config, "run", "--date", "2026-11-02")
        try:
            assert wait_for(lambda: len(held_dumps(server)) == 2, 60), "both units of y never reached the server"
            unit_of = {
                int(conn_id): int(re.search(r"/part-(\d+)", str(info)).group(1)) for conn_id, info in held_dumps(server)
            }
            master.sql(f"ALTER TABLE {qualified(db, 'x')} ADD COLUMN added INT")
            replica_set.sync(timeout=2 + 60)  # applied on the replica: the blocker was ended
            release()
            _out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    log = err.decode()
    assert proc.returncode == 0, log
    root = dest / db / db
    manifests = {t: json.loads((root / t / "dt=2026-11-02" / "manifest.json").read_text()) for t in ("x", "y")}
    assert manifests["x"]["rows"] == 3 and manifests["y"]["rows"] == 10
    assert (root / "y" / "dt=2026-11-02" / "_SUCCESS").exists()
    return log, manifests, unit_of


def _blocker_connections(log: str, method: str) -> list[int]:
    found = re.findall(rf"event=ddl_blocker_found method={method} connections=([0-9,]+|none)", log)
    assert found, log
    assert "ddl_blocker_unknown" not in log, log
    return [int(c) for c in found[0].split(",")] if found[0] != "none" else []


@pytest.mark.parametrize("method", ["metadata_lock_info", "performance_schema"])
def test_alter_ends_only_the_transaction_that_blocks_it(method, request, master, replica_set, fresh_db, tmp_path) -> None:
    server = request.getfixturevalue("mli_replica" if method == "metadata_lock_info" else "ps_replica")
    log, manifests, unit_of = _alter_behind_two_held_units(server, master, replica_set, fresh_db, tmp_path)
    blockers = _blocker_connections(log, method)
    assert len(blockers) == 1 and blockers[0] in unit_of, (blockers, unit_of, log)
    original = manifests["x"]["units"][0]["position"]  # x was dumped before the ALTER
    positions = {u["index"]: u["position"] for u in manifests["y"]["units"]}
    redone = unit_of[blockers[0]]
    (kept,) = set(positions) - {redone}
    assert positions[kept] == original, "the worker that did not block kept its unit and its snapshot"
    assert positions[redone] != original, "the blocker's unit was redone from a snapshot after the ALTER"
    assert "units_interrupted=1" in log, log


def test_without_a_lock_listing_every_transaction_is_ended(replica, master, replica_set, fresh_db, tmp_path) -> None:
    assert replica.sql("SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO'") == [(0,)]
    assert replica.sql("SELECT @@performance_schema") == [(0,)]
    log, manifests, _unit_of = _alter_behind_two_held_units(replica, master, replica_set, fresh_db, tmp_path)
    assert "event=ddl_blocker_unknown action=refresh_all" in log and "ddl_blocker_found" not in log, log
    original = manifests["x"]["units"][0]["position"]
    assert all(u["position"] != original for u in manifests["y"]["units"]), "both workers' units were redone"
    assert "units_interrupted=2" in log, log
