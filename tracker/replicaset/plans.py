"""Plans of small tables, offered to the master and read back many at once.

A table that needs no key walk is planned without a query on the replica,
so its plan needs no planning lease: one ``INSERT IGNORE`` offers the plans
of up to ``PLANS_PER_STATEMENT`` tables and one ``SELECT`` reads back what
the master holds.  Every host then dumps the plan the master holds (the
first host's, even if another host's estimates would chunk the table).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

from tracker.replicaset.batches import Name, _rows
from tracker.replicaset.claims import ClaimStore

PLANS_PER_STATEMENT = 200


class PlanBatch:
    """Plans that need no planning lease, stored and read back many at once."""

    def __init__(self, store: ClaimStore) -> None:
        self.store = store

    def store_plans(self, date: dt.date, documents: dict[Name, dict[str, Any]]) -> dict[Name, dict[str, Any] | None]:
        """The plan the master holds for each table: ours if none was there; None while another host plans it."""
        stored: dict[Name, dict[str, Any] | None] = {}
        items = list(documents.items())
        ns, host, token = self.store.namespace, self.store.owner.host, secrets.token_hex(16)
        for start in range(0, len(items), PLANS_PER_STATEMENT):
            chunk = items[start : start + PLANS_PER_STATEMENT]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, NOW(6), %s)"] * len(chunk))
            args: list[Any] = []
            for (db, table), document in chunk:
                args += [ns, db, table, date, host, token, json.dumps(document)]
            inserted, _ = self.store.execute(
                f"INSERT IGNORE INTO {self.store.plans} (namespace, db, tbl, ds, host, token, expires_at, plan)"
                f" VALUES {values}",
                tuple(args),
            )
            if inserted == len(chunk):  # every row is ours (the first host today): nothing to read back
                stored.update(chunk)
                continue
            keys = [a for (db, table), _ in chunk for a in (ns, db, table, date)]
            _, rows = self.store.execute(
                f"SELECT db, tbl, plan FROM {self.store.plans} WHERE (namespace, db, tbl, ds) IN ({_rows(4, len(chunk))})",
                tuple(keys),
            )
            found = {(str(db), str(table)): plan for db, table, plan in rows}
            for name, _ in chunk:
                plan = found.get(name)
                stored[name] = json.loads(plan) if plan else None
        return stored
