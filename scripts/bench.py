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

The same table is also dumped chunked: ``chunk_mb`` about a tenth of the
table (so ~10 primary-key ranges) with ``workers: 2`` (target: at most 0.75x
the one-unit time), and, if Debian's ``mydumper`` is installed, by mydumper
with as many threads, chunked by ``--rows`` into ~10 ranges, its files then
compressed with lz4 and uploaded to the same moto S3 by
``scripts/bench_mydumper.py`` (target: tracker to S3 faster than that).  The
units a chunked run produced are counted from its manifest, so a run that
was not chunked shows as such.

Everything runs on a local sandbox: a MariaDB master and one replica
(``sandbox.start_replica_set``) and a moto S3 server.  The table
``bench.blobs`` is generated on the replica only (binlog off for the session)
with binary data full of NULs and backslashes in every row, the worst case
for the NUL un-escaper, and the buffer pool is warmed so every timed run
reads from memory.  Each measurement runs ``--runs`` times; the fastest is
kept and all are reported.  "GB" is 1e9 bytes of the bare OUTFILE's size.

Targets are printed as PASS/FAIL, never asserted: the script exits 0 when a
target is missed, and non-zero only when the bench itself could not run.

    python3 scripts/bench.py [--mb 1000] [--runs 2] [--json PATH] [--keep] [--skip-mydumper] [--skip-convert]
                             [--small-tables 1000] [--only small-tables]

``--small-tables N`` (default 1000, 0 skips it) also times ``tracker run`` of
N tables of three rows each (``scripts/bench_small_tables.py``): time and
master round trips per table.

A quick check: ``--mb 200 --runs 1``.
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

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
for _path in (REPO, SCRIPTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_convert  # noqa: E402
import bench_mydumper  # noqa: E402
import bench_small_tables  # noqa: E402
from sandbox import TRACKER_PASSWORD, TRACKER_USER, MariaDB, MotoServer, ReplicaSet, start_replica_set  # noqa: E402
from tests.integration.helpers import Sampler, outfile_bytes_on_disk, peak_rss, write_config  # noqa: E402
from tracker.store.layout import DatasetKeys  # noqa: E402

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
TARGET_CHUNKED_RATIO = 0.75  # chunked, 2 workers, against one unit
CHUNKS = 10  # wanted units (tracker) and chunks (mydumper) of the table
PARALLEL = 2  # tracker's workers and mydumper's threads (and lz4 + upload threads)
NAMESPACE = "main"  # write_config's
S3_PREFIX = "bench"

# The tracker runs, by label; a chunked run is compared with the one-unit run to the same destination.
FILE, S3, FILE_CHUNKED, S3_CHUNKED = "file://", "s3://", "file:// chunked", "s3:// chunked"
ONE_UNIT_OF = {FILE_CHUNKED: FILE, S3_CHUNKED: S3}
NAMES = {
    FILE: "tracker -> file://:",
    S3: "tracker -> s3 (moto):",
    FILE_CHUNKED: "chunked -> file://:",
    S3_CHUNKED: "chunked -> s3 (moto):",
}
INDENT = " " * 23


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
    server_bytes: int  # the server's DATA_LENGTH, after ANALYZE TABLE


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
    unit_secs: float | None = None  # tracker's own log: the longest unit's pipeline time
    unit_secs_sum: float | None = None  # tracker's own log: all units' pipeline times added up
    raw_bytes: int | None = None  # tracker's own log: bytes after NUL un-escape, all units
    stored_bytes: int | None = None  # tracker's own log: bytes after compression, all units
    units_logged: int = 0  # ``event=unit_done`` lines in tracker's log
    units: int | None = None  # units in the dataset's manifest.json (None: not read)


@dataclass
class MydumperRun:
    """mydumper to a local directory, then its files through lz4 to S3; ``wall_s`` is both."""

    wall_s: float
    dump_s: float  # mydumper alone
    upload_s: float  # lz4 + upload alone
    mydumper_cpu_s: float
    upload_cpu_s: float
    server_cpu_s: float  # during mydumper
    server_cpu_upload_s: float  # during lz4 + upload (should be ~0)
    moto_cpu_s: float  # during lz4 + upload
    harness_cpu_s: float
    mydumper_peak_rss_bytes: int
    upload_peak_rss_bytes: int
    chunks: int  # mydumper's data files of the table
    files: int  # every file uploaded (data, schema, metadata)
    dump_bytes: int  # what mydumper wrote
    stored_bytes: int  # what landed in S3 (lz4)


@dataclass
class Series:
    """Every run of one measurement; ``best`` is the fastest by wall time."""

    runs: list[Any] = field(default_factory=list)

    @property
    def best(self) -> Any:
        return min(self.runs, key=lambda r: r.wall_s)


@dataclass
class Settings:
    """How the chunked and mydumper runs were set up, derived from the table."""

    chunk_mb: int  # tracker's chunk_mb for the chunked runs
    workers: int  # tracker's workers for the chunked runs
    rows_per_chunk: int  # mydumper --rows
    threads: int  # mydumper --threads, and lz4 + upload threads
    mydumper: str | None = None  # its version line, when it ran
    mydumper_skipped: str | None = None  # why it did not run


@dataclass
class Results:
    machine: Machine
    table: TableFacts
    bare: Series
    tracker: dict[str, Series]  # label -> runs
    settings: Settings
    mydumper: Series | None = None
    convert: bench_convert.ConvertResults | None = None  # stage 2, unless --skip-convert


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
    """Flush dirty pages now, so background flushing does not bill the timed runs."""
    seconds = replica.flush_dirty_pages(QUIESCE_TIMEOUT_S, QUIESCE_IO_CAPACITY)
    log.info("flushed dirty pages in %.1fs", seconds)


def warm(replica: MariaDB) -> tuple[int, int]:
    """Read the whole table once (into the buffer pool); returns rows and data bytes."""
    started = time.monotonic()
    (rows, blob_bytes, data_bytes) = replica.sql(
        f"SELECT COUNT(*), SUM(LENGTH(b)), SUM(4 + 8 + LENGTH(b) + LENGTH(c)) FROM {DB}.{TABLE}"
    )[0]
    log.info("warmed %d rows, %d blob bytes in %.1fs", rows, blob_bytes, time.monotonic() - started)
    return int(rows), int(data_bytes)


def server_table_bytes(replica: MariaDB) -> int:
    """The table's size as the server reports it (``DATA_LENGTH``), what tracker sizes units by."""
    replica.sql(f"ANALYZE NO_WRITE_TO_BINLOG TABLE {DB}.{TABLE}")  # fresh statistics; not binlogged: the table is the replica's alone
    (data_length,) = replica.sql(
        "SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (DB, TABLE)
    )[0]
    return int(data_length)


def settings_for(table_bytes: int, rows: int) -> Settings:
    """``chunk_mb`` and ``--rows`` that cut the table into about ``CHUNKS`` pieces."""
    return Settings(
        chunk_mb=max(1, round(table_bytes / CHUNKS / 2**20)),  # tracker's MB: MiB, as for part_size_mb
        workers=PARALLEL,
        rows_per_chunk=max(1, -(-rows // CHUNKS)),
        threads=PARALLEL,
    )


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


@dataclass
class Metered:
    """One subprocess's exit status, output, wall time, CPU and peak RSS, and the servers' CPU meanwhile."""

    code: int
    output: str  # stdout and stderr together
    wall_s: float
    cpu_s: float
    server_cpu_s: float
    moto_cpu_s: float | None
    harness_cpu_s: float
    peak_rss_bytes: int


def _metered(argv: list[str], env: dict[str, str] | None, replica: MariaDB, moto: MotoServer | None) -> Metered:
    """Run ``argv`` to its end with the CPU and RSS meters around it."""
    with tempfile.TemporaryFile() as out:
        children0, self0 = children_cpu_seconds(), self_cpu_seconds()
        server0 = process_cpu_seconds(replica.pid)
        moto0 = process_cpu_seconds(moto.pid) if moto else 0.0
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        with RssWatcher(proc.pid) as rss:
            code = proc.wait()
        wall = time.perf_counter() - t0
        server_cpu = process_cpu_seconds(replica.pid) - server0
        moto_cpu = process_cpu_seconds(moto.pid) - moto0 if moto else None
        cpu, harness_cpu = children_cpu_seconds() - children0, self_cpu_seconds() - self0
        out.seek(0)
        output = out.read().decode(errors="replace")
    return Metered(code, output, wall, cpu, server_cpu, moto_cpu, harness_cpu, rss.peak)


_UNIT_DONE = re.compile(r"event=unit_done .*?rows=\d+ bytes=(\d+) raw_bytes=(\d+) secs=([\d.]+)")


def _read_unit_log(run: TrackerRun, stderr: str) -> None:
    """Copy the figures of tracker's own ``event=unit_done`` log lines, if present."""
    matches = _UNIT_DONE.findall(stderr)
    run.units_logged = len(matches)
    if matches:
        run.stored_bytes = sum(int(m[0]) for m in matches)
        run.raw_bytes = sum(int(m[1]) for m in matches)
        run.unit_secs = max(float(m[2]) for m in matches)
        run.unit_secs_sum = sum(float(m[2]) for m in matches)


@dataclass
class TrackerSetup:
    """One way of running ``tracker dump``: its config, environment and where its manifest lands."""

    label: str
    config: Path
    env: dict[str, str] | None
    moto: MotoServer | None  # the S3 server, for s3:// destinations
    read_manifest: Callable[[str], bytes]  # key relative to the destination -> the object
    clean: Callable[[], None]  # removes what the run wrote (untimed), so runs do not pile up

    def units(self, date: str) -> int | None:
        """Units in the manifest of ``date``'s dataset, or None (logged) when it cannot be read."""
        key = DatasetKeys(NAMESPACE, DB, TABLE, dt.date.fromisoformat(date)).manifest
        try:
            return len(json.loads(self.read_manifest(key))["units"])
        except Exception as exc:  # a missing manifest is reported, not fatal
            log.warning("tracker -> %s: cannot read %s: %s", self.label, key, exc)
            return None


def file_setup(label: str, config: Path, dest: Path) -> TrackerSetup:
    return TrackerSetup(
        label, config, None, None, lambda key: (dest / key).read_bytes(), lambda: shutil.rmtree(dest / NAMESPACE)
    )


def s3_setup(label: str, config: Path, moto: MotoServer) -> TrackerSetup:
    client = moto.client()

    def read(key: str) -> bytes:
        return client.get_object(Bucket=BUCKET, Key=f"{S3_PREFIX}/{key}")["Body"].read()

    return TrackerSetup(label, config, moto.subprocess_env(), moto, read, lambda: empty_bucket(moto))


def empty_bucket(moto: MotoServer) -> None:
    """Delete every object, so moto (which keeps them in memory) does not grow run after run."""
    client = moto.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def run_tracker(setup: TrackerSetup, replica: MariaDB) -> TrackerRun:
    """One ``tracker dump`` subprocess with every meter running around it."""
    label, moto = setup.label, setup.moto
    # A new date every run, as in the nightly job: nothing to replace, so no
    # deletion of the previous run's dataset is timed.
    date = (dt.date.fromisoformat(DATE) - dt.timedelta(days=next(_RUN_NUMBER))).isoformat()
    argv = [sys.executable, "-m", "tracker", "--config", str(setup.config), "dump", f"{DB}.{TABLE}", "--date", date]
    t0 = time.perf_counter()
    # Only the server's descriptors: scanning every process every 20 ms
    # cost a quarter of a core and slowed the server being measured.
    with Sampler(lambda: outfile_bytes_on_disk(replica, [replica.pid])) as disk, OpenFileWatcher(
        replica.pid, replica.outfile_dir, t0
    ) as server_file:
        metered = _metered(argv, setup.env, replica, moto)
    if metered.code != 0:
        raise BenchError(f"tracker -> {label} exited {metered.code}; output:\n{metered.output}")
    run = TrackerRun(
        destination=label,
        wall_s=metered.wall_s,
        tracker_cpu_s=metered.cpu_s,
        server_cpu_s=metered.server_cpu_s,
        peak_rss_bytes=metered.peak_rss_bytes,
        peak_outfile_dir_bytes=disk.peak,
        harness_cpu_s=metered.harness_cpu_s,  # includes the samplers around it
        moto_cpu_s=metered.moto_cpu_s,
        server_file_from_s=server_file.first,
        server_file_to_s=server_file.last,
    )
    _read_unit_log(run, metered.output)
    run.units = setup.units(date)
    setup.clean()
    log.info(
        "tracker -> %s: %.2fs wall, %s units, tracker CPU %.2fs, server CPU %.2fs, RSS %.0f MB, outfile_dir %.1f MB",
        label, run.wall_s, run.units, run.tracker_cpu_s, run.server_cpu_s, run.peak_rss_bytes / 1e6,
        run.peak_outfile_dir_bytes / 1e6,
    )
    return run


def run_mydumper(
    options: bench_mydumper.MydumperOptions, replica: MariaDB, moto: MotoServer, work: Path, index: int
) -> MydumperRun:
    """mydumper into a directory under ``work``, then lz4 + upload of its files, each metered."""
    outputdir = work / f"mydumper-{index}"
    defaults = bench_mydumper.write_defaults_file(work, options)
    try:
        dump = _metered(bench_mydumper.mydumper_argv(options, defaults, outputdir), None, replica, None)
        if dump.code != 0:
            raise BenchError(f"mydumper exited {dump.code}; output:\n{dump.output}")
        chunks = len(bench_mydumper.data_files(outputdir, DB, TABLE))
        if chunks == 0:  # mydumper exits 0 when its table filter matched nothing
            raise BenchError(f"mydumper wrote no data file for {DB}.{TABLE}; output:\n{dump.output}")
        dump_bytes = sum(p.stat().st_size for p in outputdir.iterdir() if p.is_file())
        upload_argv = [
            sys.executable, str(SCRIPTS / "bench_mydumper.py"), "upload", str(outputdir),
            f"s3://{BUCKET}/mydumper/run-{index}",
            "--endpoint-url", moto.endpoint_url, "--threads", str(options.threads),
        ]
        upload = _metered(upload_argv, moto.subprocess_env(), replica, moto)
        if upload.code != 0:
            raise BenchError(f"lz4 + upload of mydumper's files exited {upload.code}; output:\n{upload.output}")
        summary = json.loads(upload.output.strip().splitlines()[-1])
    finally:
        shutil.rmtree(outputdir, ignore_errors=True)
        defaults.unlink(missing_ok=True)
    empty_bucket(moto)
    run = MydumperRun(
        wall_s=dump.wall_s + upload.wall_s,
        dump_s=dump.wall_s,
        upload_s=upload.wall_s,
        mydumper_cpu_s=dump.cpu_s,
        upload_cpu_s=upload.cpu_s,
        server_cpu_s=dump.server_cpu_s,
        server_cpu_upload_s=upload.server_cpu_s,
        moto_cpu_s=upload.moto_cpu_s or 0.0,
        harness_cpu_s=dump.harness_cpu_s + upload.harness_cpu_s,
        mydumper_peak_rss_bytes=dump.peak_rss_bytes,
        upload_peak_rss_bytes=upload.peak_rss_bytes,
        chunks=chunks,
        files=int(summary["files"]),
        dump_bytes=dump_bytes,
        stored_bytes=int(summary["bytes_out"]),
    )
    log.info(
        "mydumper %d: %.2fs (%d chunks, %d MB, CPU %.2fs, server CPU %.2fs, RSS %.0f MB);"
        " lz4 + upload %.2fs (CPU %.2fs, moto CPU %.2fs, RSS %.0f MB)",
        index, run.dump_s, chunks, dump_bytes / 1e6, run.mydumper_cpu_s, run.server_cpu_s,
        run.mydumper_peak_rss_bytes / 1e6, run.upload_s, run.upload_cpu_s, run.moto_cpu_s,
        run.upload_peak_rss_bytes / 1e6,
    )
    return run


# --- report ----------------------------------------------------------------------


def per_gb(seconds: float, nbytes: int) -> float:
    return seconds / (nbytes / 1e9)


def targets(results: Results) -> dict[str, Any]:
    bare = results.bare.best
    file_run = results.tracker[FILE].best
    wall_ratio = file_run.wall_s / bare.wall_s
    cpu_ratio = file_run.tracker_cpu_s / bare.server_cpu_s
    verdict: dict[str, Any] = {
        "file_wall_ratio": wall_ratio,
        "file_wall_pass": wall_ratio <= TARGET_WALL_RATIO,
        "tracker_cpu_ratio": cpu_ratio,
        "tracker_cpu_pass": cpu_ratio <= TARGET_CPU_RATIO,
    }
    for chunked, one in ONE_UNIT_OF.items():
        if chunked in results.tracker:
            key = "chunked_s3" if one == S3 else "chunked_file"
            run = results.tracker[chunked].best
            ratio = run.wall_s / results.tracker[one].best.wall_s
            verdict |= {f"{key}_ratio": ratio, f"{key}_pass": ratio <= TARGET_CHUNKED_RATIO, f"{key}_units": run.units}
    verdict["s3_vs_mydumper_ratio"] = verdict["s3_vs_mydumper_pass"] = None  # None: mydumper did not run
    if results.mydumper is not None:
        ratio = results.tracker[S3_CHUNKED].best.wall_s / results.mydumper.best.wall_s
        verdict |= {"s3_vs_mydumper_ratio": ratio, "s3_vs_mydumper_pass": ratio < 1.0}
    return verdict


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _runs_note(runs: Sequence[Any]) -> str:
    return "runs: " + ", ".join(f"{r.wall_s:.1f}" for r in runs) + " s"


def _unit_count(r: TrackerRun) -> int:
    """Units of a run: the manifest's count, else the log's."""
    return r.units if r.units is not None else r.units_logged


def _details(r: TrackerRun, size: int, runs: Sequence[TrackerRun]) -> list[str]:
    """Indented lines that say where a tracker run's time and CPU went."""
    timeline = INDENT
    if r.server_file_from_s is not None and r.server_file_to_s is not None:
        timeline += (
            f"server wrote its OUTFILE{'s' * (_unit_count(r) > 1)}"
            f" +{r.server_file_from_s:.1f}..+{r.server_file_to_s:.1f} s"
            f" ({r.server_file_to_s - r.server_file_from_s:.1f} s), tracker exited +{r.wall_s:.1f} s"
        )
    else:
        timeline += "server OUTFILE not seen"
    if r.unit_secs is not None and r.units_logged > 1:
        timeline += f"   unit pipelines: longest {r.unit_secs:.1f} s, together {r.unit_secs_sum:.1f} s"
    elif r.unit_secs is not None:
        timeline += f"   unit pipeline {r.unit_secs:.1f} s"
    cpu = f"{INDENT}CPU s/GB meanwhile: server {per_gb(r.server_cpu_s, size):.2f}"
    if r.moto_cpu_s is not None:
        cpu += f", moto {per_gb(r.moto_cpu_s, size):.2f}"
    cpu += f", this harness {per_gb(r.harness_cpu_s, size):.2f}   ({_runs_note(runs)})"
    return [timeline, cpu]


def _units_line(r: TrackerRun, settings: Settings) -> str:
    """How many units a chunked run really produced; one unit means chunking was not in effect."""
    units = _unit_count(r)
    source = "manifest.json" if r.units is not None else "log (manifest unreadable)"
    line = (
        f"{INDENT}chunk_mb {settings.chunk_mb}, workers {settings.workers}: {units} unit{'s' * (units != 1)}"
        f" ({source}; {r.units_logged} event=unit_done lines)"
    )
    if units <= 1:
        line += "   NOT CHUNKED: the table was dumped as one unit"
    return line


def _mydumper_lines(results: Results, size: int) -> list[str]:
    name = f"{'mydumper + lz4 + s3:':<23}"
    if results.mydumper is None:
        return [f"{name}skipped: {results.settings.mydumper_skipped}"]
    m, st = results.mydumper.best, results.settings
    bare = results.bare.best
    line = f"{name}{m.wall_s:6.1f} s   {m.wall_s / bare.wall_s:.2f}x bare"
    for label, what in ((S3, "tracker -> s3 one-unit"), (S3_CHUNKED, "tracker chunked -> s3")):
        if label in results.tracker:
            line += f"   {m.wall_s / results.tracker[label].best.wall_s:.2f}x {what}"
    line += (
        f"   peak RSS: mydumper {m.mydumper_peak_rss_bytes / 1e6:.0f} MB,"
        f" lz4 + upload {m.upload_peak_rss_bytes / 1e6:.0f} MB"
    )
    return [
        line,
        f"{INDENT}mydumper {m.dump_s:.1f} s (--threads {st.threads} --rows {st.rows_per_chunk}: {m.chunks} chunks,"
        f" {m.dump_bytes / 1e6:.0f} MB of SQL), then lz4 + upload {m.upload_s:.1f} s"
        f" ({st.threads} threads, {m.files} files, {m.stored_bytes / 1e6:.0f} MB stored)   [{st.mydumper}]",
        f"{INDENT}CPU s/GB: mydumper {per_gb(m.mydumper_cpu_s, size):.2f},"
        f" lz4 + upload {per_gb(m.upload_cpu_s, size):.2f}; server {per_gb(m.server_cpu_s, size):.2f} during mydumper,"
        f" {per_gb(m.server_cpu_upload_s, size):.2f} during upload;"
        f" moto {per_gb(m.moto_cpu_s, size):.2f}, this harness {per_gb(m.harness_cpu_s, size):.2f}"
        f"   ({_runs_note(results.mydumper.runs)})",
    ]


def _target_lines(results: Results) -> list[str]:
    verdict = targets(results)
    lines = [
        f"targets: file:// <= {TARGET_WALL_RATIO}x bare: {_pass(verdict['file_wall_pass'])}"
        f" ({verdict['file_wall_ratio']:.2f}x);"
        f" tracker CPU <= {TARGET_CPU_RATIO}x server OUTFILE CPU: {_pass(verdict['tracker_cpu_pass'])}"
        f" ({verdict['tracker_cpu_ratio']:.2f}x, file:// run)"
    ]
    parts = []
    for key, what in (("chunked_s3", "s3"), ("chunked_file", "file://")):
        if f"{key}_ratio" in verdict:
            units = verdict[f"{key}_units"]
            note = f"{units} units" if units and units > 1 else f"{units} unit: NOT CHUNKED"
            parts.append(f"{what} {_pass(verdict[f'{key}_pass'])} ({verdict[f'{key}_ratio']:.2f}x, {note})")
    lines.append(
        f"targets: chunked with {PARALLEL} workers at most {TARGET_CHUNKED_RATIO}x the one-unit time: "
        + "; ".join(parts)
    )
    mydumper = "tracker to S3 faster than mydumper plus upload"
    if results.mydumper is None:
        lines.append(f"targets: {mydumper}: SKIPPED ({results.settings.mydumper_skipped})")
    else:
        lines.append(
            f"targets: {mydumper}: {_pass(verdict['s3_vs_mydumper_pass'])}"
            f" (tracker chunked, {PARALLEL} workers, {results.tracker[S3_CHUNKED].best.wall_s:.1f} s against"
            f" {results.mydumper.best.wall_s:.1f} s: {verdict['s3_vs_mydumper_ratio']:.2f}x)"
        )
    return lines


def format_report(results: Results) -> str:
    m, t = results.machine, results.table
    bare = results.bare.best
    size = bare.outfile_bytes
    lines = [
        f"machine: {m.cpu}, {m.cores} cores, {m.mem_gib:.1f} GiB, {m.kernel}, MariaDB {m.mariadb}, Python {m.python}",
        f"table: {t.name}, {t.rows} rows, {t.data_bytes / 1e6:.0f} MB of column data, OUTFILE {size / 1e6:.0f} MB,"
        f" DATA_LENGTH {t.server_bytes / 2**20:.0f} MiB",
        f"{'bare OUTFILE:':<23}{bare.wall_s:6.1f} s   server CPU {per_gb(bare.server_cpu_s, size):.2f} s/GB"
        f"   ({_runs_note(results.bare.runs)})",
    ]
    for label, series in results.tracker.items():
        r = series.best
        line = (
            f"{NAMES[label]:<23}{r.wall_s:6.1f} s   {r.wall_s / bare.wall_s:.2f}x bare"
        )
        if label in ONE_UNIT_OF:
            line += f"   {r.wall_s / results.tracker[ONE_UNIT_OF[label]].best.wall_s:.2f}x one-unit"
        line += (
            f"   tracker CPU {per_gb(r.tracker_cpu_s, size):.2f} s/GB"
            f" ({r.tracker_cpu_s / bare.server_cpu_s:.2f}x server's OUTFILE CPU)"
            f"   peak RSS {r.peak_rss_bytes / 1e6:.0f} MB   peak outfile_dir {r.peak_outfile_dir_bytes / 1e6:.1f} MB"
        )
        lines.append(line)
        if label in ONE_UNIT_OF:
            lines.append(_units_line(r, results.settings))
        elif _unit_count(r) != 1:
            lines.append(f"{INDENT}{_unit_count(r)} units despite chunk_mb 0")
        lines += _details(r, size, series.runs)
    lines += _mydumper_lines(results, size)
    lines += _target_lines(results)
    if results.convert is not None:
        lines += bench_convert.format_lines(results.convert, per_gb(bare.server_cpu_s, size), INDENT)
    return "\n".join(lines)


def to_json(results: Results) -> dict[str, Any]:
    size = results.bare.best.outfile_bytes
    bare = results.bare.best

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
        "settings": asdict(results.settings),
        "bare_outfile": series(results.bare, ["server_cpu_s"]),
        "tracker": {},
        "mydumper": None,
        "targets": targets(results),
    }
    for label, s in results.tracker.items():
        entry = series(s, ["tracker_cpu_s", "server_cpu_s", "moto_cpu_s", "harness_cpu_s"])
        entry["best"]["wall_ratio_to_bare"] = s.best.wall_s / bare.wall_s
        entry["best"]["cpu_ratio_to_bare_server"] = s.best.tracker_cpu_s / bare.server_cpu_s
        if label in ONE_UNIT_OF:
            entry["best"]["wall_ratio_to_one_unit"] = s.best.wall_s / results.tracker[ONE_UNIT_OF[label]].best.wall_s
        data["tracker"][label] = entry
    if results.mydumper is not None:
        entry = series(
            results.mydumper,
            ["mydumper_cpu_s", "upload_cpu_s", "server_cpu_s", "server_cpu_upload_s", "moto_cpu_s", "harness_cpu_s"],
        )
        best = results.mydumper.best
        entry["best"]["wall_ratio_to_bare"] = best.wall_s / bare.wall_s
        for label, key in ((S3, "wall_ratio_to_tracker_s3_one_unit"), (S3_CHUNKED, "wall_ratio_to_tracker_s3_chunked")):
            if label in results.tracker:
                entry["best"][key] = best.wall_s / results.tracker[label].best.wall_s
        data["mydumper"] = entry
    data["convert"] = bench_convert.to_json(results.convert) if results.convert is not None else None
    return data


# --- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1000, help="MB of table data to generate [1000]")
    parser.add_argument("--runs", type=int, default=2, help="runs of each measurement; the fastest is kept [2]")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument(
        "--skip-mydumper",
        action="store_true",
        help="do not compare with mydumper + lz4 + upload (compared by default when mydumper is installed)",
    )
    parser.add_argument(
        "--skip-convert", action="store_true", help="do not measure tracker convert (stage 2: Parquet, one core and Spark)"
    )
    parser.add_argument(
        "--small-tables",
        type=int,
        default=1000,
        metavar="N",
        help="also time `tracker run` of N tables of 3 rows (scripts/bench_small_tables.py); 0 skips it [1000]",
    )
    parser.add_argument(
        "--only", choices=["small-tables"], help="run only this measurement (small-tables: only the many small tables)"
    )
    args = parser.parse_args(argv)
    if args.only == "small-tables" and args.small_tables < 1:
        parser.error("--only small-tables needs --small-tables of at least 1")
    if args.mb < 1 or args.runs < 1:
        parser.error("--mb and --runs must be at least 1")
    return args


def bench(args: argparse.Namespace, root: Path, work: Path) -> Results | None:
    replica_set: ReplicaSet | None = None
    moto = MotoServer(work / "moto")
    try:
        log.info("starting sandbox under %s", root)
        replica_set = start_replica_set(root, replicas=1, buffer_pool_mb=BUFFER_POOL_MB)
        replica = replica_set.replicas[0]
        moto.start()
        moto.create_bucket(BUCKET)
        results = None if args.only == "small-tables" else measure(args, replica, moto, work)
        if args.small_tables > 0:
            small = bench_small_tables.measure(replica_set, moto, work, args.small_tables)
            print("\n".join(bench_small_tables.format_lines(small)), flush=True)
        return results
    finally:
        _stop(moto.stop, "moto server")
        if replica_set is not None:
            _stop(replica_set.stop, "replica set")


def measure(args: argparse.Namespace, replica: MariaDB, moto: MotoServer, work: Path) -> Results:
    machine = machine_info(replica)
    generate_table(replica, args.mb)
    quiesce(replica)
    server_bytes = server_table_bytes(replica)
    rows, data_bytes = warm(replica)
    check_buffer_pool(replica)
    settings = settings_for(server_bytes, rows)
    mydumper = mydumper_options(args, replica, settings)
    log.info(
        "chunked runs: chunk_mb %d, workers %d; mydumper: %s",
        settings.chunk_mb, settings.workers, settings.mydumper or f"skipped, {settings.mydumper_skipped}",
    )
    dest = work / "dest"
    dest.mkdir()
    s3 = {"endpoint_url": moto.endpoint_url}
    s3_dest = f"s3://{BUCKET}/{S3_PREFIX}"
    one_unit = {"workers": 1, "chunk_mb": 0}  # chunk_mb 0: never split, so really one unit
    chunked = {"workers": settings.workers, "chunk_mb": settings.chunk_mb}
    setups = [
        file_setup(FILE, write_config(work, replica, f"file://{dest}", **one_unit), dest),
        s3_setup(S3, write_config(work, replica, s3_dest, s3=s3, **one_unit), moto),
        file_setup(FILE_CHUNKED, write_config(work, replica, f"file://{dest}", **chunked), dest),
        s3_setup(S3_CHUNKED, write_config(work, replica, s3_dest, s3=s3, **chunked), moto),
    ]
    bare = Series()
    tracked = {setup.label: Series() for setup in setups}
    dumped = Series() if mydumper is not None else None
    # Interleaved rounds, so a drift of the machine hits every measurement alike.
    for index in range(1, args.runs + 1):
        log.info("round %d of %d", index, args.runs)
        bare.runs.append(bare_outfile(replica, index))
        for setup in setups:
            tracked[setup.label].runs.append(run_tracker(setup, replica))
        if mydumper is not None and dumped is not None:
            dumped.runs.append(run_mydumper(mydumper, replica, moto, work, index))
    table = TableFacts(f"{DB}.{TABLE}", rows, data_bytes, bare.best.outfile_bytes, server_bytes)
    converted = None if args.skip_convert else measure_convert(args, replica, work, dest, chunked)
    return Results(machine, table, bare, tracked, settings, dumped, converted)


def measure_convert(
    args: argparse.Namespace, replica: MariaDB, work: Path, dest: Path, chunked: dict[str, Any]
) -> bench_convert.ConvertResults:
    """Stage 2: the table dumped once more in chunks, then converted (scripts/bench_convert.py)."""
    date = "2026-10-01"
    keys = DatasetKeys(NAMESPACE, DB, TABLE, dt.date.fromisoformat(date))
    return bench_convert.measure(
        args.runs,
        work,
        dest,
        lambda directory, destination, **extra: write_config(directory, replica, destination, **extra),
        lambda argv, env: _metered(argv, env, replica, None),
        lambda config, day: [sys.executable, "-m", "tracker", "--config", str(config), "dump", f"{DB}.{TABLE}", "--date", day],
        lambda day: json.loads((dest / keys.manifest).read_bytes()),
        date,
        chunked,
    )


def mydumper_options(
    args: argparse.Namespace, replica: MariaDB, settings: Settings
) -> bench_mydumper.MydumperOptions | None:
    """How to run mydumper, or None (with the reason in ``settings``) when it is skipped."""
    if args.skip_mydumper:
        settings.mydumper_skipped = "--skip-mydumper"
        return None
    if bench_mydumper.mydumper_path() is None:
        settings.mydumper_skipped = (
            f"mydumper is not installed; install it to compare: {bench_mydumper.INSTALL_HINT}"
        )
        log.warning("mydumper comparison skipped: %s", settings.mydumper_skipped)
        return None
    settings.mydumper = bench_mydumper.mydumper_version()
    # Over TCP as the tracker user, exactly as tracker connects.
    return bench_mydumper.MydumperOptions(
        host="127.0.0.1",
        port=replica.port,
        user=TRACKER_USER,
        password=TRACKER_PASSWORD,
        database=DB,
        table=TABLE,
        threads=settings.threads,
        rows_per_chunk=settings.rows_per_chunk,
    )


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
    if results is None:  # --only small-tables: printed as it finished
        return 0
    print(format_report(results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results), indent=2) + "\n")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
