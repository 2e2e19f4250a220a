"""Which tables ``tracker convert`` writes for a date, and from which datasets.

A *target* is one output table: a physical table of this config's namespace,
or a logical table (``warehouse.logical_tables``) uniting every physical
table whose ``db.table`` fully matches its regex, across the namespaces it
lists.  A physical table that a logical table takes is converted only as
part of it.  Of another namespace, only the tables a logical table takes
are read: that namespace's own tables are its converter's work.

Sources are found by listing the store one level at a time (namespaces,
databases, tables), never a whole namespace's history of dates.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from urllib.parse import unquote

from tracker.config import Config, LogicalTable
from tracker.store import layout
from tracker.store.files import FileStore
from tracker.store.sinks import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceRef:
    """One physical table's dataset for the date (complete or not)."""

    namespace: str
    db: str
    table: str
    date: dt.date

    @property
    def keys(self) -> layout.DatasetKeys:
        return layout.DatasetKeys(self.namespace, self.db, self.table, self.date)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.db}.{self.table}"


@dataclass
class Target:
    """One output table and the datasets it is made of."""

    namespace: str
    db: str
    table: str
    logical: bool
    complete: list[SourceRef] = field(default_factory=list)
    incomplete: list[SourceRef] = field(default_factory=list)  # dt= folder without _SUCCESS

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"


def children(store: Store, prefix: str) -> list[str]:
    """Names one level below ``prefix`` (a "directory" of keys)."""
    if isinstance(store, FileStore):
        base = store.path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    client = store.client  # type: ignore[attr-defined]
    full = store.full_key(prefix).rstrip("/") + "/"  # type: ignore[attr-defined]
    names: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=store.destination.bucket, Prefix=full, Delimiter="/"):
        for entry in page.get("CommonPrefixes", []):
            names.append(entry["Prefix"][len(full) :].rstrip("/"))
    return sorted(names)


def logical_for(config: Config, namespace: str, db: str, table: str) -> LogicalTable | None:
    """The first logical table that takes this physical table, if any."""
    assert config.warehouse is not None
    name = f"{db}.{table}"
    for logical in config.warehouse.logical_tables:
        if namespace in logical.namespaces and logical.match.fullmatch(name):
            return logical
    return None


def _state(store: Store, ref: SourceRef) -> str:
    """complete (has _SUCCESS), incomplete (something under dt=, no _SUCCESS) or absent."""
    keys = ref.keys
    if store.exists(keys.success):
        return "complete"
    return "incomplete" if store.list(keys.prefix + "/") else "absent"


def discover(store: Store, config: Config, date: dt.date) -> list[Target]:
    """Every target with at least one dataset (complete or not) on ``date``."""
    assert config.warehouse is not None
    spaces = [config.namespace]
    for logical in config.warehouse.logical_tables:
        spaces.extend(s for s in logical.namespaces if s not in spaces)
    targets: dict[tuple[bool, str, str], Target] = {}
    for space in spaces:
        for db_segment in children(store, space):
            db = unquote(db_segment)
            for table_segment in children(store, f"{space}/{db_segment}"):
                table = unquote(table_segment)
                target = _target_for(config, targets, space, db, table)
                if target is None:
                    continue
                ref = SourceRef(space, db, table, date)
                state = _state(store, ref)
                if state == "complete":
                    target.complete.append(ref)
                elif state == "incomplete":
                    target.incomplete.append(ref)
    found = [t for t in targets.values() if t.complete or t.incomplete]
    for target in found:
        target.complete.sort(key=_order)
        target.incomplete.sort(key=_order)
    return sorted(_drop_shadowed(found), key=lambda t: (t.db, t.table))


def _order(ref: SourceRef) -> tuple[str, str, str]:
    """The stable order of a logical table's sources (its files are numbered in it)."""
    return (ref.namespace, ref.db, ref.table)


def _target_for(
    config: Config, targets: dict[tuple[bool, str, str], Target], space: str, db: str, table: str
) -> Target | None:
    logical = logical_for(config, space, db, table)
    if logical is not None:
        key = (True, *logical.name)
    elif space == config.namespace:
        key = (False, db, table)
    else:
        return None
    target = targets.get(key)
    if target is None:
        target = targets[key] = Target(config.namespace, key[1], key[2], key[0])
    return target


def _drop_shadowed(targets: list[Target]) -> list[Target]:
    """A logical table named like a physical table of this namespace wins; the physical one is not converted."""
    logical = {(t.db, t.table) for t in targets if t.logical}
    kept = []
    for target in targets:
        if not target.logical and (target.db, target.table) in logical:
            log.warning("event=convert_name_clash table=%s note=a_logical_table_has_this_name", target.name)
            continue
        kept.append(target)
    return kept


def select(targets: list[Target], names: list[tuple[str, str]] | None) -> tuple[list[Target], list[str]]:
    """The targets the command line names (all when None) and the names matching none.

    A name matches a target by its own name or by one of its sources'.
    """
    if names is None:
        return targets, []
    chosen: list[Target] = []
    unmatched: list[str] = []
    for db, table in names:
        hits = [
            t
            for t in targets
            if (t.db, t.table) == (db, table) or any((r.db, r.table) == (db, table) for r in t.complete + t.incomplete)
        ]
        if not hits:
            unmatched.append(f"{db}.{table}")
        chosen.extend(t for t in hits if t not in chosen)
    return chosen, unmatched
