"""Benchmark: how close ``tracker dump`` comes to the server's own OUTFILE.

tracker cannot be faster than the ``SELECT ... INTO OUTFILE`` it runs: the
server formats every row and writes the file, and tracker only follows that
file (un-escape NULs, lz4, upload).  So the server's bare OUTFILE of the same
table is the limit tracker is measured against:

* wall time of ``tracker dump`` against the bare OUTFILE's wall time
  (target: file:// within 1.15x), and
* tracker's own CPU per GB against the server's CPU per GB for the bare
  OUTFILE (target: at most 0.5x, so tracker keeps up with the server on a
  host where both share the cores),

plus tracker's peak RSS and the peak bytes held in ``outfile_dir`` (the
follow source unlinks the file and punches holes behind its reader).

Everything runs on a local sandbox: a MariaDB master and one replica
(``sandbox.start_replica_set``) and a moto S3 server.  The table
``bench.blobs`` is generated on the replica only (binlog off for the session)
with binary data full of NULs and backslashes in every row, the worst case
for the NUL un-escaper, and the buffer pool is warmed so every timed run
reads from memory.  Each measurement runs ``--runs`` times; the fastest is
kept and all are reported.  "GB" is 1e9 bytes of the bare OUTFILE's size.

Targets are printed as PASS/FAIL, never asserted: the script exits 0 when a
target is missed, and non-zero only when the bench itself could not run.

    python3 scripts/bench.py [--mb 1000] [--runs 2] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sandbox import MariaDB, MotoServer, ReplicaSet, start_replica_set  # noqa: E402
from tests.integration.helpers import Sampler, outfile_bytes_on_disk, peak_rss, write_config  # noqa: E402

log = logging.getLogger("bench")
_RUN_NUMBER = itertools.count()

DB = "bench"
TABLE = "blobs"
DATE = "2026-11-01"
BUCKET = "bench"
BUFFER_POOL_MB = 2048
# Bytes of column data per generated row: 4 (id) + 8 (a) + 882 (b: random, 80 dense NULs and backslashes, LF, TAB, random) + 32 (c).
ROW_DATA_BYTES = 4 + 8 + (400 + 80 + 2 + 400) + 32
BATCH_ROWS = 50_000
QUIESCE_TIMEOUT_S = 300.0
QUIESCE_IO_CAPACITY = 20_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_WALL_RATIO = 1.15
TARGET_CPU_RATIO = 0.5


# --- results -------------------------------------------------------------------


class BenchError(Exception):
    """The bench itself could not run (not a missed target)."""


@dataclass
class Machine:
    cpu: str
    cores: int
    mem_gib: float
    kernel: str
    mariadb: str
    python: str


@dataclass
class TableFacts:
    name: str
    rows: int
    data_bytes: int  # SUM of column lengths, as generated
    outfile_bytes: int  # size of the bare OUTFILE


@dataclass
class BareRun:
    wall_s: float
    server_cpu_s: float
    outfile_bytes: int


@dataclass
class TrackerRun:
    destination: str
    wall_s: float
    tracker_cpu_s: float
    server_cpu_s: float
    peak_rss_bytes: int
    peak_outfile_dir_bytes: int
    harness_cpu_s: float  # this script's own CPU meanwhile (mostly the samplers)
    moto_cpu_s: float | None = None  # the moto server's CPU, for s3:// runs
    server_file_from_s: float | None = None  # the server held its OUTFILE open from ...
    server_file_to_s: float | None = None  # ... to, in seconds after tracker started
    unit_secs: float | None = None  # tracker's own log: the unit's pipeline time
    raw_bytes: int | None = None  # tracker's own log: bytes after NUL un-escape
    stored_bytes: int | None = None  # tracker's own log: bytes after compression


@dataclass
class Series:
    """Every run of one measurement; ``best`` is the fastest by wall time."""

    runs: list[Any] = field(default_factory=list)

    @property
    def best(self) -> Any:
        return min(self.runs, key=lambda r: r.wall_s)


@dataclass
class Results:
    machine: Machine
    table: TableFacts
    bare: Series
    tracker: dict[str, Series]  # label -> runs


# --- measuring helpers -----------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # Fields after the command name start at field 3 (state); utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RssWatcher:
    """Reads a child's VmHWM every ``interval`` until it exits; keeps the last value read."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def __enter__(self) -> "RssWatcher":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = peak_rss(self.pid)
            except OSError:
                return  # gone
            if value:  # a zombie has no VmHWM line; keep what was read before
                self.peak = value
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class OpenFileWatcher:
    """When a process held a file under ``directory`` open, relative to ``t0``.

    For the server during a tracker run this is its OUTFILE's own duration,
    so tracker's wall time can be split into before, during and after it.
    """

    def __init__(self, pid: int, directory: Path, t0: float, interval: float = 0.02) -> None:
        self.pid = pid
        self.prefix = str(directory)
        self.t0 = t0
        self.interval = interval
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="open-file", daemon=True)

    def __enter__(self) -> "OpenFileWatcher":
        self._thread.start()
        return self

    def _holds_file(self) -> bool:
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                if os.readlink(fd).startswith(self.prefix):
                    return True
            except OSError:
                continue
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter() - self.t0
            try:
                if self._holds_file():
                    self.first = now if self.first is None else self.first
                    self.last = now
            except OSError:
                pass
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- sandbox and data ------------------------------------------------------------


def machine_info(server: MariaDB) -> Machine:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    (version,) = server.sql("SELECT VERSION()")[0]
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 0,
        mem_gib=round(mem_kib / 1024**2, 1),
        kernel=platform.release(),
        mariadb=str(version),
        python=platform.python_version(),
    )


def generate_table(replica: MariaDB, mb: int) -> None:
    """Create ``bench.blobs`` with at least ``mb`` MB of column data, on the replica only."""
    rows = -(-mb * 1_000_000 // ROW_DATA_BYTES)
    conn = replica.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")  # never reaches the binlog or the master
            cur.execute(f"DROP DATABASE IF EXISTS {DB}")
            cur.execute(f"CREATE DATABASE {DB}")
            cur.execute(f"USE {DB}")  # the seq_1_to_N tables need a current database
            cur.execute(
                f"CREATE TABLE {DB}.{TABLE} (id INT PRIMARY KEY, a BIGINT, b VARBINARY(1000), c VARCHAR(100))"
            )
            started = time.monotonic()
            for first in range(1, rows + 1, BATCH_ROWS):
                last = min(first + BATCH_ROWS - 1, rows)
                cur.execute(
                    f"INSERT INTO {DB}.{TABLE} SELECT seq, seq * 7,"
                    " CONCAT(RANDOM_BYTES(400), REPEAT(x'005c', 40), x'0a09', RANDOM_BYTES(400)), MD5(seq)"
                    f" FROM seq_{first}_to_{last}"
                )
                log.info("generated %d/%d rows (%.0fs)", last, rows, time.monotonic() - started)
    finally:
        conn.close()


def quiesce(replica: MariaDB) -> None:
    """Flush dirty pages now, so background flushing does not bill the timed runs.

    The flush rate is raised for the while: at the default io_capacity of
    200 pages/s a few hundred MB would take minutes.
    """
    names = ("innodb_io_capacity_max", "innodb_io_capacity", "innodb_max_dirty_pages_pct")
    saved = {name: replica.sql(f"SELECT @@GLOBAL.{name}")[0][0] for name in names}
    for name, value in zip(names, (QUIESCE_IO_CAPACITY, QUIESCE_IO_CAPACITY, 0)):
        replica.sql(f"SET GLOBAL {name} = {value}")
    started = time.monotonic()
    try:
        while (dirty := _dirty_pages(replica)) > 0:
            if time.monotonic() - started > QUIESCE_TIMEOUT_S:
                log.warning("%d dirty pages still unflushed after %.0fs", dirty, QUIESCE_TIMEOUT_S)
                break
            time.sleep(0.2)
    finally:
        for name in reversed(names):  # io_capacity before io_capacity_max: max >= capacity
            replica.sql(f"SET GLOBAL {name} = {saved[name]}")
    log.info("flushed dirty pages in %.1fs", time.monotonic() - started)


def _dirty_pages(replica: MariaDB) -> int:
    (_, dirty) = replica.sql("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")[0]
    return int(dirty)


def warm(replica: MariaDB) -> tuple[int, int]:
    """Read the whole table once (into the buffer pool); returns rows and data bytes."""
    started = time.monotonic()
    (rows, blob_bytes, data_bytes) = replica.sql(
        f"SELECT COUNT(*), SUM(LENGTH(b)), SUM(4 + 8 + LENGTH(b) + LENGTH(c)) FROM {DB}.{TABLE}"
    )[0]
    log.info("warmed %d rows, %d blob bytes in %.1fs", rows, blob_bytes, time.monotonic() - started)
    return int(rows), int(data_bytes)


def check_buffer_pool(replica: MariaDB) -> None:
    """Warn if the table could not all fit in the buffer pool (runs would read disk)."""
    status = dict(replica.sql("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_%'"))
    free, total = int(status.get("Innodb_buffer_pool_pages_free", 0)), int(status["Innodb_buffer_pool_pages_total"])
    log.info("buffer pool: %d of %d pages free", free, total)
    if free == 0:
        log.warning("buffer pool full: timed runs may read from disk")


# --- the timed runs --------------------------------------------------------------


def bare_outfile(replica: MariaDB, index: int) -> BareRun:
    """The server alone: ``SELECT * INTO OUTFILE`` as root, then delete the file."""
    path = replica.outfile_dir / f"bare-{index}.tsv"
    conn = replica.connect()
    try:
        statement = f"SELECT * FROM {DB}.{TABLE} INTO OUTFILE {conn.escape(str(path))}"
        cpu0 = process_cpu_seconds(replica.pid)
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(statement)
        wall = time.perf_counter() - t0
        cpu = process_cpu_seconds(replica.pid) - cpu0
    finally:
        conn.close()
    size = path.stat().st_size
    path.unlink()
    run = BareRun(wall_s=wall, server_cpu_s=cpu, outfile_bytes=size)
    log.info("bare OUTFILE %d: %.2fs wall, server CPU %.2fs, %d bytes", index, wall, cpu, size)
    return run


_UNIT_DONE = re.compile(r"event=unit_done .*?rows=\d+ bytes=(\d+) raw_bytes=(\d+) secs=([\d.]+)")


def _read_unit_log(run: TrackerRun, stderr: str) -> None:
    """Copy the figures of tracker's own ``event=unit_done`` log line, if present."""
    if match := _UNIT_DONE.search(stderr):
        run.stored_bytes, run.raw_bytes, run.unit_secs = int(match[1]), int(match[2]), float(match[3])


def run_tracker(
    label: str, config: Path, replica: MariaDB, env: dict[str, str] | None, moto: MotoServer | None
) -> TrackerRun:
    """One ``tracker dump`` subprocess with every meter running around it."""
    # A new date every run, as in the nightly job: nothing to replace, so no
    # deletion of the previous run's dataset is timed.
    date = (dt.date.fromisoformat(DATE) - dt.timedelta(days=next(_RUN_NUMBER))).isoformat()
    argv = [sys.executable, "-m", "tracker", "--config", str(config), "dump", f"{DB}.{TABLE}", "--date", date]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        children0, self0 = children_cpu_seconds(), self_cpu_seconds()
        server0 = process_cpu_seconds(replica.pid)
        moto0 = process_cpu_seconds(moto.pid) if moto else 0.0
        t0 = time.perf_counter()
        # Only the server's descriptors: scanning every process every 20 ms
        # cost a quarter of a core and slowed the server being measured.
        with Sampler(lambda: outfile_bytes_on_disk(replica, [replica.pid])) as disk, OpenFileWatcher(
            replica.pid, replica.outfile_dir, t0
        ) as server_file:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            with RssWatcher(proc.pid) as rss:
                code = proc.wait()
            wall = time.perf_counter() - t0
        server_cpu = process_cpu_seconds(replica.pid) - server0
        moto_cpu = process_cpu_seconds(moto.pid) - moto0 if moto else None
        tracker_cpu = children_cpu_seconds() - children0
        harness_cpu = self_cpu_seconds() - self0
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if code != 0:
        raise BenchError(f"tracker -> {label} exited {code}; stderr:\n{stderr}")
    run = TrackerRun(
        destination=label,
        wall_s=wall,
        tracker_cpu_s=tracker_cpu,
        server_cpu_s=server_cpu,
        peak_rss_bytes=rss.peak,
        peak_outfile_dir_bytes=disk.peak,
        harness_cpu_s=harness_cpu,
        moto_cpu_s=moto_cpu,
        server_file_from_s=server_file.first,
        server_file_to_s=server_file.last,
    )
    _read_unit_log(run, stderr)
    log.info(
        "tracker -> %s: %.2fs wall, tracker CPU %.2fs, server CPU %.2fs, RSS %.0f MB, outfile_dir %.1f MB",
        label, wall, tracker_cpu, server_cpu, rss.peak / 1e6, disk.peak / 1e6,
    )
    return run


# --- report ----------------------------------------------------------------------


def per_gb(seconds: float, nbytes: int) -> float:
    return seconds / (nbytes / 1e9)


def targets(results: Results) -> dict[str, Any]:
    bare = results.bare.best
    file_run = results.tracker["file://"].best
    wall_ratio = file_run.wall_s / bare.wall_s
    cpu_ratio = file_run.tracker_cpu_s / bare.server_cpu_s
    return {
        "file_wall_ratio": wall_ratio,
        "file_wall_pass": wall_ratio <= TARGET_WALL_RATIO,
        "tracker_cpu_ratio": cpu_ratio,
        "tracker_cpu_pass": cpu_ratio <= TARGET_CPU_RATIO,
    }


def _runs_note(runs: Sequence[Any]) -> str:
    return "runs: " + ", ".join(f"{r.wall_s:.1f}" for r in runs) + " s"


def _details(r: TrackerRun, size: int, runs: Sequence[TrackerRun]) -> list[str]:
    """Indented lines that say where a tracker run's time and CPU went."""
    indent = " " * 23
    timeline = indent
    if r.server_file_from_s is not None and r.server_file_to_s is not None:
        timeline += (
            f"server wrote its OUTFILE +{r.server_file_from_s:.1f}..+{r.server_file_to_s:.1f} s"
            f" ({r.server_file_to_s - r.server_file_from_s:.1f} s), tracker exited +{r.wall_s:.1f} s"
        )
    else:
        timeline += "server OUTFILE not seen"
    if r.unit_secs is not None:
        timeline += f"   unit pipeline {r.unit_secs:.1f} s"
    cpu = f"{indent}CPU s/GB meanwhile: server {per_gb(r.server_cpu_s, size):.2f}"
    if r.moto_cpu_s is not None:
        cpu += f", moto {per_gb(r.moto_cpu_s, size):.2f}"
    cpu += f", this harness {per_gb(r.harness_cpu_s, size):.2f}   ({_runs_note(runs)})"
    return [timeline, cpu]


def format_report(results: Results) -> str:
    m, t = results.machine, results.table
    bare = results.bare.best
    size = bare.outfile_bytes
    lines = [
        f"machine: {m.cpu}, {m.cores} cores, {m.mem_gib:.1f} GiB, {m.kernel}, MariaDB {m.mariadb}, Python {m.python}",
        f"table: {t.name}, {t.rows} rows, {t.data_bytes / 1e6:.0f} MB of column data, OUTFILE {size / 1e6:.0f} MB",
        f"{'bare OUTFILE:':<23}{bare.wall_s:6.1f} s   server CPU {per_gb(bare.server_cpu_s, size):.2f} s/GB"
        f"   ({_runs_note(results.bare.runs)})",
    ]
    for label, series in results.tracker.items():
        r = series.best
        name = "tracker -> s3 (moto):" if label == "s3://" else f"tracker -> {label}:"
        line = (
            f"{name:<23}{r.wall_s:6.1f} s   {r.wall_s / bare.wall_s:.2f}x bare"
            f"   tracker CPU {per_gb(r.tracker_cpu_s, size):.2f} s/GB"
            f" ({r.tracker_cpu_s / bare.server_cpu_s:.2f}x server's OUTFILE CPU)"
            f"   peak RSS {r.peak_rss_bytes / 1e6:.0f} MB   peak outfile_dir {r.peak_outfile_dir_bytes / 1e6:.1f} MB"
        )
        lines += [line, *_details(r, size, series.runs)]
    verdict = targets(results)
    lines.append(
        f"targets: file:// <= {TARGET_WALL_RATIO}x bare: {'PASS' if verdict['file_wall_pass'] else 'FAIL'}"
        f" ({verdict['file_wall_ratio']:.2f}x);"
        f" tracker CPU <= {TARGET_CPU_RATIO}x server OUTFILE CPU: {'PASS' if verdict['tracker_cpu_pass'] else 'FAIL'}"
        f" ({verdict['tracker_cpu_ratio']:.2f}x, file:// run)"
    )
    return "\n".join(lines)


def to_json(results: Results) -> dict[str, Any]:
    size = results.bare.best.outfile_bytes

    def series(s: Series, cpu_keys: Sequence[str]) -> dict[str, Any]:
        best = asdict(s.best)
        for key in cpu_keys:
            if best.get(key) is not None:
                best[key.removesuffix("_s") + "_s_per_gb"] = per_gb(best[key], size)
        return {"best": best, "runs": [asdict(r) for r in s.runs]}

    data: dict[str, Any] = {
        "machine": asdict(results.machine),
        "table": asdict(results.table),
        "gb": size / 1e9,
        "bare_outfile": series(results.bare, ["server_cpu_s"]),
        "tracker": {},
        "targets": targets(results),
    }
    for label, s in results.tracker.items():
        entry = series(s, ["tracker_cpu_s", "server_cpu_s", "moto_cpu_s", "harness_cpu_s"])
        entry["best"]["wall_ratio_to_bare"] = s.best.wall_s / results.bare.best.wall_s
        entry["best"]["cpu_ratio_to_bare_server"] = s.best.tracker_cpu_s / results.bare.best.server_cpu_s
        data["tracker"][label] = entry
    return data


# --- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1000, help="MB of table data to generate [1000]")
    parser.add_argument("--runs", type=int, default=2, help="runs of each measurement; the fastest is kept [2]")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)
    if args.mb < 1 or args.runs < 1:
        parser.error("--mb and --runs must be at least 1")
    return args


def bench(args: argparse.Namespace, root: Path, work: Path) -> Results:
    replica_set: ReplicaSet | None = None
    moto = MotoServer(work / "moto")
    try:
        log.info("starting sandbox under %s", root)
        replica_set = start_replica_set(root, replicas=1, buffer_pool_mb=BUFFER_POOL_MB)
        replica = replica_set.replicas[0]
        moto.start()
        moto.create_bucket(BUCKET)
        return measure(args, replica, moto, work)
    finally:
        _stop(moto.stop, "moto server")
        if replica_set is not None:
            _stop(replica_set.stop, "replica set")


def measure(args: argparse.Namespace, replica: MariaDB, moto: MotoServer, work: Path) -> Results:
    machine = machine_info(replica)
    generate_table(replica, args.mb)
    quiesce(replica)
    rows, data_bytes = warm(replica)
    check_buffer_pool(replica)
    dest = work / "dest"
    dest.mkdir()
    configs: list[tuple[str, Path, dict[str, str] | None, MotoServer | None]] = [
        ("file://", write_config(work, replica, f"file://{dest}", workers=1), None, None),
        (
            "s3://",
            write_config(work, replica, f"s3://{BUCKET}/bench", workers=1, s3={"endpoint_url": moto.endpoint_url}),
            moto.subprocess_env(),
            moto,
        ),
    ]
    bare = Series()
    tracked = {label: Series() for label, *_ in configs}
    # Interleaved rounds, so a drift of the machine hits every measurement alike.
    for index in range(1, args.runs + 1):
        log.info("round %d of %d", index, args.runs)
        bare.runs.append(bare_outfile(replica, index))
        for label, config, env, server in configs:
            tracked[label].runs.append(run_tracker(label, config, replica, env, server))
    table = TableFacts(f"{DB}.{TABLE}", rows, data_bytes, bare.best.outfile_bytes)
    return Results(machine, table, bare, tracked)


def _stop(stop: Callable[[], None], what: str) -> None:
    try:
        stop()
    except Exception as exc:  # keep tearing down the rest
        log.error("stopping %s failed: %s", what, exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    root = Path(tempfile.mkdtemp(prefix="tb-", dir="/tmp"))  # short: unix socket paths <= 107 bytes
    work = Path(tempfile.mkdtemp(prefix="tb-work-", dir="/tmp"))
    try:
        results = bench(args, root, work)
    except BenchError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if args.keep:
            log.info("kept %s and %s", root, work)
        else:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    print(format_report(results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results), indent=2) + "\n")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
