"""``tracker convert --engine spark``: the same conversion, its units run as Spark tasks.

Only the scheduling differs from the local engine.  The driver plans
(:func:`plan_conversions`) and runs :func:`convert_dataset` for each output
table, which takes the dataset's lease, reuses matching files, and then
hands the units left to a mapper: here one Spark job per dataset, one task
per unit, each task calling :func:`convert_unit` (the same Parquet file under
the same commit rule and lease check).  The driver then finishes the
dataset (``_manifest.json``, ``_SUCCESS`` last, the catalog) exactly as the
local engine does.  So both engines write the same files.

A unit's expected failure (a corrupt part, a decode error, the store) comes
back to the driver as a value, not as a task failure: it fails its dataset
with its one-line message and the other datasets go on, as locally, and
Spark does not retry work that fails the same way every time.

Spark starts only when a dataset has units to convert.  In local mode the
executors run this interpreter; on a cluster they need ``tracker`` and its
``[warehouse]`` dependencies installed (or shipped with ``--py-files``), and
the store's credentials from their own AWS chain.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from tracker.config import Config
from tracker.dump.progress import ProgressBar
from tracker.errors import TrackerError
from tracker.warehouse.convert import (
    ConvertSettings,
    DatasetJob,
    DatasetOutcome,
    FileResult,
    convert_dataset,
    convert_unit,
    plan_conversions,
)

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

APP_NAME = "tracker convert"


class SparkJobFailed(TrackerError):
    """Spark could not run a dataset's tasks (an executor lost, a worker crashed)."""


@dataclass(frozen=True)
class UnitFailed:
    """A unit's failure sent back from an executor as plain data (its one-line message)."""

    index: int
    message: str


def convert_task(job: DatasetJob, settings: ConvertSettings, index: int) -> FileResult | UnitFailed:
    """What each Spark task runs: one unit, its expected failures returned rather than raised."""
    try:
        return convert_unit(job, index, settings)
    except TrackerError as exc:
        return UnitFailed(index, str(exc))
    except (pa.ArrowException, OSError) as exc:
        return UnitFailed(index, f"{type(exc).__name__}: {' '.join(str(exc).split())}")


def run_convert(
    config: Config, tables: list[tuple[str, str]] | None, date: dt.date, force: bool, master_url: str | None
) -> list[DatasetOutcome]:
    """``tracker convert`` with Spark (``master_url``: e.g. ``local[2]``, ``spark://host:7077``; None: Spark's default)."""
    settings = ConvertSettings.from_config(config)
    jobs = plan_conversions(config, tables, date, force)
    todo = [j for j in jobs if j.problem is None and (force or not j.up_to_date)]
    total_bytes = sum(int(u.entry.get("raw_bytes", 0)) for j in todo for u in j.units)
    with ProgressBar(sum(len(j.units) for j in todo), total_bytes) as bar, SparkMapper(settings, master_url, bar) as mapper:
        return [convert_dataset(job, settings, mapper) for job in jobs]


class SparkMapper:
    """The mapper :func:`convert_dataset` calls: a job's units as one Spark job.

    A context manager: the Spark session starts at the first dataset with
    units to convert and stops on exit, unless it was already running in
    this process (then it is someone else's).
    """

    def __init__(self, settings: ConvertSettings, master_url: str | None, bar: ProgressBar) -> None:
        self.settings = settings
        self.master_url = master_url
        self.bar = bar
        self._spark: "SparkSession | None" = None
        self._owned = False

    def __enter__(self) -> "SparkMapper":
        return self

    def __exit__(self, *exc: object) -> None:
        spark, self._spark = self._spark, None
        if spark is None or not self._owned:
            return
        try:
            spark.stop()
        except Exception as exc:  # after a signal the gateway may be gone; the JVM exits with us
            log.warning("event=spark_stop_failed error=%s", " ".join(str(exc).split())[:200])

    def context(self) -> "SparkContext":
        if self._spark is None:
            self._spark, self._owned = start_session(self.master_url)
        return self._spark.sparkContext

    @staticmethod
    def _cancel(sc: "SparkContext") -> None:
        try:
            sc.cancelAllJobs()
        except Exception as exc:  # the signal that brought us here matters more
            log.warning("event=spark_cancel_failed error=%s", " ".join(str(exc).split())[:200])

    def __call__(self, job: DatasetJob, indexes: list[int]) -> list[FileResult]:
        if not indexes:
            return []
        sc = self.context()
        sc.setJobDescription(f"{APP_NAME} {job.name} dt={job.date}")
        task = functools.partial(convert_task, job, self.settings)
        log.info("event=spark_job table=%s date=%s units=%d master=%s", job.name, job.date, len(indexes), sc.master)
        try:
            outputs = sc.parallelize(indexes, numSlices=len(indexes)).map(task).collect()
        except Exception as exc:
            raise SparkJobFailed(f"{job.name} dt={job.date}: spark job failed: {failure_line(str(exc))}") from None
        except BaseException:
            self._cancel(sc)  # a signal: stop the executors' uploads too (uncommitted)
            raise
        failures = [o for o in outputs if isinstance(o, UnitFailed)]
        for output in outputs:
            self.bar.unit_done()
            if isinstance(output, FileResult):
                self.bar.add(int(job.units[output.index].entry.get("raw_bytes", 0)))
        if failures:
            raise TrackerError(failures[0].message)
        return [o for o in outputs if isinstance(o, FileResult)]


# A local Spark started by the CLI logs errors only: cron mails stderr, which is
# for tracker's own lines.  (Spark's shell mode prints its level unless the
# loggers it checks are configured.)  Clusters keep their own log setup.
_QUIET_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.submit.name = org.apache.spark.deploy.SparkSubmit
logger.submit.level = error
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""


def start_session(master_url: str | None) -> tuple["SparkSession", bool]:
    """The session to run on, and whether this call started it (and so must stop it)."""
    from pyspark.sql import SparkSession

    # py4j logs every gateway connection at INFO: noise beside tracker's event lines.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    existing = SparkSession.getActiveSession()
    builder = SparkSession.builder.appName(APP_NAME).config("spark.ui.showConsoleProgress", "false")
    if master_url:
        builder = builder.master(master_url)
    with tempfile.TemporaryDirectory(prefix="tracker-spark-") as scratch:
        if existing is None and (master_url is None or master_url.startswith("local")):
            log4j = Path(scratch, "log4j2.properties")
            log4j.write_text(_QUIET_LOG4J2)
            builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j.as_uri()}")
        spark = builder.getOrCreate()  # the JVM has read the file once it is up
    sc = spark.sparkContext
    if existing is None:
        sc.setLogLevel("ERROR")
    if sc.master.startswith("local"):
        # Local executors must import tracker: run them on this interpreter
        # (PySpark's default is whatever ``python3`` is on PATH).
        sc.pythonExec = sys.executable
    log.info("event=spark_started master=%s version=%s", sc.master, sc.version)
    return spark, existing is None


_PYTHON_ERROR = re.compile(r"^([A-Za-z_][\w.]*)(Error|Exception|Exit|Interrupt|Failed|Lost|Refused)\b:? ?")


def failure_line(text: str) -> str:
    """The Python exception line of a Spark failure, else its first line (Spark's errors span pages)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    python = [
        line for line in lines if _PYTHON_ERROR.match(line) and not line.startswith(("org.", "java.", "scala.", "py4j."))
    ]
    chosen = python[-1] if python else (lines[0] if lines else "no message")
    return chosen[:500]
