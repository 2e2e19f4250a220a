"""``verify --deep`` on the Parquet side: each file's footer row count against its source.

For every Parquet dataset of the namespace and date that ``tracker convert``
completed (``_SUCCESS`` under ``warehouse.location``), each file listed in
its ``_manifest.json`` must be there, be readable Parquet, and hold as many
rows as the source unit it was made from says in the *source* dataset's
``manifest.json``.  Only footers are read (one ranged GET on S3).

pyarrow is the [warehouse] extra and verify runs on replica hosts that may
lack it: it is imported here only, and its absence skips this part of the
check with one INFO line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Callable
from urllib.parse import unquote

from tracker.config import Config
from tracker.store import layout
from tracker.store.audit import Problem, read_manifest
from tracker.store.sinks import Store, open_store

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"  # tracker.warehouse.plan.MANIFEST, without importing pyarrow

Footer = Callable[[Store, str], "tuple[Any, int] | None"]


def audit_warehouse(config: Config, date: dt.date) -> list[Problem]:
    """The Parquet datasets of ``config.namespace`` for ``date``; [] without a warehouse or pyarrow."""
    if config.warehouse is None:
        return []
    try:
        from tracker.warehouse.parquet import read_footer
    except ImportError as exc:
        log.info("event=verify_parquet_skipped reason=pyarrow_missing error=%s", exc)
        return []
    from tracker.warehouse.targets import children

    out = open_store(config.warehouse.location, config.s3)
    sources = SourceManifests(open_store(config.destination, config.s3), date)
    problems: list[Problem] = []
    checked = 0
    for db_segment in children(out, config.namespace):
        for table_segment in children(out, f"{config.namespace}/{db_segment}"):
            prefix = f"{config.namespace}/{db_segment}/{table_segment}/dt={date.isoformat()}"
            if not out.exists(f"{prefix}/{layout.SUCCESS}"):
                continue
            checked += 1
            fallback = (config.namespace, unquote(db_segment), unquote(table_segment))
            problems += audit_parquet_dataset(out, prefix, sources, read_footer, fallback)
    log.info("event=verify_parquet_done datasets=%d problems=%d", checked, len(problems))
    return problems


class SourceManifests:
    """Source datasets' manifests, read once each; a missing one is a problem, reported once."""

    def __init__(self, store: Store, date: dt.date) -> None:
        self.store = store
        self.date = date
        self._cache: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self.problems: list[Problem] = []

    def units(self, namespace: str, db: str, table: str) -> list[dict[str, Any]] | None:
        """The source's unit entries sorted by index; None when its manifest is missing or unreadable."""
        ident = (namespace, db, table)
        if ident not in self._cache:
            keys = layout.DatasetKeys(namespace, db, table, self.date)
            document, problem = read_manifest(self.store, keys.manifest)
            self._cache[ident] = document
            if problem is not None:
                self.problems.append(problem)
        document = self._cache[ident]
        return None if document is None else sorted(document["units"], key=lambda u: u.get("index", 0))


def audit_parquet_dataset(
    out: Store, prefix: str, sources: SourceManifests, read_footer: Footer, fallback: tuple[str, str, str]
) -> list[Problem]:
    """One converted dataset: every file its ``_manifest.json`` lists, footer rows against the source unit.

    Without ``_manifest.json`` (it is written before ``_SUCCESS``, so it was
    lost since) that is reported, and the files are matched to the
    same-named source's units by position, as convert numbers them for a
    table that is not a logical one.
    """
    present = set(out.list(prefix + "/"))
    before = len(sources.problems)
    problems: list[Problem] = []
    files, problem = _files(out, f"{prefix}/{MANIFEST}")
    if files is None:
        if problem is not None:
            problems.append(problem)
        files = _by_position(prefix, present, fallback, sources)
    for name, origin in files:
        key = f"{prefix}/{name}"
        url = out.url(key)
        if key not in present:
            problems.append(Problem("missing", url))
            continue
        found = read_footer(out, key)
        if found is None:
            problems.append(Problem("corrupt", url, "not a readable Parquet file"))
            continue
        units = _source_units(origin, sources)
        if units is None:  # the source manifest's own problem is reported once, below
            continue
        expected = next((u.get("rows") for u in units if u.get("index") == origin.get("unit")), None)
        if expected is None:
            problems.append(Problem("rows", url, f"source unit {origin.get('unit')} is not in the source manifest"))
        elif found[0].num_rows != expected:
            problems.append(Problem("rows", url, f"manifest {expected}, parquet {found[0].num_rows}"))
    return problems + sources.problems[before:]


def _files(out: Store, key: str) -> tuple[list[tuple[str, dict[str, Any]]] | None, Problem | None]:
    data = out.get(key)
    if data is None:
        return None, Problem("missing", out.url(key))
    try:
        return [(str(f["name"]), dict(f["source"])) for f in json.loads(data)["files"]], None
    except (ValueError, KeyError, TypeError) as exc:
        return None, Problem("corrupt", out.url(key), f"not a readable manifest: {exc}")


def _by_position(
    prefix: str, present: set[str], source: tuple[str, str, str], sources: SourceManifests
) -> list[tuple[str, dict[str, Any]]]:
    units = sources.units(*source) or []
    names = sorted(k.rsplit("/", 1)[1] for k in present if k.endswith(".parquet"))
    namespace, db, table = source
    files = []
    for position, name in enumerate(names):
        unit = units[position]["index"] if position < len(units) else None
        files.append((name, {"namespace": namespace, "db": db, "table": table, "unit": unit}))
    return files


def _source_units(origin: dict[str, Any], sources: SourceManifests) -> list[dict[str, Any]] | None:
    """The unit entries of the source dataset a file was made from (None: its manifest is missing)."""
    try:
        return sources.units(str(origin["namespace"]), str(origin["db"]), str(origin["table"]))
    except KeyError:
        return None
