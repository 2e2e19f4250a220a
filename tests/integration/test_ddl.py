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
import time

from tests.integration.helpers import held_dumps, held_table, start_tracker, wait_for, write_config
from tracker.db import qualified

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
    manifests = {t: json.loads((dest / fresh_db / fresh_db / t / "dt=2026-11-01" / "manifest.json").read_text()) for t in ("small", "big")}
    assert manifests["small"]["rows"] == 3 and manifests["big"]["rows"] == BIG_ROWS
    small_pos = manifests["small"]["units"][0]["position"]
    big_pos = manifests["big"]["units"][0]["position"]
    assert big_pos["gtid"] != small_pos["gtid"], "big was redone from a fresh snapshot, after the ALTER"
    assert (dest / fresh_db / fresh_db / "big" / "dt=2026-11-01" / "_SUCCESS").exists()
