"""``manifest.json``: what a dataset holds, for readers and for ``verify``.

Field names are a contract; add fields, never rename them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from tracker import __version__

FORMAT_VERSION = 1

# The data format of every part (OUTFILE's default text format, NULs raw).
DATA_FORMAT = {
    "fields_terminated_by": "\t",
    "lines_terminated_by": "\n",
    "escaped_by": "\\",
    "enclosed_by": "",
    "null": "\\N",
    "nul_unescaped": True,
    "character_set": "binary",
    "time_zone": "+00:00",
}


@dataclass(frozen=True)
class UnitEntry:
    """One committed unit, as the manifest lists it."""

    index: int
    key: str
    url: str
    rows: int
    bytes: int
    raw_bytes: int
    crc32c: str
    source: str
    seconds: float
    partition: str | None = None
    range: dict[str, Any] | None = None  # key range: index, columns, lower, upper, where
    position: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": self.index,
            "key": self.key,
            "url": self.url,
            "rows": self.rows,
            "bytes": self.bytes,
            "raw_bytes": self.raw_bytes,
            "checksum": {"crc32c": self.crc32c},
            "source": self.source,
            "seconds": round(self.seconds, 3),
            "position": self.position,
        }
        if self.partition is not None:
            entry["partition"] = self.partition
        if self.range is not None:
            entry["range"] = self.range
        return entry


def build(
    *,
    namespace: str,
    db: str,
    table: str,
    date: dt.date,
    columns: list[dict[str, Any]],
    compression: str,
    units: list[dict[str, Any]],
    schema_key: str,
    server_version: str,
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "namespace": namespace,
        "db": db,
        "table": table,
        "date": date.isoformat(),
        "rows": sum(u["rows"] for u in units),
        "bytes": sum(u["bytes"] for u in units),
        "raw_bytes": sum(u["raw_bytes"] for u in units),
        "compression": compression,
        "format": DATA_FORMAT,
        "columns": columns,
        "system_versioning": system_versioning(columns),
        "units": sorted(units, key=lambda u: u["index"]),
        "schema": schema_key,
        "server_version": server_version,
        "tracker_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def system_versioning(columns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For a system-versioned table (period columns): every row version is in the parts.

    A loader restores the history with ``system_versioning_insert_history``;
    None for an ordinary table.
    """
    period = {c["period"]: c["name"] for c in columns if c.get("period")}
    if not period:
        return None
    return {"rows": "all_versions", "row_start": period.get("start"), "row_end": period.get("end")}


# json's C encoder: with ``indent`` json falls back to its Python encoder,
# which cost more than dumping a small table.
_encode = json.JSONEncoder(ensure_ascii=False).encode


def dumps(manifest: dict[str, Any]) -> bytes:
    """The manifest as UTF-8 JSON, a line per field and per column or unit, for people reading it too."""
    fields = []
    for name, value in manifest.items():
        if isinstance(value, list) and value:
            items = ",\n".join("    " + _encode(item) for item in value)
            fields.append(f"  {_encode(name)}: [\n{items}\n  ]")
        else:
            fields.append(f"  {_encode(name)}: {_encode(value)}")
    return ("{\n" + ",\n".join(fields) + "\n}\n").encode()
