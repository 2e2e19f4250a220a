"""``tracker verify`` and ``tracker locks``: what is complete, what is claimed.

``verify`` is what an alert is built on: it lists the tables the local
server has (after the same filters as ``run``) whose dataset for the date is
not complete in the destination.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tracker.store import layout
from tracker.replicaset.claims import ClaimStore, Owner
from tracker.dump.columns import list_tables
from tracker.config import Config
from tracker.db import connect, server_info
from tracker.errors import UsageError
from tracker.replicaset.replica import master_config, read_status

from tracker.store.sinks import open_store


@dataclass(frozen=True)
class Gap:
    db: str
    table: str
    state: str  # "missing" (nothing written) or "incomplete" (objects but no _SUCCESS)


def verify(config: Config, date: dt.date) -> tuple[int, list[Gap]]:
    """(tables checked, the ones not complete)."""
    store = open_store(config.destination, config.s3)
    conn = connect(config.mysql)
    try:
        tables = [t for t in list_tables(conn, (config.locks.schema,)) if config.tables.wanted(*t)]
    finally:
        conn.close()
    gaps = []
    for db, table in tables:
        keys = layout.DatasetKeys(config.namespace, db, table, date)
        if store.exists(keys.success):
            continue
        state = "incomplete" if store.list(keys.prefix + "/") else "missing"
        gaps.append(Gap(db, table, state))
    return len(tables), gaps


def claims_listing(config: Config, date: dt.date) -> list[tuple]:
    """Rows of the claims table for the namespace and date."""
    conn = connect(config.mysql)
    try:
        server = server_info(conn)
        status = read_status(conn)
    finally:
        conn.close()
    if status is None and config.master is None:
        raise UsageError(f"{server.label} is not a replica and no master: is configured; cannot find the lock table")
    master = config.master if status is None else master_config(config, status)
    assert master is not None
    claims = ClaimStore(master, config.locks, Owner(server.hostname, server.port), config.namespace)
    try:
        claims.ensure_table()
        return claims.listing(date)
    finally:
        claims.close()
