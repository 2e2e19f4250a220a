"""``tracker convert``: complete datasets to Parquet, one file per source unit.

Layout (a contract), under ``warehouse.location``::

    <ns>/<db>/<table>/dt=YYYY-MM-DD/part-NNNNN.parquet   one per source unit
    <ns>/<db>/<table>/dt=YYYY-MM-DD/_manifest.json       what each file came from
    <ns>/<db>/<table>/dt=YYYY-MM-DD/_SUCCESS             written last

The work splits in three so any engine can schedule it (the local thread
pool here, Spark in ``tracker.warehouse.spark``): :func:`plan_conversions`
(which tables, which units: plain picklable data), :func:`convert_unit`
(one Parquet file, committed through the store's upload, a plain function
an executor can run) and :func:`convert_dataset` / :func:`finish_dataset`
(the lease, what a re-run can reuse, ``_manifest.json``, ``_SUCCESS``,
the catalog).  Files are reused when their footer carries the fingerprint
of the same source part (its CRC-32C) and the same conversion settings.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import replace
from typing import Callable

import pyarrow as pa

from tracker import __version__
from tracker.errors import Cancelled, TrackerError, UploadFailed
from tracker.store import layout
from tracker.store.files import FileStore
from tracker.store.sinks import Store
from tracker.warehouse import lease as lease_mod
from tracker.warehouse.decode import DecodeReport, read_part
from tracker.warehouse.jobs import (  # noqa: F401  (the API engines import from here)
    ConvertSettings,
    DatasetJob,
    DatasetOutcome,
    FileResult,
    PlannedUnit,
    SourceDataset,
    store_for,
)
from tracker.warehouse.parquet import read_footer, write_parquet
from tracker.warehouse.plan import FORMAT_VERSION, MANIFEST, plan_conversions, published_matches, source_doc  # noqa: F401
from tracker.warehouse.schema import conformer

log = logging.getLogger(__name__)

FINGERPRINT_KEY = b"tracker.fingerprint"
SOURCE_KEY = b"tracker.source"
ZERO_DATES_KEY = b"tracker.zero_dates"


# --- one unit ----------------------------------------------------------------


def convert_unit(job: DatasetJob, unit_index: int, settings: ConvertSettings, stop: threading.Event | None = None) -> FileResult:
    """Write output file ``unit_index`` of ``job``, committed only whole and only under the job's lease."""
    assert job.schema is not None and job.lease_token is not None, "convert_unit needs a planned job holding its lease"
    unit = job.units[unit_index]
    source = job.sources[unit.source]
    out = store_for(settings.location, settings.s3)
    report = DecodeReport()
    origin = source_doc(job, unit)
    fixed = {FINGERPRINT_KEY: unit.fingerprint.encode(), SOURCE_KEY: json.dumps(origin).encode()}
    schema = job.schema.with_metadata({**(job.schema.metadata or {}), **fixed})
    conform = conformer(job.schema, job.date, source.namespace, source.db, source.table, job.logical)
    written = {"rows": 0}
    key = job.file_key(unit.index)
    margin = settings.lease_seconds / 3

    def batches():
        for batch in read_part(store_for(settings.destination, settings.s3), unit.entry, source.manifest, strict=settings.strict, report=report):
            if stop is not None and stop.is_set():
                raise Cancelled(f"{job.name} dt={job.date} part {unit.index}: stopped; not committed")
            yield conform(batch)

    def precommit() -> None:
        if written["rows"] != unit.entry["rows"]:
            raise UploadFailed(f"{out.url(key)}: {written['rows']} rows decoded, the manifest says {unit.entry['rows']}")
        lease_mod.check_lease(out, job.prefix, job.lease_token, margin)

    def final(rows: int) -> dict[bytes, bytes]:
        return {ZERO_DATES_KEY: json.dumps(report.zero_dates, sort_keys=True).encode()}

    # No-clobber: files that must be replaced were deleted under the lease
    # (_prepare); a late write of a converter that lost its lease then fails
    # instead of replacing the new holder's file.
    with out.upload(key, precommit, overwrite=False, size_hint=int(unit.entry.get("raw_bytes", 0))) as upload:
        written["rows"], nbytes = write_parquet(upload, schema, batches(), final_metadata=final)
    log.info("event=convert_file_done key=%s rows=%s bytes=%s", key, written["rows"], nbytes)
    return FileResult(unit.index, key, out.url(key), written["rows"], nbytes, unit.fingerprint, origin, dict(report.zero_dates))


def reusable(store: Store, job: DatasetJob, unit: PlannedUnit) -> FileResult | None:
    """The committed file of ``unit`` if its footer says it was made from the same source the same way."""
    key = job.file_key(unit.index)
    found = read_footer(store, key)
    if found is None:
        return None
    meta, size = found
    kv = meta.metadata or {}
    if kv.get(FINGERPRINT_KEY) != unit.fingerprint.encode() or ZERO_DATES_KEY not in kv:
        return None
    zero_dates = json.loads(kv[ZERO_DATES_KEY])
    return FileResult(unit.index, key, store.url(key), meta.num_rows, size, unit.fingerprint, source_doc(job, unit), zero_dates, reused=True)


# --- one dataset ----------------------------------------------------------------

Mapper = Callable[[DatasetJob, list[int]], list[FileResult]]


def convert_dataset(job: DatasetJob, settings: ConvertSettings, mapper: Mapper) -> DatasetOutcome:
    """Convert one output table: lease, reuse, ``mapper`` for the rest, then :func:`finish_dataset`.

    ``mapper(job, indexes)`` runs :func:`convert_unit` for each index (a thread
    pool, Spark executors) and returns the results, raising the first failure.
    """
    outcome = DatasetOutcome(job.namespace, job.db, job.table, job.date, "failed", schema=job.schema)
    store = store_for(settings.location, settings.s3)
    outcome.location_url = store.url(job.table_prefix)
    if job.problem is not None:
        outcome.error = job.problem
        return outcome
    if job.up_to_date and not job.force:
        return _up_to_date(outcome, job)
    lease = lease_mod.StoreLease(store, job.prefix, settings.lease_seconds)
    try:
        holder = lease.acquire()
    except TrackerError as exc:
        outcome.error = str(exc)
        return outcome
    if holder is not None:
        outcome.status, outcome.error = "busy", f"being converted by {holder.describe()}"
        return outcome
    try:
        with lease:
            job = replace(job, lease_token=lease.token)
            if not job.force and published_matches(store, job):
                return _up_to_date(outcome, job)
            reused, todo = _prepare(store, job, lease)
            results = reused + mapper(job, todo)
            return finish_dataset(job, results, settings, lease, outcome)
    except TrackerError as exc:
        outcome.status, outcome.error = "failed", str(exc)
        return outcome
    except (pa.ArrowException, OSError) as exc:  # a reader or writer bug must not hide the other tables
        log.exception("event=convert_failed table=%s date=%s", job.name, job.date)
        outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return outcome


def _up_to_date(outcome: DatasetOutcome, job: DatasetJob) -> DatasetOutcome:
    outcome.status, outcome.files = "up-to-date", len(job.units)
    outcome.rows = sum(u.entry["rows"] for u in job.units)
    return outcome


def _prepare(store: Store, job: DatasetJob, lease: lease_mod.StoreLease) -> tuple[list[FileResult], list[int]]:
    """Unpublish what no longer matches, keep files that do, and list the units left to convert.

    ``_SUCCESS`` goes first, so from here until the new one readers see the
    date as incomplete, never as a mix; then files no plan unit will
    overwrite (a former plan had more units).
    """
    success, manifest = f"{job.prefix}/{layout.SUCCESS}", f"{job.prefix}/{MANIFEST}"
    if store.exists(success) or store.exists(manifest):
        lease.check()
        store.delete(success)
        store.delete(manifest)
        log.info("event=convert_unpublished prefix=%s force=%s", job.prefix, job.force)
    planned = {job.file_key(u.index) for u in job.units}
    for key in store.list(job.prefix + "/"):
        if key.endswith(".parquet") and key not in planned:
            lease.check()
            store.delete(key)
    _clean_leftovers(store, job.prefix)
    present = set(store.list(job.prefix + "/"))
    reused: list[FileResult] = []
    todo: list[int] = []
    for unit in job.units:
        key = job.file_key(unit.index)
        found = None if job.force or key not in present else reusable(store, job, unit)
        if found is not None:
            reused.append(found)
            continue
        if key in present:  # another source or settings, or --force: replaced, never overwritten
            lease.check()
            store.delete(key)
        todo.append(unit.index)
    if reused:
        log.info("event=convert_files_reused prefix=%s files=%s", job.prefix, len(reused))
    return reused, todo


def _clean_leftovers(store: Store, prefix: str) -> None:
    """What killed converters left in the folder: hidden temporary files, open multipart uploads.

    Called under the lease, so none of it belongs to a converter that may
    still commit: a stalled one that lost the lease then fails to commit.
    """
    if isinstance(store, FileStore):
        for path in store.path(prefix).glob(".part-*.parquet.tmp-*"):
            path.unlink(missing_ok=True)
            log.info("event=convert_temp_removed path=%s", path)
        return
    client, bucket = store.client, store.destination.bucket  # type: ignore[attr-defined]
    full = store.full_key(prefix) + "/"  # type: ignore[attr-defined]
    for upload in client.list_multipart_uploads(Bucket=bucket, Prefix=full).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        log.info("event=convert_upload_aborted key=%s", upload["Key"])


def finish_dataset(
    job: DatasetJob,
    results: list[FileResult],
    settings: ConvertSettings,
    lease: lease_mod.StoreLease,
    outcome: DatasetOutcome | None = None,
) -> DatasetOutcome:
    """Publish: ``_manifest.json``, then ``_SUCCESS`` (only while the lease holds), then the catalog."""
    store = store_for(settings.location, settings.s3)
    if outcome is None:
        outcome = DatasetOutcome(job.namespace, job.db, job.table, job.date, "failed", schema=job.schema)
        outcome.location_url = store.url(job.table_prefix)
    results = sorted(results, key=lambda r: r.index)
    if [(r.index, r.fingerprint) for r in results] != [(u.index, u.fingerprint) for u in job.units]:
        raise UploadFailed(f"{store.url(job.prefix)}: the files do not match the plan; _SUCCESS not written")
    zero_dates: dict[str, int] = {}
    for result in results:
        for column, count in result.zero_dates.items():
            zero_dates[column] = zero_dates.get(column, 0) + count
    document = _manifest(job, results, zero_dates)
    lease.check()
    with store.upload(f"{job.prefix}/{MANIFEST}", lease.check, overwrite=True) as upload:
        upload.write(document)
    with store.upload(f"{job.prefix}/{layout.SUCCESS}", lease.check, overwrite=False) as upload:
        upload.write(b"")
    outcome.status, outcome.files = "done", len(results)
    outcome.rows, outcome.zero_dates = sum(r.rows for r in results), zero_dates
    log.info(
        "event=convert_done table=%s date=%s rows=%s files=%s zero_dates=%s reused=%s",
        job.name, job.date, outcome.rows, outcome.files, sum(zero_dates.values()), sum(r.reused for r in results),
    )
    if settings.catalog is not None:
        _register(job, results, settings, outcome)
    return outcome


def _register(job: DatasetJob, results: list[FileResult], settings: ConvertSettings, outcome: DatasetOutcome) -> None:
    """Add the date's files to the Iceberg table; a refusal fails the date's registration, not its files."""
    from tracker.warehouse.catalog import catalog_properties, register_date

    props = catalog_properties(dict(settings.catalog or ()), settings.s3.endpoint_url, settings.s3.region)
    try:
        register_date(props, job.identifier, job.schema, job.date, [r.url for r in results], outcome.location_url)
    except TrackerError as exc:
        outcome.status, outcome.registered = "failed", False
        outcome.error = f"Parquet files written, catalog registration refused: {exc}"
        return
    outcome.registered = True


def _manifest(job: DatasetJob, results: list[FileResult], zero_dates: dict[str, int]) -> bytes:
    document = {
        "format_version": FORMAT_VERSION,
        "namespace": job.namespace,
        "db": job.db,
        "table": job.table,
        "date": job.date.isoformat(),
        "logical": job.logical,
        "rows": sum(r.rows for r in results),
        "bytes": sum(r.bytes for r in results),
        "zero_dates": zero_dates,
        "files": [
            {"index": r.index, "name": r.key.rsplit("/", 1)[1], "rows": r.rows, "bytes": r.bytes, "fingerprint": r.fingerprint, "source": r.source}
            for r in results
        ],
        "sources": [
            {"namespace": s.namespace, "db": s.db, "table": s.table, "rows": s.manifest.get("rows"), "created_at": s.manifest.get("created_at")}
            for s in job.sources
        ],
        "tracker_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
