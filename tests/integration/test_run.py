"""``tracker run``, claims on the master, ``verify`` and ``locks`` against the real replica set.

Every test owns a database (``fresh_db``) and uses it as its ``namespace`` too,
so the claims table on the master, shared by the whole session, never mixes
tests.  Destinations are ``file://`` directories under ``tmp_path``; each
replica gets its own ``run_lock_dir`` (on real hosts each has its own /tmp).

No test races a dump against a clock.  A test that needs a unit "mid-dump"
holds it there: ``held_table`` (a root session's ``LOCK TABLES ... WRITE``
on the replica) makes the unit's dump query wait, claimed, running and
tagged, before its first byte, until the test releases it.  Every step then
waits for an observable event -- the held query in the process list, a
claim row on the master (its lease run out by the master's clock, renewed,
taken over), a transaction applied on the replica -- never for a time.

Only the master is written through replication; a table that must differ
between the replicas is created on each with ``sql_log_bin=0`` as root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.frame
import pymysql
import pymysql.cursors
import pytest
import yaml

from sandbox import MariaDB, ReplicaSet
from sandbox.faults import FaultProxy, first, puts_of
from tests.integration.helpers import (
    held_dumps,
    held_table,
    run_tracker,
    tagged_queries,
    tracker_argv,
    wait_for,
    write_config,
)
from tracker.store.layout import encode_segment

DATE = "2026-11-01"
LOCK_SCHEMA = "tracker"  # the default locks.schema
LEASE = 3  # locks.lease_seconds for the takeover tests
# One row of a slow table costs the server ~0.5 ms to produce (hashing 320 KB).
SLOW_EXPR = "SHA2(REPEAT(a, 10000), 512)"
PARTS_RE = re.compile(r"part-\d{5}\.tsv(\.lz4|\.gz)?")


# --- config and processes -------------------------------------------------------


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


def run_config(tmp_path: Path, server: MariaDB, dest: Path, db: str, **extra: Any) -> Path:
    """A ``run`` config for ``server``: namespace = db, only db's tables, no skip file.

    ``extra`` overrides; mapping sections are merged key by key.
    """
    lock_dir = tmp_path / f"runlock-{server.port}"
    lock_dir.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "namespace": db,
        "tables": {"include": [re.escape(db) + r"\..*"]},
        "skip_file": str(tmp_path / "skip"),
        "run_lock_dir": str(lock_dir),
        "workers": 1,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return write_config(tmp_path, server, f"file://{dest}", **data)


@dataclass
class Spawned:
    """A tracker process whose output goes to files (a pipe nobody reads could block it)."""

    proc: subprocess.Popen
    out_path: Path
    err_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"tracker pid {self.pid} did not exit within {timeout} s; {self.output()}") from None

    def kill(self) -> None:
        """SIGCONT (it may be stopped) then SIGKILL; reaps.  Safe to call twice."""
        if self.proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=30)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return f"exit {self.proc.returncode}\n--- stdout:\n{self.stdout()}\n--- stderr:\n{self.stderr()}"


def spawn(tmp_path: Path, config: Path, *args: str) -> Spawned:
    stamp = time.monotonic_ns()
    out_path, err_path = tmp_path / f"out-{stamp}.txt", tmp_path / f"err-{stamp}.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(tracker_argv(config, *args), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    return Spawned(proc, out_path, err_path)


def shown(result: subprocess.CompletedProcess) -> str:
    return (
        f"exit {result.returncode}\n--- stdout:\n{result.stdout.decode(errors='replace')}"
        f"\n--- stderr:\n{result.stderr.decode(errors='replace')}"
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tracker: error:")]


# --- servers ------------------------------------------------------------------------


def make_table(
    server: MariaDB,
    db: str,
    table: str,
    rows: int,
    *,
    slow: bool = True,
    partitions: int = 0,
    marker: str = "",
    binlog: bool = True,
) -> None:
    """``db.table`` with ``rows`` rows; ``slow`` adds the costly virtual column.

    ``binlog=False`` creates it on ``server`` alone (root, ``sql_log_bin=0``):
    the way to put a table on a replica without writing through replication.
    """
    columns = "id INT PRIMARY KEY, a CHAR(32) NOT NULL, who VARCHAR(20) NOT NULL"
    if slow:
        columns += f", v VARCHAR(128) AS ({SLOW_EXPR}) VIRTUAL"
    ddl = f"CREATE TABLE `{table}` ({columns}) ENGINE=InnoDB"
    if partitions:
        ddl += f" PARTITION BY HASH(id) PARTITIONS {partitions}"
    conn = server.connect(database=db)  # the seq_ tables need a current database
    try:
        with conn.cursor() as cur:
            if not binlog:
                cur.execute("SET SESSION sql_log_bin = 0")
            # With the FULL row image the server computes the costly column for the binlog.
            cur.execute("SET SESSION binlog_row_image = 'MINIMAL'")
            cur.execute(ddl)
            if rows:
                cur.execute(
                    f"INSERT INTO `{table}` (id, a, who) SELECT seq, MD5(seq), %s FROM seq_1_to_{rows}", (marker,)
                )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def slow_rows(replica) -> Any:
    """``slow_rows(seconds)``: rows of a slow table that take the server at least that long.

    Calibrated once on this machine (idle, one thread: under the tests' own
    load the server is only slower, so the durations are lower bounds).
    Speed-dependent: no test in this file uses it any more (they hold the
    dump with ``held_table``); kept for the other files that import it.
    """
    sample = 400
    conn = replica.connect(database="mysql")  # the seq_ tables need a current database
    try:
        with conn.cursor() as cur:
            started = time.monotonic()
            cur.execute(f"SELECT SUM(LENGTH({SLOW_EXPR})) FROM (SELECT MD5(seq) AS a FROM seq_1_to_{sample}) AS t")
            per_row = max((time.monotonic() - started) / sample, 1e-5)
    finally:
        conn.close()
    return lambda seconds: max(100, int(seconds / per_row))


def claims(master: MariaDB, namespace: str) -> list[dict[str, Any]]:
    """The claim rows of one namespace on the master ([] while the table does not exist)."""
    conn = master.connect(cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM `{LOCK_SCHEMA}`.claims WHERE namespace = %s", (namespace,))
            return list(cur.fetchall())
    except pymysql.err.ProgrammingError as exc:
        if exc.args[0] in (1049, 1146):  # unknown database / table
            return []
        raise
    finally:
        conn.close()


def describe_claims(rows: list[dict[str, Any]]) -> str:
    keys = ("db", "tbl", "ds", "unit", "state", "port", "pid", "expires_at")
    return "; ".join(", ".join(f"{k}={r.get(k)}" for k in keys) for r in rows) or "<no claims>"


def dump_queries(server: MariaDB) -> list[tuple]:
    """Tracker's OUTFILE statements running on ``server``."""
    return [row for row in tagged_queries(server) if row[1] and "OUTFILE" in str(row[1]).upper()]


def kill_dump_queries(server: MariaDB) -> None:
    """Hygiene, not a check: stop dump queries a killed or stopped tracker left burning CPU."""
    for query_id, _info in dump_queries(server):
        try:
            server.sql(f"KILL QUERY {int(query_id)}")
        except pymysql.MySQLError:
            pass
    wait_for(lambda: not dump_queries(server), 15)


def ensure_replicating(replica_set: ReplicaSet, server: MariaDB) -> None:
    """Leave replication running whatever a killed or stopped tracker did to it."""
    status = server.slave_status() or {}
    if status.get("Slave_SQL_Running") != "Yes" or status.get("Slave_IO_Running") != "Yes":
        server.sql("START SLAVE")
    assert wait_for(lambda: (server.slave_status() or {}).get("Slave_SQL_Running") == "Yes", 15), server.slave_status()
    replica_set.sync()


# --- destination ---------------------------------------------------------------------


def wait_all_ok(procs: list[Spawned], timeout: float) -> None:
    """Wait for every process (killing all of them if one hangs); each must exit 0."""
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            proc.kill()
    for proc in procs:
        assert proc.proc.returncode == 0, proc.output()


def dataset_dir(dest: Path, namespace: str, db: str, table: str, date: str = DATE) -> Path:
    return dest / namespace / encode_segment(db) / encode_segment(table) / f"dt={date}"


def visible_files(path: Path) -> list[Path]:
    """Files under ``path``, leaving out the dot-named temporaries of unfinished writes."""
    if not path.exists():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def assert_complete(directory: Path, rows: int, *, strict: bool = True) -> dict[str, Any]:
    """One complete dataset: _SUCCESS, schema, manifest, and exactly the manifest's parts.

    ``strict`` also refuses dot-named temporaries (a crashed writer may leave one).
    """
    assert (directory / "_SUCCESS").is_file(), f"no _SUCCESS in {directory}: {os.listdir(directory) if directory.exists() else 'missing'}"
    manifest = read_manifest(directory)
    names = sorted(p.name for p in directory.iterdir())
    if not strict:
        names = [n for n in names if not n.startswith(".")]
    parts = sorted(n for n in names if PARTS_RE.fullmatch(n))
    others = sorted(n for n in names if n not in parts)
    assert others == ["_SUCCESS", "manifest.json", "schema.sql"], f"{directory}: unexpected files {names}"
    unit_parts = sorted(u["key"].rsplit("/", 1)[-1] for u in manifest["units"])
    assert parts == unit_parts, f"{directory}: parts {parts} but manifest units {unit_parts}"
    assert len(set(unit_parts)) == len(unit_parts), f"{directory}: a unit listed twice: {unit_parts}"
    for unit in manifest["units"]:
        part = directory / unit["key"].rsplit("/", 1)[-1]
        assert part.stat().st_size == unit["bytes"], f"{part}: {part.stat().st_size} bytes, manifest says {unit['bytes']}"
    assert manifest["rows"] == rows, f"{directory}: manifest rows {manifest['rows']}, table has {rows}"
    assert sum(u["rows"] for u in manifest["units"]) == rows
    return manifest


def source_port(unit: dict[str, Any]) -> int:
    return int(unit["source"].rsplit(":", 1)[1])


def gtid_seq(position: str, domain: int = 0) -> int:
    """Sequence number of ``domain`` in a MariaDB GTID position like '0-1-42,1-3-7'."""
    for gtid in position.replace(" ", "").split(","):
        if gtid:
            d, _server, seq = gtid.split("-")
            if int(d) == domain:
                return int(seq)
    raise AssertionError(f"no domain {domain} in GTID position {position!r}")


# --- 1. two replicas split the work -------------------------------------------------------


def test_two_replicas_split_the_units(master, replica, replica2, replica_set, fresh_db, tmp_path, dest) -> None:
    rows = 100  # per table
    tables = {f"t{i:02d}": (3 if i < 4 else 0) for i in range(20)}  # four partitioned tables
    for table, partitions in tables.items():
        make_table(master, fresh_db, table, rows, partitions=partitions, slow=False)
    replica_set.sync()
    total_units = sum(p or 1 for p in tables.values())

    # Every table is held on both replicas until each run (one worker each)
    # has claimed a unit and waits on it: then both must do some of the work.
    names = [f"{fresh_db}.{table}" for table in tables]
    configs = [run_config(tmp_path, server, dest, fresh_db, workers=1) for server in (replica, replica2)]
    with held_table(replica, *names) as release1, held_table(replica2, *names) as release2:
        procs = [spawn(tmp_path, config, "run", "--date", DATE) for config in configs]
        try:
            for server in (replica, replica2):
                assert wait_for(lambda server=server: held_dumps(server) or any(p.proc.poll() is not None for p in procs), 60)
                assert all(p.proc.poll() is None for p in procs), "\n".join(p.output() for p in procs)
            held = claims(master, fresh_db)
            assert {int(r["port"]) for r in held if r["state"] == "active"} == {replica.port, replica2.port}, (
                describe_claims(held)
            )
            release1()
            release2()
            wait_all_ok(procs, timeout=120)
        finally:
            for proc in procs:
                proc.kill()

    sources: set[int] = set()
    positions: dict[int, set[str]] = {}
    for table in tables:
        directory = dataset_dir(dest, fresh_db, fresh_db, table)
        manifest = assert_complete(directory, rows)
        expected_units = tables[table] or 1
        assert len(manifest["units"]) == expected_units, f"{table}: {len(manifest['units'])} units"
        for unit in manifest["units"]:
            port = source_port(unit)
            assert port in (replica.port, replica2.port), f"{table}: source {unit['source']} is neither replica"
            sources.add(port)
            positions.setdefault(port, set()).add(json.dumps(unit.get("position"), sort_keys=True))
    successes = [p for p in visible_files(dest) if p.name == "_SUCCESS"]
    assert len(successes) == len(tables), [str(p) for p in successes]
    assert sources == {replica.port, replica2.port}, (
        f"only {sources} did any work (replicas {replica.port}, {replica2.port});\n"
        + "\n".join(p.output() for p in procs)
    )
    for port, seen in positions.items():
        assert len(seen) == 1, f"units dumped by port {port} in one run carry different positions: {seen}"

    rows_ = claims(master, fresh_db)
    assert len(rows_) >= total_units and {r["state"] for r in rows_} == {"done"}, describe_claims(rows_)


# --- 2. one consistent snapshot per host and run ------------------------------------------


class PairWriter(threading.Thread):
    """Inserts one row into each of two tables per transaction on the master, until stopped.

    Writer ``k`` of ``n`` uses ids ``first_id + k``, ``first_id + k + n``, ...
    """

    def __init__(self, master: MariaDB, db: str, first_id: int, k: int, n: int) -> None:
        super().__init__(daemon=True)
        self.master, self.db, self.next_id, self.step = master, db, first_id + k, n
        self.committed: list[int] = []  # the GTID sequence number of each transaction
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.master.connect(database=self.db, autocommit=False)
            try:
                with conn.cursor() as cur:
                    while not self.stop.is_set():
                        for table in ("a", "b"):
                            cur.execute(
                                f"INSERT INTO {table} (id, a, who) VALUES (%s, MD5(%s), 'writer')",
                                (self.next_id, self.next_id),
                            )
                        conn.commit()
                        cur.execute("SELECT @@last_gtid")
                        (gtid,) = cur.fetchone()
                        conn.commit()
                        self.committed.append(gtid_seq(gtid))
                        self.next_id += self.step
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_units_of_one_host_share_one_snapshot(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    """Units dumped long after the snapshot still show the snapshot's data, and say where it stands.

    Both workers first take a unit of ``c`` (priority, never written) and
    are held there (``held_table``) until the replica has applied writer
    transactions past the snapshot; only then are ``a`` and ``b`` dumped.
    """
    initial = 1200
    for table in ("a", "b"):
        make_table(master, fresh_db, table, initial, partitions=4, slow=False)  # 8 units on 2 workers
    make_table(master, fresh_db, "c", 10, partitions=2, slow=False)
    replica_set.sync()
    # Several unthrottled writers keep the replica's SQL thread busy all the
    # time, so any moment it is not held still shows up as a difference.
    writers = [PairWriter(master, fresh_db, initial + 1, k, 3) for k in range(3)]

    def committed() -> list[int]:
        return sorted(seq for w in writers for seq in list(w.committed))

    def applied() -> int:
        return gtid_seq(replica.sql("SELECT @@gtid_slave_pos")[0][0])

    for writer in writers:
        writer.start()
    try:
        assert wait_for(lambda: len(committed()) >= 50 or any(w.error for w in writers), 60), "writers never got going"
        before = len(committed())
        config = run_config(
            tmp_path, replica, dest, fresh_db, workers=2, tables={"priority": [re.escape(fresh_db) + r"\.c"]}
        )
        with held_table(replica, f"{fresh_db}.c") as release:
            proc = spawn(tmp_path, config, "run", "--date", DATE)
            try:
                # Both workers wait on c: the snapshot is taken, nothing of a or b is dumped yet.
                assert wait_for(lambda: len(held_dumps(replica)) == 2 or proc.proc.poll() is not None, 60)
                assert proc.proc.poll() is None, proc.output()
                held_at = applied()
                past = lambda: [s for s in committed() if held_at < s <= applied()]  # noqa: E731
                assert wait_for(lambda: len(past()) >= 20, 60), "the replica applied no writer transaction"
                applied_at_release = applied()
                release()
                status = proc.wait(timeout=120)
            finally:
                proc.kill()
        during = len(committed()) - before
    finally:
        for writer in writers:
            writer.stop.set()
        for writer in writers:
            writer.join(timeout=30)
    assert not any(w.error for w in writers), f"writer failed: {[w.error for w in writers]!r}"
    assert status == 0, proc.output()
    assert during > 0, "the writers committed nothing while run executed: the test proves nothing"
    replica_set.sync(timeout=120)

    manifests = {}
    for table in ("a", "b"):
        directory = dataset_dir(dest, fresh_db, fresh_db, table)
        manifests[table] = assert_complete(directory, read_manifest(directory)["rows"])
    assert_complete(dataset_dir(dest, fresh_db, fresh_db, "c"), 10)
    rows_a, rows_b = manifests["a"]["rows"], manifests["b"]["rows"]
    assert rows_a == rows_b, f"a has {rows_a} rows, b {rows_b}: the units were not dumped from one snapshot"

    positions = [u.get("position") for m in manifests.values() for u in m["units"]]
    assert all(p == positions[0] for p in positions), f"units carry different positions: {positions}"
    position = positions[0]
    assert isinstance(position, dict), f"unit position is {position!r}"
    for key in ("gtid", "binlog_file", "binlog_pos", "heartbeat"):
        assert key in position, f"position lacks {key!r}: {position}"
    assert position["heartbeat"] is None, position
    assert all(source_port(u) == replica.port for m in manifests.values() for u in m["units"])

    # The position describes exactly the data: every writer transaction up to its GTID, none after.
    seqs = committed()
    seq = gtid_seq(position["gtid"])
    assert seq <= held_at, f"snapshot at {seq}, after the replica's {held_at} when the workers were held"
    missed = [s for s in seqs if seq < s <= applied_at_release]
    assert len(missed) >= 20, f"only {len(missed)} writer transactions between the snapshot and the dump of a, b"
    expected = initial + sum(1 for s in seqs if s <= seq)
    assert rows_a == expected, (
        f"snapshot has {rows_a} rows but GTID {position['gtid']} covers {expected} "
        f"(writer transactions {seqs[0]}..{seqs[-1]})"
    )
    (at_coordinates,) = master.sql("SELECT BINLOG_GTID_POS(%s, %s)", (position["binlog_file"], int(position["binlog_pos"])))[0]
    assert at_coordinates and gtid_seq(at_coordinates) == seq, (
        f"master binlog {position['binlog_file']}:{position['binlog_pos']} is GTID {at_coordinates!r}, "
        f"the position says {position['gtid']!r}"
    )


# --- 3 and 4. leases: a dead or frozen claimant is taken over --------------------------------


def start_and_catch_mid_unit(tmp_path: Path, server: MariaDB, dest: Path, db: str) -> Spawned:
    """Start ``run`` on ``server`` and return once its dump query has been running a moment.

    Speed-dependent (the unit must still be running: a slow table); kept for
    the files that import it.  ``start_held`` is the deterministic way.
    """
    config = run_config(tmp_path, server, dest, db, locks={"lease_seconds": LEASE})
    proc = spawn(tmp_path, config, "run", "--date", DATE)
    if not wait_for(lambda: dump_queries(server) or proc.proc.poll() is not None, 30):
        raise AssertionError(f"no dump query on {server.name} within 30 s")
    assert proc.proc.poll() is None, f"run on {server.name} ended before dumping: {proc.output()}"
    time.sleep(0.3)
    return proc


def start_held(tmp_path: Path, server: MariaDB, dest: Path, db: str, **extra: Any) -> Spawned:
    """Start ``run`` on ``server``; return once its dump query waits on a table the caller holds."""
    proc = spawn(tmp_path, run_config(tmp_path, server, dest, db, **extra), "run", "--date", DATE)
    if not wait_for(lambda: held_dumps(server) or proc.proc.poll() is not None, 60):
        proc.kill()
        raise AssertionError(f"no held dump query on {server.name} within 60 s: {proc.output()}")
    assert proc.proc.poll() is None, f"run on {server.name} ended before dumping: {proc.output()}"
    return proc


def assert_claimed_by(master: MariaDB, namespace: str, port: int) -> None:
    rows = claims(master, namespace)
    assert any(r["state"] == "active" and int(r["port"]) == port for r in rows), (
        f"no active claim by port {port}: {describe_claims(rows)}"
    )


def lease_run_out(master: MariaDB, namespace: str) -> bool:
    """Every active claim of ``namespace`` has expired, by the master's clock (the one leases use)."""
    ((active, expired),) = master.sql(
        f"SELECT COUNT(*), COALESCE(SUM(expires_at < NOW(6)), 0) FROM `{LOCK_SCHEMA}`.claims"
        " WHERE namespace = %s AND state = 'active'",
        (namespace,),
    )
    return active > 0 and int(expired) == active


def claim_expiry(master: MariaDB, namespace: str, port: int) -> dt.datetime | None:
    """When the active claim by ``port`` expires (the master's clock); None without one."""
    rows = [r for r in claims(master, namespace) if r["state"] == "active" and int(r["port"]) == port]
    return rows[0]["expires_at"] if rows else None


def test_lease_of_a_killed_run_is_taken_over(master, replica, replica2, replica_set, fresh_db, tmp_path, dest) -> None:
    rows = 100
    make_table(master, fresh_db, "t", rows, slow=False)
    replica_set.sync()
    table = f"{fresh_db}.t"
    directory = dataset_dir(dest, fresh_db, fresh_db, "t")

    with held_table(replica, table):
        first = start_held(tmp_path, replica, dest, fresh_db, locks={"lease_seconds": LEASE})
        try:
            assert_claimed_by(master, fresh_db, replica.port)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=10)
        finally:
            first.kill()
            kill_dump_queries(replica)
    ensure_replicating(replica_set, replica)
    assert not (directory / "_SUCCESS").exists()

    assert wait_for(lambda: lease_run_out(master, fresh_db), LEASE + 60), describe_claims(claims(master, fresh_db))
    # replica2 takes the unit over and is held on it until it has renewed its own lease.
    with held_table(replica2, table) as release:
        second = start_held(tmp_path, replica2, dest, fresh_db, locks={"lease_seconds": LEASE})
        try:
            taken = claim_expiry(master, fresh_db, replica2.port)
            assert taken is not None, describe_claims(claims(master, fresh_db))
            renewed = lambda: (claim_expiry(master, fresh_db, replica2.port) or taken) > taken  # noqa: E731
            assert wait_for(renewed, LEASE + 60), f"never renewed: {describe_claims(claims(master, fresh_db))}"
            release()
            status = second.wait(timeout=120)
        finally:
            second.kill()
    assert status == 0, second.output() + "\nclaims: " + describe_claims(claims(master, fresh_db))
    assert "event=lease_taken_over" in second.stderr(), second.output()

    manifest = assert_complete(directory, rows, strict=False)  # the killed writer may leave a temporary
    assert [source_port(u) for u in manifest["units"]] == [replica2.port], manifest["units"]
    rows_ = claims(master, fresh_db)
    assert [(r["state"], int(r["port"])) for r in rows_] == [("done", replica2.port)], describe_claims(rows_)


def digest(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns


def test_frozen_claimant_commits_nothing_after_takeover(master, replica, replica2, replica_set, fresh_db, tmp_path, dest) -> None:
    rows = 100
    # The same table on each replica alone, with different contents, so that a
    # commit by the frozen host could not produce the same bytes by chance.
    for server in (replica, replica2):
        make_table(server, fresh_db, "t", rows, slow=False, marker=server.name, binlog=False)
    directory = dataset_dir(dest, fresh_db, fresh_db, "t")

    with held_table(replica, f"{fresh_db}.t") as release:
        frozen = start_held(tmp_path, replica, dest, fresh_db, locks={"lease_seconds": LEASE})
        try:
            assert_claimed_by(master, fresh_db, replica.port)
            frozen.proc.send_signal(signal.SIGSTOP)
            assert wait_for(lambda: lease_run_out(master, fresh_db), LEASE + 60), describe_claims(claims(master, fresh_db))
            assert not (directory / "_SUCCESS").exists()

            config = run_config(tmp_path, replica2, dest, fresh_db, locks={"lease_seconds": LEASE})
            result = run_tracker(config, "run", "--date", DATE, timeout=120)
            assert result.returncode == 0, shown(result) + "\nclaims: " + describe_claims(claims(master, fresh_db))
            manifest = assert_complete(directory, rows, strict=False)
            assert [source_port(u) for u in manifest["units"]] == [replica2.port], manifest["units"]
            part = directory / manifest["units"][0]["key"].rsplit("/", 1)[-1]
            committed = {p.name: digest(p) for p in visible_files(directory)}

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

    after = {p.name: digest(p) for p in visible_files(directory)}
    assert after == committed, (
        f"the resumed host (exit {status}) changed the dataset after losing its lease:\n"
        f"before {committed}\nafter  {after}\n{frozen.output()}"
    )
    assert part.name in after
    assert status == 1 and "event=lease_lost" in frozen.stderr(), frozen.output()
    rows_ = claims(master, fresh_db)
    assert [(r["state"], int(r["port"])) for r in rows_] == [("done", replica2.port)], describe_claims(rows_)


def test_claimant_resumed_during_takeover_aborts_before_committing(
    master, replica, replica2, replica_set, fresh_db, tmp_path, dest
) -> None:
    """The frozen host resumes while the new owner is still dumping.

    Unlike the test above, the frozen host could reach its commit *before*
    the new owner does, so the no-clobber commit can not save the day: it
    must notice it lost the lease and commit nothing, and replica2 must
    succeed with its own data.  replica2 is held mid-unit until the resumed
    host has exited.
    """
    rows = 100
    for server in (replica, replica2):
        make_table(server, fresh_db, "t", rows, slow=False, marker=server.name, binlog=False)
    table = f"{fresh_db}.t"
    directory = dataset_dir(dest, fresh_db, fresh_db, "t")

    taker: Spawned | None = None
    with held_table(replica, table) as release1, held_table(replica2, table) as release2:
        frozen = start_held(tmp_path, replica, dest, fresh_db, locks={"lease_seconds": LEASE})
        try:
            assert_claimed_by(master, fresh_db, replica.port)
            frozen.proc.send_signal(signal.SIGSTOP)
            assert wait_for(lambda: lease_run_out(master, fresh_db), LEASE + 60), describe_claims(claims(master, fresh_db))
            taker = start_held(tmp_path, replica2, dest, fresh_db, locks={"lease_seconds": LEASE})
            assert_claimed_by(master, fresh_db, replica2.port)
            # Let replica1's server finish writing the unit: resumed, the frozen
            # host needs only a moment to reach its commit.
            release1()
            assert wait_for(lambda: not dump_queries(replica), 30), dump_queries(replica)
            frozen.proc.send_signal(signal.SIGCONT)
            status = frozen.wait(timeout=60)
            # Whatever part object exists now must be the one left at the end
            # (replica2's): had the resumed host committed one, replica2 would
            # have had to replace it or fail.
            part = directory / "part-00000.tsv.lz4"
            seen = part.stat().st_ino if part.exists() else None
            assert "Traceback" not in frozen.stderr(), frozen.output()
            assert taker.proc.poll() is None, taker.output()  # held: it can not have finished
            release2()
            assert taker.wait(timeout=120) == 0, taker.output() + "\nresumed: " + frozen.output()
        finally:
            frozen.kill()
            if taker is not None:
                taker.kill()
            kill_dump_queries(replica)
    ensure_replicating(replica_set, replica)

    assert status == 1 and "event=lease_lost" in frozen.stderr(), frozen.output()
    manifest = assert_complete(directory, rows, strict=False)
    assert [source_port(u) for u in manifest["units"]] == [replica2.port], manifest["units"]
    assert seen in (None, part.stat().st_ino), f"the resumed host committed a part object:\n{frozen.output()}"
    data = lz4.frame.decompress(part.read_bytes())
    assert data.count(b"\treplica2\n") == rows and b"replica1" not in data, (
        f"the part does not hold replica2's rows only (resumed host: {frozen.output()})"
    )
    rows_ = claims(master, fresh_db)
    assert [(r["state"], int(r["port"])) for r in rows_] == [("done", replica2.port)], describe_claims(rows_)


def test_claimant_cut_off_from_the_master_commits_nothing(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    """The re-check right before the commit, isolated from the renewals.

    The claimant's lease is an hour, so it never renews during the test:
    only the re-check before its commit can stop it.  While its unit is
    held, the master stops answering it about its claim (the test holds the
    claim row locked); the dump is let go, and the claimant's re-check
    waits on the master -- seen there as a lock wait.  Meanwhile its lease
    runs out and another host takes the unit over and finishes it (the test
    sets the claim row so, as the master's clock would after an hour of
    silence), and the master answers again.  The claimant must not commit.
    """
    make_table(master, fresh_db, "t", 100, slow=False)
    replica_set.sync()
    table = f"{fresh_db}.t"
    config = run_config(tmp_path, replica, dest, fresh_db, locks={"lease_seconds": 3600})
    blocker = master.connect(autocommit=False)
    at_commit = (
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'"
        " AND trx_query LIKE %s AND trx_query LIKE %s"
    )
    with held_table(replica, table) as release:
        proc = spawn(tmp_path, config, "run", "--date", DATE)
        try:
            assert wait_for(lambda: held_dumps(replica) or proc.proc.poll() is not None, 60)
            assert proc.proc.poll() is None, proc.output()
            with blocker.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = 120")
                cur.execute(
                    f"SELECT unit FROM `{LOCK_SCHEMA}`.claims WHERE namespace = %s AND state = 'active' FOR UPDATE",
                    (fresh_db,),
                )
                assert len(cur.fetchall()) == 1, f"expected one active claim: {describe_claims(claims(master, fresh_db))}"
                release()
                assert wait_for(lambda: not dump_queries(replica), 60), "the dump query never ended"
                waiting = (f"%UPDATE `{LOCK_SCHEMA}`.`claims` SET expires_at%", f"%{fresh_db}%")
                assert wait_for(lambda: master.sql(at_commit, waiting)[0][0] == 1 or proc.proc.poll() is not None, 60)
                assert proc.proc.poll() is None, f"ended without asking the master: {proc.output()}"
                cur.execute(
                    f"UPDATE `{LOCK_SCHEMA}`.claims SET state = 'done', port = 1, pid = 1, token = REPEAT('f', 32),"
                    " expires_at = NOW(6) - INTERVAL 1 SECOND WHERE namespace = %s",
                    (fresh_db,),
                )
                assert cur.rowcount == 1, describe_claims(claims(master, fresh_db))
            blocker.commit()
            status = proc.wait(timeout=60)
        finally:
            blocker.close()
            proc.kill()
            kill_dump_queries(replica)
    assert "Traceback" not in proc.stderr(), proc.output()
    directory = dataset_dir(dest, fresh_db, fresh_db, "t")
    assert visible_files(directory) == [], (
        f"committed after losing the lease (exit {status}): {[p.name for p in visible_files(directory)]}\n{proc.output()}"
    )
    assert status == 1 and "expired or was taken over by another host" in error_lines(proc.stderr())[-1], proc.output()


# --- retries, --dry-run, one run per server ----------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1])
def test_failed_unit_is_retried(master, replica, replica_set, fresh_db, tmp_path, moto_server, s3, bucket, retries) -> None:
    """A storage fault that passes: the unit is tried again (with retries), else the run fails."""
    make_table(master, fresh_db, "flaky", 10, slow=False)
    replica_set.sync()
    # Every PUT of the part fails until botocore has spent its own attempts (1 + 5 retries).
    proxy = FaultProxy(moto_server.port, rule=first(6, puts_of("/part-00000.tsv.lz4")))
    proxy.start()
    try:
        config = run_config(tmp_path, replica, tmp_path / "unused", fresh_db, retries=retries)
        data = yaml.safe_load(config.read_text())
        data.update(destination=f"s3://{bucket}/snap", s3={"endpoint_url": proxy.endpoint_url})
        config.write_text(yaml.safe_dump(data))
        result = run_tracker(config, "run", "--date", DATE, env=moto_server.subprocess_env(), timeout=120)
    finally:
        proxy.stop()
    assert proxy.failed == 6, proxy.failed
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    if retries:
        assert result.returncode == 0, shown(result)
        assert any(k.endswith("flaky/dt=" + DATE + "/_SUCCESS") for k in keys), keys
    else:
        assert result.returncode == 1, shown(result)
        assert keys == [], keys
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_killed_query_is_not_retried(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    """KILL QUERY means stop: the unit fails at once, whatever retries says."""
    make_table(master, fresh_db, "t", 100, slow=False)
    replica_set.sync()
    config = run_config(tmp_path, replica, dest, fresh_db, retries=2)
    with held_table(replica, f"{fresh_db}.t"):
        proc = spawn(tmp_path, config, "run", "--date", DATE)
        try:
            assert wait_for(lambda: held_dumps(replica) or proc.proc.poll() is not None, 60)
            queries = held_dumps(replica)
            assert len(queries) == 1, f"expected one held dump query, got {queries}; {proc.output()}"
            replica.sql(f"KILL QUERY {int(queries[0][0])}")
            status = proc.wait(timeout=60)
        finally:
            proc.kill()
            kill_dump_queries(replica)
    assert status == 1, proc.output()
    assert "(1317)" in proc.output() and "event=retry" not in proc.output(), proc.output()
    assert visible_files(dataset_dir(dest, fresh_db, fresh_db, "t")) == []


def test_dry_run_lists_units_and_touches_nothing(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    make_table(master, fresh_db, "plain", 10, slow=False)
    make_table(master, fresh_db, "parted", 10, slow=False, partitions=2)
    replica_set.sync()
    config = run_config(tmp_path, replica, dest, fresh_db)
    result = run_tracker(config, "run", "--date", DATE, "--dry-run", timeout=60)
    assert result.returncode == 0, shown(result)
    out = result.stdout.decode()
    assert "plain" in out and "parted" in out, shown(result)
    assert visible_files(dest) == [], visible_files(dest)
    assert claims(master, fresh_db) == []


def test_second_run_on_the_same_server_does_nothing(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    """One run per server (run_lock_dir): a second one exits 0 at once (as `run --help` says)."""
    rows = 100
    make_table(master, fresh_db, "t", rows, slow=False)
    replica_set.sync()
    config = run_config(tmp_path, replica, dest, fresh_db)
    with held_table(replica, f"{fresh_db}.t") as release:
        first = spawn(tmp_path, config, "run", "--date", DATE)
        try:
            assert wait_for(lambda: held_dumps(replica) or first.proc.poll() is not None, 60)
            assert first.proc.poll() is None, first.output()
            second = run_tracker(config, "run", "--date", DATE, timeout=60)
            assert first.proc.poll() is None, first.output()  # held: still running
            release()
            assert first.wait(timeout=60) == 0, first.output()
        finally:
            first.kill()
    assert second.returncode == 0, shown(second)
    assert "another tracker run for this server is running" in (second.stdout + second.stderr).decode(), shown(second)
    assert_complete(dataset_dir(dest, fresh_db, fresh_db, "t"), rows)
    rows_ = claims(master, fresh_db)
    assert [int(r["pid"]) for r in rows_] == [first.pid], describe_claims(rows_)


# --- 5. masters ----------------------------------------------------------------------------


def test_master_run_does_nothing_and_dump_needs_allow_master(master, replica_set, fresh_db, tmp_path, dest) -> None:
    make_table(master, fresh_db, "t", 10, slow=False)
    replica_set.sync()
    config = run_config(tmp_path, master, dest, fresh_db)

    result = run_tracker(config, "run", "--date", DATE, timeout=60)
    assert result.returncode == 0, shown(result)
    assert (result.stdout + result.stderr).strip(), "run on a master should say why it did nothing"
    assert b"Traceback" not in result.stderr
    assert visible_files(dest) == [], visible_files(dest)
    assert claims(master, fresh_db) == []

    refused = run_tracker(config, "dump", f"{fresh_db}.t", "--date", DATE, timeout=60)
    assert refused.returncode == 3, shown(refused)
    assert len(error_lines(refused.stderr.decode())) == 1, shown(refused)
    assert visible_files(dest) == [], visible_files(dest)

    allowed = run_tracker(config, "dump", "--allow-master", f"{fresh_db}.t", "--date", DATE, timeout=60)
    assert allowed.returncode == 0, shown(allowed)
    manifest = assert_complete(dataset_dir(dest, fresh_db, fresh_db, "t"), 10)
    assert [source_port(u) for u in manifest["units"]] == [master.port]


# --- 6. not caught up ------------------------------------------------------------------------


def test_stopped_sql_thread_refuses_after_waiting(master, replica2, replica_set, fresh_db, tmp_path, dest) -> None:
    make_table(master, fresh_db, "t", 10, slow=False)
    replica_set.sync()
    config = run_config(tmp_path, replica2, dest, fresh_db, replication={"wait_seconds": 3, "poll_seconds": 1})
    replica2.sql("STOP SLAVE SQL_THREAD")
    try:
        started = time.monotonic()
        result = run_tracker(config, "run", "--date", DATE, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        replica2.sql("START SLAVE SQL_THREAD")
        replica_set.sync()
    assert result.returncode == 3, shown(result)
    # wait_seconds is a floor on any machine; the ceiling only says it gave up (generous: a loaded host)
    assert 2.5 <= elapsed < 60, f"took {elapsed:.1f} s with wait_seconds: 3"
    lines = error_lines(result.stderr.decode())
    assert len(lines) == 1, shown(result)
    assert re.search(r"behind|caught up|short of|not running", lines[0], re.I), lines[0]
    assert visible_files(dest) == [], visible_files(dest)
    assert claims(master, fresh_db) == []


@pytest.mark.parametrize("ts_type", ["VARCHAR(26)", "DATETIME(6)"])
def test_heartbeat_decides_when_caught_up(master, replica, replica_set, fresh_db, tmp_path, dest, ts_type) -> None:
    make_table(master, fresh_db, "t", 10, slow=False)
    hb_db = f"{fresh_db}_hb"
    date = dt.date.fromisoformat(DATE)
    cutoff = date + dt.timedelta(days=1)
    master.sql(f"CREATE DATABASE `{hb_db}`")
    try:
        master.sql(f"CREATE TABLE `{hb_db}`.heartbeat (id INT PRIMARY KEY, ts {ts_type} NOT NULL)")
        master.sql(f"INSERT INTO `{hb_db}`.heartbeat VALUES (1, %s)", (f"{date}T23:59:50.000000",))
        replica_set.sync()
        config = run_config(
            tmp_path,
            replica,
            dest,
            fresh_db,
            replication={"heartbeat_table": f"{hb_db}.heartbeat", "wait_seconds": 2, "poll_seconds": 1},
        )
        early = run_tracker(config, "run", "--date", DATE, timeout=30)
        assert early.returncode == 3, shown(early)
        assert len(error_lines(early.stderr.decode())) == 1, shown(early)
        assert visible_files(dest) == [], visible_files(dest)

        master.sql(f"UPDATE `{hb_db}`.heartbeat SET ts = %s WHERE id = 1", (f"{cutoff}T00:00:05.000000",))
        replica_set.sync()
        result = run_tracker(config, "run", "--date", DATE, timeout=60)
        assert result.returncode == 0, shown(result)
    finally:
        master.sql(f"DROP DATABASE IF EXISTS `{hb_db}`")
        replica_set.sync()
    manifest = assert_complete(dataset_dir(dest, fresh_db, fresh_db, "t"), 10)
    heartbeat = str(manifest["units"][0]["position"]["heartbeat"])
    assert str(cutoff) in heartbeat and "00:00:05" in heartbeat, f"position.heartbeat is {heartbeat!r}"


# --- 7. verify -------------------------------------------------------------------------------


def test_verify_names_incomplete_and_missing_tables(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    for table in ("alpha", "beta"):
        make_table(master, fresh_db, table, 10, slow=False)
    replica_set.sync()
    config = run_config(tmp_path, replica, dest, fresh_db, workers=2)
    result = run_tracker(config, "run", "--date", DATE, timeout=60)
    assert result.returncode == 0, shown(result)

    ok = run_tracker(config, "verify", "--date", DATE, timeout=60)
    assert ok.returncode == 0, shown(ok)

    (dataset_dir(dest, fresh_db, fresh_db, "alpha") / "_SUCCESS").unlink()
    make_table(master, fresh_db, "gamma", 1, slow=False)  # never dumped at all
    replica_set.sync()
    bad = run_tracker(config, "verify", "--date", DATE, timeout=60)
    assert bad.returncode == 1, shown(bad)
    lines = bad.stdout.decode().splitlines()
    for table in ("alpha", "gamma"):
        assert any(f"{fresh_db}.{table}" in line for line in lines), f"{table} not named:\n{shown(bad)}"
    assert not any(f"{fresh_db}.beta" in line for line in lines), f"complete beta named:\n{shown(bad)}"


# --- 8. skip file and dates ------------------------------------------------------------------


def test_skip_file_makes_run_do_nothing(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    make_table(master, fresh_db, "t", 10, slow=False)
    replica_set.sync()
    config = run_config(tmp_path, replica, dest, fresh_db)
    (tmp_path / "skip").write_text("maintenance\n")
    result = run_tracker(config, "run", "--date", DATE, timeout=60)
    assert result.returncode == 0, shown(result)
    assert b"Traceback" not in result.stderr
    assert visible_files(dest) == [], visible_files(dest)
    assert claims(master, fresh_db) == []


@pytest.mark.parametrize("days", [0, 1])
def test_run_refuses_today_and_later(replica, fresh_db, tmp_path, dest, days) -> None:
    day = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=days)
    config = run_config(tmp_path, replica, dest, fresh_db)
    result = run_tracker(config, "run", "--date", day.isoformat(), timeout=60)
    assert result.returncode == 2, shown(result)
    assert len(error_lines(result.stderr.decode())) == 1, shown(result)
    assert visible_files(dest) == []


# --- filters and priority; locks -----------------------------------------------------------


def test_filters_views_and_priority(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    wanted = ("a1", "a2", "zz_first")
    for table in (*wanted, "skipped"):
        make_table(master, fresh_db, table, 100, slow=False)
    master.sql(f"CREATE VIEW `{fresh_db}`.v AS SELECT id FROM `{fresh_db}`.a1")
    replica_set.sync()
    config = run_config(
        tmp_path,
        replica,
        dest,
        fresh_db,
        workers=1,
        tables={"exclude": [r".*\.skip.*"], "priority": [re.escape(fresh_db) + r"\.zz_.*"]},
    )
    order: list[str] = []
    with contextlib.ExitStack() as stack:
        # Each wanted table held on its own: the one worker's dumps are seen one at a time, in order.
        releases = {table: stack.enter_context(held_table(replica, f"{fresh_db}.{table}")) for table in wanted}
        proc = spawn(tmp_path, config, "run", "--date", DATE)
        try:
            for _ in wanted:
                assert wait_for(lambda: held_dumps(replica) or proc.proc.poll() is not None, 60), order
                queries = held_dumps(replica)
                assert len(queries) == 1, f"{queries}; {proc.output()}"
                (table,) = [t for t in wanted if f"`{t}`" in str(queries[0][1])]
                order.append(table)
                releases[table]()
                assert wait_for(lambda table=table: not [q for q in held_dumps(replica) if f"`{table}`" in str(q[1])], 30)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.proc.returncode == 0, proc.output()
    done = sorted(p.parent.parent.name for p in visible_files(dest) if p.name == "_SUCCESS")
    assert done == ["a1", "a2", "zz_first"], done
    assert order[0] == "zz_first" and sorted(order) == sorted(wanted), f"dump order seen: {order}"


def test_locks_lists_claims(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    make_table(master, fresh_db, "heldtbl", 100, slow=False)
    replica_set.sync()
    config = run_config(tmp_path, replica, dest, fresh_db)
    with held_table(replica, f"{fresh_db}.heldtbl") as release:
        proc = spawn(tmp_path, config, "run", "--date", DATE)
        try:
            assert wait_for(lambda: held_dumps(replica) or proc.proc.poll() is not None, 60)
            active = run_tracker(config, "locks", "--date", DATE, timeout=30)
            release()
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.proc.returncode == 0, proc.output()
    assert active.returncode == 0, shown(active)
    assert [line.split()[0] for line in active.stdout.decode().splitlines() if "heldtbl/part-" in line] == ["active"], shown(active)
    finished = run_tracker(config, "locks", "--date", DATE, timeout=30)
    assert finished.returncode == 0, shown(finished)
    assert [line.split()[0] for line in finished.stdout.decode().splitlines() if "heldtbl/part-" in line] == ["done"], shown(finished)
