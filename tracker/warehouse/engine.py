"""Running ``tracker convert``: the local engine (a thread pool) and the dispatch to Spark.

One core by default (``--workers`` more): a converter host is often a
database host, and cron starts it beside other work.  With one worker the
units run in the main thread, so a signal aborts the upload in flight at
once; with more, a stop event ends every worker at its next batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from tracker.errors import UsageError
from tracker.config import Config
from tracker.dump.progress import ProgressBar
from tracker.warehouse.convert import (
    ConvertSettings,
    DatasetJob,
    DatasetOutcome,
    FileResult,
    convert_dataset,
    convert_unit,
    plan_conversions,
)

log = logging.getLogger(__name__)


def convert(
    config: Config,
    tables: list[tuple[str, str]] | None,
    date: dt.date,
    *,
    force: bool = False,
    workers: int = 1,
    engine: str = "local",
    spark_master: str | None = None,
) -> list[DatasetOutcome]:
    """Convert every complete dataset of ``date`` (or those ``tables`` names); one outcome per output table."""
    if engine == "spark":
        try:
            from tracker.warehouse.spark import run_convert
        except ImportError as exc:  # pyspark is the [spark] extra, not installed everywhere
            raise UsageError(f"--engine spark needs the [spark] extra (pip install 'tracker[spark]'): {exc}") from None

        return run_convert(config, tables, date, force, spark_master)
    settings = ConvertSettings.from_config(config)
    jobs = plan_conversions(config, tables, date, force)
    todo = [j for j in jobs if j.problem is None and (force or not j.up_to_date)]
    total_bytes = sum(int(u.entry.get("raw_bytes", 0)) for j in todo for u in j.units)
    with ProgressBar(sum(len(j.units) for j in todo), total_bytes) as bar:
        mapper = _LocalMapper(settings, workers, bar)
        try:
            return [convert_dataset(job, settings, mapper) for job in jobs]
        except BaseException:
            mapper.stop_all()  # KeyboardInterrupt / SIGTERM: workers stop at their next batch
            raise


class _LocalMapper:
    """``convert_unit`` over a job's units, ``workers`` at a time; the first failure is raised."""

    def __init__(self, settings: ConvertSettings, workers: int, bar: ProgressBar) -> None:
        self.settings = settings
        self.workers = workers
        self.bar = bar
        self._stops: list[threading.Event] = []

    def stop_all(self) -> None:
        for event in self._stops:
            event.set()

    def _one(self, job: DatasetJob, index: int, stop: threading.Event) -> FileResult:
        result = convert_unit(job, index, self.settings, stop)
        self.bar.add(int(job.units[index].entry.get("raw_bytes", 0)))
        self.bar.unit_done()
        return result

    def __call__(self, job: DatasetJob, indexes: list[int]) -> list[FileResult]:
        stop = threading.Event()  # one per dataset: a failed dataset stops only its own units
        self._stops.append(stop)
        if self.workers <= 1 or len(indexes) <= 1:
            return [self._one(job, i, stop) for i in indexes]
        with ThreadPoolExecutor(self.workers, thread_name_prefix="convert") as pool:
            futures = [pool.submit(self._one, job, i, stop) for i in indexes]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
                return [f.result() for f in futures]
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise
