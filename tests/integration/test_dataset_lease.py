"""One run's dataset, whole: ``dump --force`` against ``dump --force`` and against ``run``.

Two writers of one dataset (namespace, db, table, date) must never leave a
``_SUCCESS`` next to parts the manifest does not describe.  Each trial starts
writer A, freezes it (SIGSTOP) at a defined point -- dumping its first unit,
its first part committed, dumping its last unit --, starts writer B, lets A
go again once B has either given up or is itself dumping, and checks the
destination: no ``_SUCCESS``, or every part's CRC-32C, size and row count
equal to the manifest's and the manifest's units exactly the parts present.
Rows are inserted on the master all along, so two snapshots never hold the
same data and a part from the other writer cannot pass for one's own.

The freezes make the interleavings deterministic: nothing here waits for a
clock.  One more trial lets both writers run freely.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import threading
from pathlib import Path
from typing import Any, Callable

import lz4.frame
import pymysql
import pytest

from sandbox import MariaDB
from tests.integration.test_run import (  # noqa: F401  (slow_rows is a fixture)
    LOCK_SCHEMA,
    PARTS_RE,
    Spawned,
    claims,
    dataset_dir,
    dump_queries,
    ensure_replicating,
    error_lines,
    kill_dump_queries,
    make_table,
    run_config,
    slow_rows,
    spawn,
    visible_files,
)
from tests.integration.helpers import run_tracker, wait_for
from tracker.config import LocksConfig, MySQLConfig, load
from tracker.db import connect, server_info
from tracker.dump.plan import plan_table
from tracker.dump.units import UnitDumper
from tracker.errors import LeaseLost
from tracker.replicaset.claims import ClaimStore, Owner
from tracker.replicaset.datasets import DatasetLeases
from tracker.store.checksum import crc32c
from tracker.store.sinks import open_store

PARTITIONS = 4


# --- the invariant ---------------------------------------------------------------------


def assert_whole(directory: Path) -> bool:
    """No ``_SUCCESS``, or one writer's dataset, whole; returns whether it is complete."""
    if not (directory / "_SUCCESS").exists():
        return False
    manifest = json.loads((directory / "manifest.json").read_text())
    parts = sorted(p.name for p in visible_files(directory) if PARTS_RE.fullmatch(p.name))
    listed = sorted(u["key"].rsplit("/", 1)[-1] for u in manifest["units"])
    assert parts == listed, f"{directory}: parts {parts}, manifest units {listed}"
    for unit in manifest["units"]:
        data = (directory / unit["key"].rsplit("/", 1)[-1]).read_bytes()
        where = f"{directory.name}/{unit['key'].rsplit('/', 1)[-1]} (source {unit['source']})"
        assert f"{crc32c(data):08x}" == unit["checksum"]["crc32c"], f"{where}: CRC-32C differs from the manifest's"
        assert len(data) == unit["bytes"], f"{where}: {len(data)} bytes, manifest says {unit['bytes']}"
        rows = lz4.frame.decompress(data).count(b"\n")
        assert rows == unit["rows"], f"{where}: {rows} rows, manifest says {unit['rows']}"
    assert manifest["rows"] == sum(u["rows"] for u in manifest["units"])
    return True


# --- writers and the master -------------------------------------------------------------


class Inserter(threading.Thread):
    """Inserts rows into ``db.table`` on the master, one per transaction, until stopped.

    Paced (a few ms apart) so it changes every snapshot without taking a
    core of a shared machine; the pace affects nothing the test asserts.
    """

    def __init__(self, master: MariaDB, db: str, table: str, first_id: int) -> None:
        super().__init__(daemon=True)
        self.master, self.db, self.table, self.next_id = master, db, table, first_id
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.master.connect(database=self.db)
            try:
                with conn.cursor() as cur:
                    cur.execute("SET SESSION binlog_row_image = 'MINIMAL'")
                    while not self.stop.wait(0.005):
                        cur.execute(
                            f"INSERT INTO `{self.table}` (id, a, who) VALUES (%s, MD5(%s), 'inserter')",
                            (self.next_id, self.next_id),
                        )
                        self.next_id += 1
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def dataset_leases(master: MariaDB, namespace: str) -> list[dict[str, Any]]:
    conn = master.connect(cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM `{LOCK_SCHEMA}`.datasets WHERE namespace = %s", (namespace,))
            return list(cur.fetchall())
    except pymysql.err.ProgrammingError as exc:
        if exc.args[0] in (1049, 1146):
            return []
        raise
    finally:
        conn.close()


# --- freezing points ----------------------------------------------------------------------


def parts_committed(directory: Path) -> int:
    return sum(1 for p in visible_files(directory) if PARTS_RE.fullmatch(p.name))


def dumping(server: MariaDB) -> Callable[[Path], bool]:
    """A dump query is running on ``server``."""
    return lambda _directory: bool(dump_queries(server))


def committed(count: int) -> Callable[[Path], bool]:
    """At least ``count`` parts are in the dataset."""
    return lambda directory: parts_committed(directory) >= count


def freeze_when(proc: Spawned, directory: Path, point: Callable[[Path], bool]) -> None:
    """SIGSTOP ``proc`` as soon as ``point`` holds; fails if it ended first."""
    reached = wait_for(lambda: proc.proc.poll() is not None or point(directory), 60, interval=0.01)
    assert reached and proc.proc.poll() is None, f"writer A ended before the freezing point: {proc.output()}"
    proc.proc.send_signal(signal.SIGSTOP)
    assert not (directory / "_SUCCESS").exists(), "premise failed: A finished before it was frozen"


def until_b_is_busy_or_gone(b: Spawned, server: MariaDB) -> None:
    """B has either given up (the new rule) or is dumping (the old code's race)."""
    assert wait_for(lambda: b.proc.poll() is not None or bool(dump_queries(server)), 60, interval=0.01), b.output()


def finish(procs: list[Spawned], timeout: float = 120) -> None:
    for proc in procs:
        proc.proc.send_signal(signal.SIGCONT)
    for proc in procs:
        proc.wait(timeout=timeout)
        assert "Traceback" not in proc.stderr(), proc.output()


@pytest.fixture
def inserting(master, replica_set, fresh_db, slow_rows):
    """A partitioned slow table (~0.4 s per partition) that the master keeps inserting into."""
    rows = slow_rows(0.4 * PARTITIONS)
    make_table(master, fresh_db, "t", rows, partitions=PARTITIONS)
    replica_set.sync()
    inserter = Inserter(master, fresh_db, "t", rows + 1)
    inserter.start()
    yield "t"
    inserter.stop.set()
    inserter.join(timeout=30)
    assert inserter.error is None, repr(inserter.error)


def holder_line(proc: Spawned) -> str:
    lines = error_lines(proc.stderr()) + [line for line in proc.stdout().splitlines() if line.startswith("failed ")]
    return "\n".join(lines)


# --- dump --force against dump --force ------------------------------------------------------

DUMP_POINTS = {
    "dumping_first_unit": lambda replica: dumping(replica),
    "first_part_committed": lambda replica: committed(1),
    "dumping_last_unit": lambda replica: committed(PARTITIONS - 1),
}


@pytest.mark.parametrize("point", list(DUMP_POINTS))
def test_two_forced_dumps_leave_one_whole_dataset(
    master, replica, replica2, replica_set, fresh_db, tmp_path, inserting, point
) -> None:
    date = "2026-11-01"
    directory = dataset_dir(tmp_path / "dest", fresh_db, fresh_db, inserting, date)
    config_a = run_config(tmp_path, replica, tmp_path / "dest", fresh_db, workers=1)
    config_b = run_config(tmp_path, replica2, tmp_path / "dest", fresh_db, workers=1)
    args = ("dump", f"{fresh_db}.{inserting}", "--date", date, "--force")
    a = spawn(tmp_path, config_a, *args)
    b: Spawned | None = None
    try:
        freeze_when(a, directory, DUMP_POINTS[point](replica))
        b = spawn(tmp_path, config_b, *args)
        until_b_is_busy_or_gone(b, replica2)
        finish([a, b])
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.kill()
        kill_dump_queries(replica)
        kill_dump_queries(replica2)
        ensure_replicating(replica_set, replica)
    assert assert_whole(directory), f"no complete dataset at all:\nA: {a.output()}\nB: {b.output()}"
    # The rule that makes it so: A held the dataset, B gave up naming A.
    assert a.proc.returncode == 0, a.output()
    assert b.proc.returncode == 1, b.output()
    message = holder_line(b)
    assert f":{replica.port} pid {a.pid}" in message and "dump" in message, b.output()
    assert len(error_lines(b.stderr())) <= 1, b.output()
    assert dataset_leases(master, fresh_db) == [], "a dump left its dataset lease behind"


def test_two_free_running_forced_dumps(master, replica, replica2, replica_set, fresh_db, tmp_path, inserting) -> None:
    date = "2026-11-02"
    directory = dataset_dir(tmp_path / "dest", fresh_db, fresh_db, inserting, date)
    args = ("dump", f"{fresh_db}.{inserting}", "--date", date, "--force")
    a = spawn(tmp_path, run_config(tmp_path, replica, tmp_path / "dest", fresh_db, workers=1), *args)
    b: Spawned | None = None
    try:
        assert wait_for(lambda: a.proc.poll() is not None or parts_committed(directory) >= 1, 60, interval=0.01)
        b = spawn(tmp_path, run_config(tmp_path, replica2, tmp_path / "dest", fresh_db, workers=1), *args)
        finish([a, b])
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.kill()
        kill_dump_queries(replica)
        kill_dump_queries(replica2)
    assert assert_whole(directory), f"no complete dataset at all:\nA: {a.output()}\nB: {b.output()}"
    assert 0 in (a.proc.returncode, b.proc.returncode), a.output() + b.output()


# --- dump --force against run ----------------------------------------------------------------


@pytest.mark.parametrize("point", ["dumping_first_unit", "first_part_committed", "dumping_last_unit"])
def test_forced_dump_then_run(master, replica, replica2, replica_set, fresh_db, tmp_path, inserting, point) -> None:
    """The dump holds the dataset first: run leaves the table alone (and exits 0)."""
    date = {"dumping_first_unit": "2026-11-03", "first_part_committed": "2026-11-04", "dumping_last_unit": "2026-11-05"}[point]
    dest = tmp_path / "dest"
    directory = dataset_dir(dest, fresh_db, fresh_db, inserting, date)
    dumper = spawn(tmp_path, run_config(tmp_path, replica, dest, fresh_db, workers=1), "dump", f"{fresh_db}.{inserting}", "--date", date, "--force")
    runner: Spawned | None = None
    try:
        freeze_when(dumper, directory, DUMP_POINTS[point](replica))
        runner = spawn(tmp_path, run_config(tmp_path, replica2, dest, fresh_db, workers=1), "run", "--date", date)
        until_b_is_busy_or_gone(runner, replica2)
        finish([dumper, runner])
    finally:
        for proc in (dumper, runner):
            if proc is not None:
                proc.kill()
        kill_dump_queries(replica)
        kill_dump_queries(replica2)
        ensure_replicating(replica_set, replica)
        ensure_replicating(replica_set, replica2)
    assert assert_whole(directory), f"no complete dataset:\ndump: {dumper.output()}\nrun: {runner.output()}"
    assert dumper.proc.returncode == 0, dumper.output()
    assert runner.proc.returncode == 0, runner.output()
    assert "event=dataset_busy" in runner.stderr(), runner.output()
    units = json.loads((directory / "manifest.json").read_text())["units"]
    assert {u["source"].rsplit(":", 1)[1] for u in units} == {str(replica.port)}, units
    assert dataset_leases(master, fresh_db) == []
    assert [r for r in claims(master, fresh_db) if str(r["ds"]) == date] == [], "the run claimed units of the dump's table"


@pytest.mark.parametrize("point", ["dumping_first_unit", "first_part_committed"])
def test_run_then_forced_dump(master, replica, replica2, replica_set, fresh_db, tmp_path, inserting, point) -> None:
    """The run holds the dataset first: the dump fails that table alone, naming the run, deleting nothing."""
    date = {"dumping_first_unit": "2026-11-06", "first_part_committed": "2026-11-07"}[point]
    dest = tmp_path / "dest"
    directory = dataset_dir(dest, fresh_db, fresh_db, inserting, date)
    runner = spawn(tmp_path, run_config(tmp_path, replica2, dest, fresh_db, workers=1), "run", "--date", date)
    dumper: Spawned | None = None
    try:
        freeze_when(runner, directory, DUMP_POINTS[point](replica2))
        before = sorted(p.name for p in visible_files(directory))
        dumper = spawn(tmp_path, run_config(tmp_path, replica, dest, fresh_db, workers=1), "dump", f"{fresh_db}.{inserting}", "--date", date, "--force")
        until_b_is_busy_or_gone(dumper, replica)
        if dumper.proc.poll() is not None:
            assert sorted(p.name for p in visible_files(directory)) == before, "the refused dump deleted parts"
        finish([runner, dumper])
    finally:
        for proc in (runner, dumper):
            if proc is not None:
                proc.kill()
        kill_dump_queries(replica)
        kill_dump_queries(replica2)
        ensure_replicating(replica_set, replica2)
    assert assert_whole(directory), f"no complete dataset:\nrun: {runner.output()}\ndump: {dumper.output()}"
    assert runner.proc.returncode == 0, runner.output()
    assert dumper.proc.returncode == 1, dumper.output()
    message = holder_line(dumper)
    assert f":{replica2.port} pid {runner.pid}" in message and "run" in message, dumper.output()
    assert dataset_leases(master, fresh_db) == []


# --- a dump that loses its dataset lease --------------------------------------------------------


def test_dump_whose_dataset_lease_is_taken_over_commits_nothing(master, replica, replica_set, fresh_db, tmp_path, inserting) -> None:
    date = "2026-11-08"
    dest = tmp_path / "dest"
    directory = dataset_dir(dest, fresh_db, fresh_db, inserting, date)
    config = run_config(tmp_path, replica, dest, fresh_db, workers=1, locks={"lease_seconds": 3})
    dumper = spawn(tmp_path, config, "dump", f"{fresh_db}.{inserting}", "--date", date, "--force")
    try:
        freeze_when(dumper, directory, dumping(replica))
        shown = run_tracker(config, "locks", "--date", date, timeout=60)
        assert shown.returncode == 0, shown
        listed = [line for line in shown.stdout.decode().splitlines() if f"{fresh_db}.{inserting}" in line]
        assert any(line.split()[0] == "dump" and f"({dumper.pid})" in line for line in listed), shown.stdout.decode()
        # Another holder takes the dataset over (as a dump would once the lease expired).
        taken = master.sql(
            f"UPDATE `{LOCK_SCHEMA}`.datasets SET token = REPEAT('f', 32), host = 'thief', pid = 1,"
            " expires_at = NOW(6) + INTERVAL 1 HOUR WHERE namespace = %s AND ds = %s",
            (fresh_db, date),
        )
        assert dataset_leases(master, fresh_db)[0]["host"] == "thief", taken
        finish([dumper])
    finally:
        dumper.kill()
        kill_dump_queries(replica)
        ensure_replicating(replica_set, replica)
        master.sql(f"DELETE FROM `{LOCK_SCHEMA}`.datasets WHERE namespace = %s", (fresh_db,))
    assert dumper.proc.returncode == 1, dumper.output()
    assert visible_files(directory) == [], f"committed after losing the dataset: {visible_files(directory)}\n{dumper.output()}"
    assert re.search(r"dataset .*(lost|taken over|expired)", dumper.output()), dumper.output()


def test_free_running_run_and_forced_dump(master, replica, replica2, replica_set, fresh_db, tmp_path, inserting) -> None:
    date = "2026-11-09"
    dest = tmp_path / "dest"
    directory = dataset_dir(dest, fresh_db, fresh_db, inserting, date)
    runner = spawn(tmp_path, run_config(tmp_path, replica2, dest, fresh_db, workers=1), "run", "--date", date)
    dumper: Spawned | None = None
    try:
        assert wait_for(lambda: runner.proc.poll() is not None or parts_committed(directory) >= 1, 60, interval=0.01)
        dumper = spawn(tmp_path, run_config(tmp_path, replica, dest, fresh_db, workers=1), "dump", f"{fresh_db}.{inserting}", "--date", date, "--force")
        finish([runner, dumper])
    finally:
        for proc in (runner, dumper):
            if proc is not None:
                proc.kill()
        kill_dump_queries(replica)
        kill_dump_queries(replica2)
    assert assert_whole(directory), f"no complete dataset:\nrun: {runner.output()}\ndump: {dumper.output()}"
    assert runner.proc.returncode == 0, runner.output()
    assert dataset_leases(master, fresh_db) == []


# --- the checks right before schema.sql, manifest.json and _SUCCESS ----------------------------


def test_finish_writes_nothing_once_the_dataset_is_taken_over(master, replica, replica_set, fresh_db, tmp_path) -> None:
    """``finish_table`` under a real dataset lease on the master, taken over before it runs."""
    make_table(master, fresh_db, "t", 10, slow=False)
    replica_set.sync()
    date = dt.date(2026, 11, 10)
    dest = tmp_path / "dest"
    config = load(str(run_config(tmp_path, replica, dest, fresh_db)))
    store = ClaimStore(MySQLConfig(host="127.0.0.1", port=master.port, user="root"), LocksConfig(), Owner("test", 1), fresh_db)
    conn = connect(config.mysql)
    try:
        leases = DatasetLeases(store)
        leases.ensure_table()
        store.ensure_table()
        lease = leases.take_for_dump(fresh_db, "t", date)
        plan = plan_table(conn, fresh_db, fresh_db, "t", date, 0)
        units = UnitDumper(config, open_store(config.destination, config.s3), server_info(conn), threading.Event())
        lease.check()  # held: the check passes
        store.execute(
            f"UPDATE `{LOCK_SCHEMA}`.datasets SET token = REPEAT('e', 32) WHERE namespace = %s AND ds = %s", (fresh_db, date)
        )
        with pytest.raises(LeaseLost, match="taken over"):
            units.finish_table(plan, [], check=lease.check)
        lease.release()  # not ours any more: deletes nothing
        assert [r["token"] for r in dataset_leases(master, fresh_db)] == ["e" * 32]
    finally:
        conn.close()
        store.execute(f"DELETE FROM `{LOCK_SCHEMA}`.datasets WHERE namespace = %s", (fresh_db,))
        store.close()
    assert visible_files(dataset_dir(dest, fresh_db, fresh_db, "t", date.isoformat())) == []


@pytest.mark.parametrize(
    "suffix, tables", [(".tsv.lz4", 1), (".tsv.zst", 1), (".tsv.zst", 2), (".tsv", 2)], ids=["lz4", "zst", "zst-batch", "none-batch"]
)
def test_run_finishing_a_table_deletes_parts_its_manifest_does_not_list(
    master, replica, replica_set, fresh_db, tmp_path, suffix: str, tables: int
) -> None:
    """What a dump that failed midway may leave: parts of its own plan, beyond the run's units.

    In any compression (a dump may have used another), on the one-by-one
    path (one table) and in a batch (two small tables).
    """
    names = ["t", "u"][:tables]
    for name in names:
        make_table(master, fresh_db, name, 10, slow=False)
    replica_set.sync()
    date = "2026-11-11"
    dest = tmp_path / "dest"
    strays = []
    for name in names:
        directory = dataset_dir(dest, fresh_db, fresh_db, name, date)
        directory.mkdir(parents=True)
        strays.append(directory / f"part-00007{suffix}")
        strays[-1].write_bytes(b"1\tnot\tthis\n")
    result = run_tracker(run_config(tmp_path, replica, dest, fresh_db), "run", "--date", date, timeout=120)
    assert result.returncode == 0, result
    assert [stray for stray in strays if stray.exists()] == []
    for name in names:
        assert assert_whole(dataset_dir(dest, fresh_db, fresh_db, name, date))
    assert result.stderr.decode().count("event=stray_part_deleted") == tables


def test_lease_of_a_killed_dump_on_this_machine_is_taken_over_at_once(master, replica, replica_set, fresh_db, tmp_path, inserting) -> None:
    """kill -9 of a dump, then the same dump again: no wait for the lease to expire (its pid is gone)."""
    date = "2026-11-12"
    dest = tmp_path / "dest"
    directory = dataset_dir(dest, fresh_db, fresh_db, inserting, date)
    config = run_config(tmp_path, replica, dest, fresh_db, workers=1)
    args = ("dump", f"{fresh_db}.{inserting}", "--date", date, "--force")
    killed = spawn(tmp_path, config, *args)
    try:
        freeze_when(killed, directory, committed(1))
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(timeout=30)
        assert [int(r["pid"]) for r in dataset_leases(master, fresh_db)] == [killed.pid]
    finally:
        killed.kill()
        # What cron's `tracker kill` does after a kill -9: the orphaned query
        # is killed and its OUTFILE, if the server created it before the
        # frozen tracker could unlink it, removed.
        cleaned = run_tracker(config, "kill", timeout=60)
        assert cleaned.returncode == 0, cleaned
        kill_dump_queries(replica)
        ensure_replicating(replica_set, replica)
    assert list(replica.outfile_dir.iterdir()) == [], "tracker kill left an orphan's OUTFILE behind"
    again = run_tracker(config, *args, timeout=120)
    assert again.returncode == 0, again
    assert "event=dataset_holder_gone" in again.stderr.decode()
    assert assert_whole(directory)
    assert dataset_leases(master, fresh_db) == []


def test_of_the_run_hosts_that_saw_the_last_unit_done_one_finishes(master, fresh_db) -> None:
    """Two workers marking a table's last two units done at once both see it complete: one finishes it."""
    date = dt.date(2026, 11, 13)
    stores = [
        ClaimStore(MySQLConfig(host="127.0.0.1", port=master.port, user="root"), LocksConfig(), Owner(f"host{i}", 1), fresh_db)
        for i in range(2)
    ]
    try:
        DatasetLeases(stores[0]).ensure_table()
        joined = [DatasetLeases(store).join_run(fresh_db, "t", date) for store in stores]
        assert joined[0].token == joined[1].token  # one shared run row
        results = [None, None]
        barrier = threading.Barrier(2)

        def finish(i: int) -> None:
            barrier.wait()
            results[i] = joined[i].take_for_finishing()

        threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results) == [False, True], results
        winner = joined[results.index(True)]
        winner.check()  # the finisher's checks before schema, manifest and _SUCCESS pass
        assert [r["token"] for r in dataset_leases(master, fresh_db)] == [winner.token]
        assert joined[results.index(False)].take_for_finishing() is False
    finally:
        stores[0].execute(f"DELETE FROM `{LOCK_SCHEMA}`.datasets WHERE namespace = %s", (fresh_db,))
        for store in stores:
            store.close()
