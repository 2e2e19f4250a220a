"""Stage 2 in the benchmark: ``tracker convert`` of the bench dataset, measured.

Called by ``scripts/bench.py`` after its dump rounds (not a test).  The
table is dumped once more to ``file://`` in chunks (untimed), then:

* ``tracker convert`` on one core (``taskset -c 0``, ``--workers 1``):
  wall time, CPU-seconds per GB of OUTFILE text, peak RSS;
* ``tracker convert --engine spark --spark-master local[2]`` (``--force``):
  wall time, including the JVM's start.

The target (issue 10): one core converts at least as fast as the server
writes the OUTFILE, i.e. convert's CPU-s/GB <= the server's OUTFILE CPU-s/GB
measured in the same run, and peak RSS <= 400 MB.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("bench.convert")

TARGET_RSS_BYTES = 400e6
SPARK_MASTER = "local[2]"


@dataclass
class ConvertRun:
    engine: str
    wall_s: float
    cpu_s: float  # the tracker process and its children (Spark's JVM included)
    peak_rss_bytes: int  # the tracker process (for Spark: the driver's Python only)
    rows: int
    files: int


@dataclass
class ConvertResults:
    raw_bytes: int  # OUTFILE text converted (the manifest's raw_bytes)
    units: int
    local: list[ConvertRun]
    spark: ConvertRun | None
    spark_error: str | None = None


def _one_core(argv: list[str]) -> list[str]:
    """Pin to the first core when taskset exists (util-linux); else run as is and say so."""
    taskset = shutil.which("taskset")
    if taskset is None:
        log.warning("taskset not found: convert runs unpinned")
        return argv
    return [taskset, "-c", "0", *argv]


def _outcome(output: str) -> tuple[int, int]:
    """Rows and files from convert's ``done db.t dt=D rows=N files=M`` line."""
    for line in output.splitlines():
        if line.startswith("done ") and " rows=" in line:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            return int(fields["rows"]), int(fields["files"])
    return 0, 0


def measure(
    runs: int,
    work: Path,
    dest: Path,
    make_config: Callable[..., Path],
    metered: Callable[[list[str], dict[str, str] | None], Any],
    dump_argv: Callable[[Path, str], list[str]],
    manifest_of: Callable[[str], dict[str, Any]],
    date: str,
    chunked: dict[str, Any],
) -> ConvertResults:
    """Dump once (untimed), then convert ``runs`` times on one core and once with Spark."""
    warehouse = work / "warehouse"
    config = make_config(work, f"file://{dest}", warehouse={"location": f"file://{warehouse}"}, **chunked)
    result = metered(dump_argv(config, date), None)
    if result.code != 0:
        raise RuntimeError(f"dump for convert exited {result.code}:\n{result.output}")
    manifest = manifest_of(date)
    base = [sys.executable, "-m", "tracker", "--config", str(config), "convert", "--date", date]
    local: list[ConvertRun] = []
    for index in range(runs):
        argv = _one_core([*base, "--workers", "1", *(["--force"] if index else [])])
        r = metered(argv, None)
        if r.code != 0:
            raise RuntimeError(f"convert exited {r.code}:\n{r.output}")
        rows, files = _outcome(r.output)
        local.append(ConvertRun("local", r.wall_s, r.cpu_s, r.peak_rss_bytes, rows, files))
        log.info("convert (1 core): %.2fs wall, CPU %.2fs, RSS %.0f MB", r.wall_s, r.cpu_s, r.peak_rss_bytes / 1e6)
    spark, spark_error = None, None
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    r = metered([*base, "--force", "--engine", "spark", "--spark-master", SPARK_MASTER], env)
    if r.code == 0:
        rows, files = _outcome(r.output)
        spark = ConvertRun("spark", r.wall_s, r.cpu_s, r.peak_rss_bytes, rows, files)
        log.info("convert (spark %s): %.2fs wall", SPARK_MASTER, r.wall_s)
    else:
        spark_error = r.output.strip().splitlines()[-1] if r.output.strip() else f"exit {r.code}"
        log.warning("convert --engine spark failed: %s", spark_error)
    shutil.rmtree(warehouse, ignore_errors=True)
    return ConvertResults(manifest["raw_bytes"], len(manifest["units"]), local, spark, spark_error)


def format_lines(results: ConvertResults, server_cpu_per_gb: float, indent: str) -> list[str]:
    """The report's convert lines and its targets, as PASS/FAIL (never asserted)."""
    gb = results.raw_bytes / 1e9
    best = min(results.local, key=lambda r: r.wall_s)
    cpu_per_gb = best.cpu_s / gb
    runs = ", ".join(f"{r.wall_s:.1f}" for r in results.local)
    lines = [
        f"{'convert (1 core):':<23}{best.wall_s:6.1f} s   CPU {cpu_per_gb:.2f} s/GB of OUTFILE text"
        f" ({cpu_per_gb / server_cpu_per_gb:.2f}x the server's OUTFILE CPU {server_cpu_per_gb:.2f} s/GB)"
        f"   peak RSS {best.peak_rss_bytes / 1e6:.0f} MB",
        f"{indent}{results.units} units -> {best.files} Parquet files, {best.rows} rows, zstd   (runs: {runs} s)",
    ]
    if results.spark is not None:
        lines.append(
            f"{'convert (spark local[2]):':<23}{results.spark.wall_s:6.1f} s   {results.spark.wall_s / best.wall_s:.2f}x"
            f" the one-core convert, the JVM's start included (Spark's Python workers are the JVM's children: their CPU is not counted here)"
        )
    else:
        lines.append(f"{'convert (spark local[2]):':<23}failed: {results.spark_error}")
    cpu_ok = cpu_per_gb <= server_cpu_per_gb
    rss_ok = best.peak_rss_bytes <= TARGET_RSS_BYTES
    lines.append(
        f"targets: convert CPU <= server's OUTFILE CPU: {'PASS' if cpu_ok else 'FAIL'}"
        f" ({cpu_per_gb:.2f} vs {server_cpu_per_gb:.2f} s/GB); peak RSS <= 400 MB: {'PASS' if rss_ok else 'FAIL'}"
        f" ({best.peak_rss_bytes / 1e6:.0f} MB)"
    )
    return lines


def to_json(results: ConvertResults) -> dict[str, Any]:
    return json.loads(json.dumps(results, default=lambda o: o.__dict__))
