"""Object keys: the one place that knows where a dataset's objects live.

Layout (a contract other tools read), under the destination prefix::

    N/D/T/dt=YYYY-MM-DD/part-00000.tsv.lz4   one object per unit
    N/D/T/dt=YYYY-MM-DD/schema.sql           SHOW CREATE TABLE
    N/D/T/dt=YYYY-MM-DD/manifest.json        what the parts hold
    N/D/T/dt=YYYY-MM-DD/_SUCCESS             written last, when complete

D and T are percent-encoded with every byte outside ``A-Za-z0-9_.-~``
escaped, so any MySQL identifier maps to exactly one safe key segment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

SUFFIXES = {"lz4": ".tsv.lz4", "gzip": ".tsv.gz", "none": ".tsv"}
SCHEMA = "schema.sql"
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"


def encode_segment(name: str) -> str:
    """Percent-encode one identifier as a key segment (no '/' survives)."""
    return quote(name, safe="")


def part_name(index: int, compression: str) -> str:
    """File name of the ``index``-th unit's object."""
    return f"part-{index:05d}{SUFFIXES[compression]}"


def compression_of(key: str) -> str:
    """The compression a data object's name says it carries."""
    for compression, suffix in SUFFIXES.items():
        if key.endswith(suffix) and compression != "none":
            return compression
    return "none"


@dataclass(frozen=True)
class DatasetKeys:
    """Keys of one table's dataset for one date, relative to the destination."""

    namespace: str
    db: str
    table: str
    date: dt.date

    @property
    def prefix(self) -> str:
        return "/".join(
            (
                self.namespace,
                encode_segment(self.db),
                encode_segment(self.table),
                f"dt={self.date.isoformat()}",
            )
        )

    def part(self, index: int, compression: str) -> str:
        return f"{self.prefix}/{part_name(index, compression)}"

    @property
    def schema(self) -> str:
        return f"{self.prefix}/{SCHEMA}"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}/{MANIFEST}"

    @property
    def success(self) -> str:
        return f"{self.prefix}/{SUCCESS}"
