"""Benchmark: the fixed cost per table of ``tracker run`` (many small tables).

Sharded fleets have tens of thousands of tables per host, most of them
small, so what a run spends per table -- round trips to the master,
statements on the replica, objects written -- decides how long the nightly
run takes, not the bytes.  This creates ``N`` tables of three rows each on
the master of a sandbox replica set (replicated to the replica), flushes
the servers' dirty pages, then times ``tracker run`` of them on one replica:
three runs to ``file://`` (each a date of its own into an empty
destination, the same work every time) and one to S3 (moto).  It prints,
per run and per table:

* wall time (target on ``file://``: at most 2 ms a table, on the median of
  the three runs: one run's time moves by a fifth from minute to minute on
  a small VM), and
* master round trips, counted two ways: tracker's own counter (its run log
  line ``event=run_done ... master_queries=N``, every statement it sent to
  the master) and the master's ``Questions`` status delta around the run
  (every statement any client sent, so it includes connection set-up;
  target: at most 2 a table).

Called from ``scripts/bench.py`` (``--small-tables N``, ``--only
small-tables``), or alone:

    python3 scripts/bench_small_tables.py [--tables 1000] [--keep]

Targets are printed as PASS/FAIL, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
for _path in (REPO, SCRIPTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from sandbox import MariaDB, MotoServer, ReplicaSet, start_replica_set  # noqa: E402
from tests.integration.helpers import tracker_argv, write_config  # noqa: E402

log = logging.getLogger("bench.small_tables")

DB = "small"
BUCKET = "bench-small"
MAX_MS_PER_TABLE = 2.0  # target on file://
MAX_ROUND_TRIPS_PER_TABLE = 2.0  # target, tracker's own count
# Runs to file://, judged on their median: on a 2-core VM one run's time
# moves by a fifth from one minute to the next.
FILE_RUNS = 3
_RUN_DONE = re.compile(r"event=run_done .*master_queries=(\d+)")


@dataclass
class SmallTablesRun:
    destination: str
    tables: int
    wall_s: float
    master_queries: int | None  # tracker's own count (run log); None: this tracker does not count
    master_questions: int  # the master's Questions delta (all clients)
    tables_done: int  # datasets with _SUCCESS afterwards
    cpu_s: float = 0.0  # tracker's own CPU (user + system): less sensitive to a busy machine than wall time

    @property
    def ms_per_table(self) -> float:
        return self.wall_s * 1000 / self.tables

    @property
    def queries_per_table(self) -> float:
        """Tracker's own count a table, else the master's."""
        return (self.master_queries if self.master_queries is not None else self.master_questions) / self.tables

    @property
    def questions_per_table(self) -> float:
        return self.master_questions / self.tables


def create_tables(master: MariaDB, replica_set: ReplicaSet, count: int) -> None:
    """``count`` tables of three rows each on the master, replicated."""
    conn = master.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DB}")
            cur.execute(f"CREATE DATABASE {DB}")
            for index in range(count):
                name = f"{DB}.t{index:05d}"
                cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, name VARCHAR(32), amount DECIMAL(10,2))")
                cur.execute(f"INSERT INTO {name} VALUES (1, 'one', 1.50), (2, 'two', 2.25), (3, NULL, -3.00)")
    finally:
        conn.close()
    replica_set.sync(timeout=600)
    # A thousand new tables leave InnoDB flushing for a while: not the runs' to pay.
    for server in (master, *replica_set.replicas):
        server.flush_dirty_pages()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def questions(master: MariaDB) -> int:
    return int(master.sql("SHOW GLOBAL STATUS LIKE 'Questions'")[0][1])


def run_once(
    label: str, config: Path, env: dict[str, str] | None, master: MariaDB, date: str, count: int, done: Callable[[str], int]
) -> SmallTablesRun:
    """One ``tracker run`` of every table; fails loudly unless every table was finished."""
    before = questions(master)
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(tracker_argv(config, "run", "--date", date), env=env, capture_output=True, timeout=3600)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    asked = questions(master) - before - 1  # leave out our own SHOW STATUS
    output = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"tracker run -> {label} exited {proc.returncode}:\n{output[-4000:]}")
    match = _RUN_DONE.search(output)
    if match is None:  # a tracker without the counter: only the master's count
        log.warning("tracker run -> %s: no master_queries on its event=run_done line", label)
    counted = int(match.group(1)) if match else None
    run = SmallTablesRun(label, count, wall, counted, asked, done(date), cpu)
    log.info(
        "small tables -> %s: %d tables in %.2f s (%.2f ms a table), master queries %s (%.2f a table), Questions %d",
        label, count, wall, run.ms_per_table, run.master_queries, run.queries_per_table, asked,
    )
    if run.tables_done != count:
        raise RuntimeError(f"tracker run -> {label}: {run.tables_done} of {count} tables have _SUCCESS")
    return run


def measure(
    replica_set: ReplicaSet, moto: MotoServer, work: Path, count: int, file_runs: int = FILE_RUNS
) -> list[SmallTablesRun]:
    """Create the tables, then ``file_runs`` runs to file:// (each a date of its own, into an
    empty destination) and one to S3 (moto)."""
    master, replica = replica_set.master, replica_set.replicas[0]
    log.info("creating %d small tables", count)
    create_tables(master, replica_set, count)
    moto.create_bucket(BUCKET)
    lock_dir = work / "small-runlock"
    lock_dir.mkdir(exist_ok=True)
    common = {
        "namespace": "small",
        "tables": {"include": [rf"{DB}\..*"]},
        "skip_file": str(work / "no-skip-file"),
        "run_lock_dir": str(lock_dir),
    }
    client = moto.client()

    def done_file(dest: Path) -> Callable[[str], int]:
        return lambda date: sum(1 for _ in (dest / "small" / DB).glob(f"*/dt={date}/_SUCCESS"))

    def done_s3(date: str) -> int:
        found = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"bench/small/{DB}/"):
            found += sum(1 for o in page.get("Contents", []) if o["Key"].endswith(f"/dt={date}/_SUCCESS"))
        return found

    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    runs = []
    for index in range(file_runs):
        # Every run the same work: a new date into an empty destination (every folder made anew).
        dest = work / f"small-dest-{index}"
        dest.mkdir(exist_ok=True)
        file_config = write_config(work, replica, f"file://{dest}", **common)
        date = (yesterday - dt.timedelta(days=1 + index)).isoformat()
        runs.append(run_once("file://", file_config, None, master, date, count, done_file(dest)))
    s3_config = write_config(work, replica, f"s3://{BUCKET}/bench", s3={"endpoint_url": moto.endpoint_url}, **common)
    date = (yesterday - dt.timedelta(days=1 + file_runs)).isoformat()
    runs.append(run_once("s3 (moto)", s3_config, moto.subprocess_env(), master, date, count, done_s3))
    return runs


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def format_lines(runs: Sequence[SmallTablesRun]) -> list[str]:
    """The report's lines for the small-tables measurement."""
    lines = [f"many small tables ({runs[0].tables} tables of 3 rows, tracker run, one replica):"] if runs else []
    for run in runs:
        lines.append(
            f"  {run.destination:<10} {run.wall_s:6.2f} s  {run.ms_per_table:5.2f} ms/table"
            f" (tracker CPU {run.cpu_s * 1000 / run.tables:5.2f} ms/table)"
            f"  master queries {run.queries_per_table:4.2f}/table (tracker's count {run.master_queries},"
            f" master Questions {run.questions_per_table:4.2f}/table)"
        )
    on_files = [run for run in runs if run.destination == "file://"]
    if on_files:
        ms = statistics.median(run.ms_per_table for run in on_files)
        trips = statistics.median(run.queries_per_table for run in on_files)
        lines.append(
            f"  targets on file:// (median of {len(on_files)} runs, {ms:.2f} ms/table,"
            f" {min(r.ms_per_table for r in on_files):.2f}-{max(r.ms_per_table for r in on_files):.2f}):"
            f" <= {MAX_MS_PER_TABLE:g} ms/table: {_pass(ms <= MAX_MS_PER_TABLE)};"
            f" <= {MAX_ROUND_TRIPS_PER_TABLE:g} master round trips/table: {_pass(trips <= MAX_ROUND_TRIPS_PER_TABLE)}"
        )
    return lines


def to_json(runs: Sequence[SmallTablesRun]) -> list[dict]:
    return [
        {
            "destination": r.destination,
            "tables": r.tables,
            "wall_s": r.wall_s,
            "ms_per_table": r.ms_per_table,
            "tracker_cpu_s": r.cpu_s,
            "master_queries": r.master_queries,
            "master_queries_per_table": r.queries_per_table,
            "master_questions": r.master_questions,
        }
        for r in runs
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=1000, help="small tables to create [1000]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    root = Path(tempfile.mkdtemp(prefix="tbs-", dir="/tmp"))  # short: unix socket paths <= 107 bytes
    work = Path(tempfile.mkdtemp(prefix="tbs-work-", dir="/tmp"))
    moto = MotoServer(work / "moto")
    replica_set = None
    try:
        replica_set = start_replica_set(root, replicas=1)
        moto.start()
        runs = measure(replica_set, moto, work, args.tables)
    finally:
        moto.stop()
        if replica_set is not None:
            replica_set.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(format_lines(runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
