"""Many small tables: two replicas at once dump each exactly once, in few master round trips.

Small one-unit tables are planned, claimed, checked and finished in batches
(``tracker/dump/batched.py``, ``tracker/replicaset/batches.py``).  The
round trips are counted twice: by tracker itself (``master_queries=`` on
its ``event=run_done`` line, a counter in ``ClaimStore.execute``) and by the
master (the ``Questions`` status delta over both runs, which also counts
connection set-up), and the counter must not exceed what the master saw.
"""

from __future__ import annotations

import json
import re
import signal
import uuid
from decimal import Decimal

import lz4.frame

from tests.integration.helpers import held_table, restore, run_tracker, wait_for
from tests.integration.test_run import (
    DATE,
    LEASE,
    LOCK_SCHEMA,
    assert_complete,
    claims,
    dataset_dir,
    describe_claims,
    digest,
    dump_queries,
    ensure_replicating,
    kill_dump_queries,
    lease_run_out,
    make_table,
    run_config,
    shown,
    source_port,
    spawn,
    start_held,
    visible_files,
    wait_all_ok,
)

TABLES = 200
MAX_ROUND_TRIPS_PER_TABLE = 2.0
RUN_DONE = re.compile(r"event=run_done units dumped here=(\d+) .* master_queries=(\d+)")


def rows_of(index: int) -> list[tuple]:
    """Three rows per table, different in every table, with the escapes OUTFILE must get right."""
    return [
        (1, f"t{index} tab\there", Decimal(f"{index}.25"), b"\x00\\\n" + bytes([index % 256])),
        (2, f"ünïcode \\ {index}", Decimal(f"-{index}.50"), None),
        (3, None, Decimal("0.00"), b""),
    ]


def create_tables(master, db: str) -> None:
    conn = master.connect(database=db)
    try:
        with conn.cursor() as cur:
            for index in range(TABLES):
                cur.execute(
                    f"CREATE TABLE t{index:03d} (id INT PRIMARY KEY, s VARCHAR(40) CHARACTER SET utf8mb4,"
                    " d DECIMAL(10,2), b VARBINARY(16))"
                )
                cur.executemany(f"INSERT INTO t{index:03d} VALUES (%s, %s, %s, %s)", rows_of(index))
    finally:
        conn.close()


def questions(master) -> int:
    return int(master.sql("SHOW GLOBAL STATUS LIKE 'Questions'")[0][1])


def test_two_replicas_dump_many_small_tables_once_each(master, replica, replica2, replica_set, fresh_db, tmp_path) -> None:
    db = fresh_db
    create_tables(master, db)
    replica_set.sync()
    dest = tmp_path / "dest"
    dest.mkdir()

    # What a dump that failed midway leaves: a part of its own (garbage) and
    # a part the run's plan does not have.  The run replaces the first and
    # deletes the second (assert_complete allows exactly the manifest's parts).
    leftover = dataset_dir(dest, db, db, "t000")
    leftover.mkdir(parents=True)
    for name in ("part-00000.tsv.lz4", "part-00002.tsv.lz4"):
        (leftover / name).write_bytes(b"left by a failed dump")

    before = questions(master)
    procs = [spawn(tmp_path, run_config(tmp_path, server, dest, db, workers=2), "run", "--date", DATE) for server in (replica, replica2)]
    wait_all_ok(procs, timeout=300)
    asked = questions(master) - before - 1  # our own SHOW STATUS is counted too

    counted = []
    dumped_here = []
    for proc in procs:
        match = RUN_DONE.search(proc.stderr())
        assert match, proc.output()
        dumped_here.append(int(match.group(1)))
        counted.append(int(match.group(2)))
    print(f"{TABLES} tables on two replicas: master statements {asked} ({asked / TABLES:.2f} a table), tracker counted {counted}")
    # Each table dumped exactly once: the units dumped by both hosts add up to the tables.
    assert sum(dumped_here) == TABLES, f"units dumped per host {dumped_here}"
    # The counter is real: the master saw at least every statement tracker counted.
    assert 0 < sum(counted) <= asked, f"tracker counted {counted}, the master saw {asked} statements"
    assert asked / TABLES <= MAX_ROUND_TRIPS_PER_TABLE, (
        f"{asked} statements on the master for {TABLES} tables (tracker counted {counted})"
    )

    done = claims(master, db)
    assert len(done) == TABLES and all(r["state"] == "done" and r["unit"] == 0 for r in done), done[:3]
    assert sorted(r["tbl"] for r in done) == [f"t{i:03d}" for i in range(TABLES)]
    assert not master.sql("SELECT db, tbl, kind FROM tracker.datasets WHERE namespace = %s", (db,)), "a dataset lease was left"
    ports = {int(r["port"]) for r in done}
    assert ports <= {replica.port, replica2.port}

    scratch = f"r_{uuid.uuid4().hex[:8]}"
    master.sql(f"CREATE DATABASE {scratch}")
    try:
        for index in range(TABLES):
            table = f"t{index:03d}"
            directory = dataset_dir(dest, db, db, table)
            manifest = assert_complete(directory, 3)
            assert len(manifest["units"]) == 1
            [unit] = manifest["units"]
            assert int(unit["source"].rsplit(":", 1)[1]) in (replica.port, replica2.port)
            if index % 20:
                continue
            # Values, for a sample: the part restored next to the table, row by row.
            part = lz4.frame.decompress((directory / unit["key"].rsplit("/", 1)[-1]).read_bytes())
            schema = (directory / "schema.sql").read_text()
            restore(master, scratch, schema, json.loads((directory / "manifest.json").read_text()), [part], log_bin=False)
            got = master.sql(f"SELECT id, s, d, b FROM {scratch}.{table} ORDER BY id")
            want = master.sql(f"SELECT id, s, d, b FROM {db}.{table} ORDER BY id")
            assert got == want == [tuple(r) for r in rows_of(index)], (table, got, want)
    finally:
        master.sql(f"DROP DATABASE {scratch}")


def test_frozen_batch_commits_nothing_after_takeover(master, replica, replica2, replica_set, fresh_db, tmp_path) -> None:
    """A host frozen mid-batch loses every claim of the batch; on waking it commits nothing.

    Three small (so batched) tables, made on each replica alone with
    different contents, so a commit by the frozen host could not produce the
    same bytes by chance.  The frozen host's first dump waits on a table we
    hold, so nothing depends on how fast the machine is.
    """
    names = ("a", "b", "c")
    for server in (replica, replica2):
        for name in names:
            make_table(server, fresh_db, name, 50, slow=False, marker=server.name, binlog=False)
    dest = tmp_path / "dest"
    dest.mkdir()
    directories = [dataset_dir(dest, fresh_db, fresh_db, name) for name in names]

    with held_table(replica, *(f"{fresh_db}.{name}" for name in names)) as release:
        frozen = start_held(tmp_path, replica, dest, fresh_db, locks={"lease_seconds": LEASE})
        try:
            held = [r for r in claims(master, fresh_db) if r["state"] == "active"]
            assert sorted((r["tbl"], int(r["port"])) for r in held) == [(n, replica.port) for n in names], (
                f"not one batch of {len(names)} claims: {describe_claims(held)}"
            )
            frozen.proc.send_signal(signal.SIGSTOP)
            assert wait_for(lambda: lease_run_out(master, fresh_db), LEASE + 60), describe_claims(claims(master, fresh_db))

            config = run_config(tmp_path, replica2, dest, fresh_db, locks={"lease_seconds": LEASE})
            result = run_tracker(config, "run", "--date", DATE, timeout=120)
            assert result.returncode == 0, shown(result) + "\nclaims: " + describe_claims(claims(master, fresh_db))
            assert b"event=lease_taken_over" in result.stderr, shown(result)
            for directory in directories:
                manifest = assert_complete(directory, 50, strict=False)
                assert [source_port(u) for u in manifest["units"]] == [replica2.port], manifest["units"]
            committed = {str(p): digest(p) for d in directories for p in visible_files(d)}

            # The frozen host's query goes on and ends: its unit is ready to commit once the host runs.
            release()
            assert wait_for(lambda: not dump_queries(replica), 30), dump_queries(replica)
            frozen.proc.send_signal(signal.SIGCONT)
            status = frozen.wait(timeout=90)
            assert "Traceback" not in frozen.stderr(), frozen.output()
        finally:
            frozen.kill()
            kill_dump_queries(replica)
    ensure_replicating(replica_set, replica)

    after = {str(p): digest(p) for d in directories for p in visible_files(d)}
    assert after == committed, (
        f"the resumed host (exit {status}) changed a dataset after losing its claims:\n"
        f"before {committed}\nafter  {after}\n{frozen.output()}"
    )
    assert status == 1 and "event=lease_lost" in frozen.stderr(), frozen.output()
    assert list(replica.outfile_dir.iterdir()) == [], "the frozen host left its OUTFILE behind"
    rows_ = claims(master, fresh_db)
    assert sorted((r["tbl"], r["state"], int(r["port"])) for r in rows_) == [
        (name, "done", replica2.port) for name in names
    ], describe_claims(rows_)


def test_one_check_of_a_group_finds_exactly_the_units_lost(master, replica_set, fresh_db) -> None:
    """``check_parts`` (one statement for a whole commit group) against the real lock tables.

    Of four claimed units, one lost its claim (another token), one its
    dataset row (taken over): exactly those two are reported, and the other
    two are extended, claim and dataset row both.
    """
    import datetime as dt

    from tracker.config import LocksConfig, MySQLConfig
    from tracker.replicaset.batches import UnitBatch
    from tracker.replicaset.claims import ClaimStore, Owner, UnitKey
    from tracker.replicaset.datasets import DatasetLeases

    store = ClaimStore(MySQLConfig(host="127.0.0.1", port=master.port, user="root"), LocksConfig(), Owner("test", 1), fresh_db)
    date = dt.date(2026, 11, 20)
    try:
        datasets = DatasetLeases(store)
        datasets.ensure_table()
        store.ensure_table()
        batch = UnitBatch(store, datasets, lambda key: None)
        keys = [UnitKey(fresh_db, fresh_db, name, date, 0) for name in ("a", "b", "c", "d")]
        claimed = batch.claim(keys)
        assert sorted(e.key.table for e in claimed.claimed) == ["a", "b", "c", "d"]
        assert batch.check_parts(claimed.claimed) == {}
        store.execute(
            f"UPDATE `{LOCK_SCHEMA}`.claims SET token = REPEAT('e', 32) WHERE namespace = %s AND tbl = 'b'", (fresh_db,)
        )
        store.execute(
            f"UPDATE `{LOCK_SCHEMA}`.datasets SET token = REPEAT('f', 32) WHERE namespace = %s AND tbl = 'd'", (fresh_db,)
        )
        store.execute(
            f"UPDATE `{LOCK_SCHEMA}`.claims c JOIN `{LOCK_SCHEMA}`.datasets d USING (namespace, db, tbl, ds)"
            " SET c.expires_at = NOW(6) + INTERVAL 5 SECOND, d.expires_at = NOW(6) + INTERVAL 5 SECOND"
            " WHERE c.namespace = %s AND c.tbl IN ('a', 'c')",
            (fresh_db,),
        )
        lost = batch.check_parts(claimed.claimed)
        assert sorted(lost) == [(fresh_db, "b"), (fresh_db, "d")], lost
        assert all("expired or was taken over" in why for why in lost.values())
        _, rows = store.execute(
            f"SELECT c.tbl, c.expires_at > NOW(6) + INTERVAL 60 SECOND, d.expires_at > NOW(6) + INTERVAL 60 SECOND"
            f" FROM `{LOCK_SCHEMA}`.claims c"
            f" JOIN `{LOCK_SCHEMA}`.datasets d USING (namespace, db, tbl, ds) WHERE c.namespace = %s AND c.tbl IN ('a', 'c')",
            (fresh_db,),
        )
        assert sorted(rows) == [("a", 1, 1), ("c", 1, 1)]  # extended again, claim and dataset row both
        batch.close()
    finally:
        store.execute(f"DELETE FROM `{LOCK_SCHEMA}`.claims WHERE namespace = %s", (fresh_db,))
        store.execute(f"DELETE FROM `{LOCK_SCHEMA}`.datasets WHERE namespace = %s", (fresh_db,))
        store.close()


def test_plans_offered_by_two_hosts_the_first_one_wins(master, fresh_db) -> None:
    """``store_plans`` on the real lock tables: the first host's plans stand, read back by the second.

    The first host to offer a chunk finds every row inserted and reads
    nothing back (one statement); a host that finds some rows there reads
    the master's, and a table offered by neither keeps its own.
    """
    import datetime as dt

    from tracker.config import LocksConfig, MySQLConfig
    from tracker.replicaset.claims import ClaimStore, Owner
    from tracker.replicaset.plans import PlanBatch

    config = MySQLConfig(host="127.0.0.1", port=master.port, user="root")
    first = ClaimStore(config, LocksConfig(), Owner("first", 1), fresh_db)
    second = ClaimStore(config, LocksConfig(), Owner("second", 2), fresh_db)
    date = dt.date(2026, 11, 21)
    try:
        first.ensure_table()
        ours = {(fresh_db, f"t{i}"): {"version": 1, "units": [{"host": "first", "i": i}]} for i in range(3)}
        before = first.round_trips
        assert PlanBatch(first).store_plans(date, ours) == ours
        assert first.round_trips - before == 1  # all inserted: nothing to read back
        theirs = {name: {"version": 1, "units": [{"host": "second"}]} for name in [*ours, (fresh_db, "new")]}
        stored = PlanBatch(second).store_plans(date, theirs)
        assert stored == {**ours, (fresh_db, "new"): theirs[(fresh_db, "new")]}
    finally:
        first.execute(f"DELETE FROM {first.plans} WHERE namespace = %s", (fresh_db,))
        first.close()
        second.close()
