"""``tracker verify`` and ``tracker locks``: what is complete, what is claimed.

``verify`` is what an alert is built on: it lists the tables the local
server has (after the same filters as ``run``) whose dataset for the date is
not complete in the destination.  ``verify --deep`` also reads back every
object of the complete ones (``tracker.store.audit``) and, with a
``warehouse`` section, checks the Parquet files' row counts
(``tracker.warehouse.audit``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tracker.store import layout
from tracker.replicaset.claims import ClaimStore, Owner
from tracker.dump.columns import list_tables
from tracker.config import Config
from tracker.db import connect, server_info
from tracker.replicaset.datasets import DatasetLeases, lock_master
from tracker.replicaset.replica import read_status
from tracker.store.sinks import open_store

if TYPE_CHECKING:
    from tracker.store.audit import Problem


@dataclass(frozen=True)
class Gap:
    db: str
    table: str
    state: str  # "missing" (nothing written) or "incomplete" (objects but no _SUCCESS)


def verify(config: Config, date: dt.date) -> tuple[int, list[Gap]]:
    """(tables checked, the ones not complete)."""
    checked, gaps, _complete = _survey(config, date)
    return checked, gaps


def verify_deep(config: Config, date: dt.date) -> tuple[int, list[Gap], list[Problem]]:
    """:func:`verify`, plus every bad object of the complete datasets (and of their Parquet copies)."""
    # Imported here: the decoder behind them is start-up cost that plain
    # verify and locks (cron, every replica) do not need.
    from tracker.store.audit import audit_dataset
    from tracker.warehouse.audit import audit_warehouse

    checked, gaps, complete = _survey(config, date)
    store = open_store(config.destination, config.s3)
    problems: list[Problem] = []
    for keys in complete:
        problems += audit_dataset(store, keys)
    problems += audit_warehouse(config, date)
    return checked, gaps, problems


def _survey(config: Config, date: dt.date) -> tuple[int, list[Gap], list[layout.DatasetKeys]]:
    """(tables checked, the ones not complete, the keys of the complete ones)."""
    store = open_store(config.destination, config.s3)
    conn = connect(config.mysql)
    try:
        tables = [t for t in list_tables(conn, (config.locks.schema,)) if config.tables.wanted(*t)]
    finally:
        conn.close()
    gaps = []
    complete = []
    for db, table in tables:
        keys = layout.DatasetKeys(config.namespace, db, table, date)
        if store.exists(keys.success):
            complete.append(keys)
            continue
        state = "incomplete" if store.list(keys.prefix + "/") else "missing"
        gaps.append(Gap(db, table, state))
    return len(tables), gaps, complete


def claims_listing(config: Config, date: dt.date) -> list[tuple]:
    """Dataset leases (unit None, state ``dump`` or ``run``), then the claims, for the namespace and date.

    The lock schema is the master's (see ``lock_master``): on a server that
    is not a replica and has no ``master:``, the local server's own, where
    ``dump --allow-master`` keeps its dataset leases.
    """
    conn = connect(config.mysql)
    try:
        server = server_info(conn)
        status = read_status(conn)
    finally:
        conn.close()
    claims = ClaimStore(lock_master(config, status), config.locks, Owner(server.hostname, server.port), config.namespace)
    try:
        datasets = DatasetLeases(claims)
        claims.ensure_table()
        datasets.ensure_table()
        return datasets.listing(date) + claims.listing(date)
    finally:
        claims.close()
