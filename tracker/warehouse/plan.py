"""Planning ``tracker convert``: which output tables, from which units, and what is already done."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import replace
from typing import Any

import pyarrow as pa

from tracker.config import Config
from tracker.errors import TrackerError, UploadFailed
from tracker.store import layout
from tracker.store.sinks import Store
from tracker.warehouse.jobs import ConvertSettings, DatasetJob, PlannedUnit, SourceDataset, store_for
from tracker.warehouse.schema import target_schema
from tracker.warehouse.targets import Target, discover, select

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "_manifest.json"

def plan_conversions(
    config: Config, tables: list[tuple[str, str]] | None, date: dt.date, force: bool
) -> list[DatasetJob]:
    """The output tables to write for ``date`` (all, or those ``tables`` names).

    A target whose plan fails (a named table without a dataset, a logical
    table waiting for a source, schemas that cannot be united, a column
    named ``dt``) comes back with ``problem`` set; it is reported failed
    and the others go on.
    """
    settings = ConvertSettings.from_config(config)
    source_store = store_for(settings.destination, settings.s3)
    out_store = store_for(settings.location, settings.s3)
    chosen, unmatched = select(discover(source_store, config, date), tables)
    jobs = [
        DatasetJob(config.namespace, *name.split(".", 1), date, False, problem=f"no dataset for dt={date} in {config.destination.url}")
        for name in unmatched
    ]
    for target in chosen:
        base = DatasetJob(target.namespace, target.db, target.table, date, target.logical, force=force)
        try:
            jobs.append(_plan_target(base, target, source_store, out_store, settings, explicit=tables is not None))
        except TrackerError as exc:
            jobs.append(replace(base, problem=str(exc)))
    return [j for j in jobs if j is not None]


def _plan_target(base: DatasetJob, target: Target, source_store: Store, out_store: Store, settings: ConvertSettings, explicit: bool) -> DatasetJob | None:
    if target.incomplete and (target.logical or explicit):
        waiting = ", ".join(f"{r.label}" for r in target.incomplete)
        return replace(base, problem=f"dt={base.date}: waiting for {waiting} (no _SUCCESS yet)")
    if target.incomplete:
        log.info("event=convert_skipped table=%s date=%s reason=no_SUCCESS_yet", target.name, base.date)
        return None
    sources = tuple(
        SourceDataset(ref.namespace, ref.db, ref.table, _read_manifest(source_store, ref.keys.manifest))
        for ref in target.complete
    )
    schema = target_schema(base.name, [(s.namespace, s.db, s.table, s.manifest["columns"]) for s in sources], base.logical)
    settings_print = _settings_fingerprint(schema, base.logical, settings.strict)
    units = []
    for number, (source_index, entry) in enumerate(
        (i, e) for i, s in enumerate(sources) for e in sorted(s.manifest["units"], key=lambda e: e["index"])
    ):
        source = sources[source_index]
        units.append(PlannedUnit(number, source_index, entry, _unit_fingerprint(settings_print, source, entry)))
    job = replace(base, sources=sources, units=tuple(units), schema=schema)
    return replace(job, up_to_date=published_matches(out_store, job))


def _read_manifest(store: Store, key: str) -> dict[str, Any]:
    data = store.get(key)
    if data is None:
        raise UploadFailed(f"{store.url(key)} is missing beside _SUCCESS")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise UploadFailed(f"{store.url(key)} is not valid JSON: {exc}") from None


def _settings_fingerprint(schema: pa.Schema, logical: bool, strict: bool) -> str:
    text = json.dumps([FORMAT_VERSION, schema.to_string(show_field_metadata=True), logical, strict])
    return hashlib.sha256(text.encode()).hexdigest()


def _unit_fingerprint(settings_print: str, source: SourceDataset, entry: dict[str, Any]) -> str:
    ident = [settings_print, source.namespace, source.db, source.table, entry["key"], entry["checksum"]["crc32c"], entry["rows"]]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]


def source_doc(job: DatasetJob, unit: PlannedUnit) -> dict[str, Any]:
    source = job.sources[unit.source]
    return {
        "namespace": source.namespace,
        "db": source.db,
        "table": source.table,
        "unit": unit.entry["index"],
        "key": unit.entry["key"],
        "crc32c": unit.entry["checksum"]["crc32c"],
        "rows": unit.entry["rows"],
    }


def published_matches(store: Store, job: DatasetJob) -> bool:
    """``_SUCCESS`` is there and ``_manifest.json`` lists exactly this plan's fingerprints."""
    if not store.exists(f"{job.prefix}/{layout.SUCCESS}"):
        return False
    data = store.get(f"{job.prefix}/{MANIFEST}")
    if data is None:
        return False
    try:
        files = json.loads(data)["files"]
        return [f["fingerprint"] for f in files] == [u.fingerprint for u in job.units]
    except (ValueError, KeyError, TypeError):
        return False


