"""Object keys: the one place that knows where a dataset's objects live.

Layout (a contract other tools read), under the destination prefix::

    N/D/T/dt=YYYY-MM-DD/part-00000.tsv.lz4   one object per unit
    N/D/T/dt=YYYY-MM-DD/schema.sql           SHOW CREATE TABLE
    N/D/T/dt=YYYY-MM-DD/manifest.json        what the parts hold
    N/D/T/dt=YYYY-MM-DD/_SUCCESS             written last, when complete

D and T are percent-encoded with every byte outside ``A-Za-z0-9_.-~``
escaped (``urllib.parse.quote(name, safe="")``), so any MySQL identifier
maps to exactly one key segment and distinct names to distinct segments.

Two names survive that encoding unchanged yet are not plain segments: ``.``
and ``..`` (MariaDB accepts both as database and table names).  A file
system, an ``s3 sync`` to disk or any URL normaliser resolves them to the
folder itself or its parent, so ``db.`..``` would land in ``N/db/dt=...``
next to every other table of ``db``.  Their dots are encoded too (``%2E``,
``%2E%2E``), so every dataset stays under its own ``N/D/T/`` prefix; every
other name's segment is exactly ``quote(name, safe="")``.  ``...``, ``a.``
and names of non-ASCII blanks (U+00A0, U+200B, accepted by MariaDB) are
ordinary segments for POSIX file systems and S3 and keep that form.  An
empty name (which MySQL refuses) has no segment: it would vanish between
two slashes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote, unquote

SUFFIXES = {"lz4": ".tsv.lz4", "zstd": ".tsv.zst", "gzip": ".tsv.gz", "none": ".tsv"}
SCHEMA = "schema.sql"
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"


# Segments a path resolver treats as "this folder" / "the parent".
_DOT_SEGMENTS = frozenset({".", ".."})


def encode_segment(name: str) -> str:
    """Percent-encode one identifier as a key segment that no resolver rewrites.

    No ``/`` survives, and ``.``/``..`` become ``%2E``/``%2E%2E`` (see the
    module docstring); ``decode_segment`` inverts it.
    """
    if not name:
        raise ValueError("an empty name has no key segment")
    encoded = quote(name, safe="")
    if encoded in _DOT_SEGMENTS:
        return encoded.replace(".", "%2E")
    return encoded


def decode_segment(segment: str) -> str:
    """The identifier ``encode_segment`` made ``segment`` from."""
    return unquote(segment, errors="strict")


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

    @cached_property
    def prefix(self) -> str:
        # Cached (in the instance's dict; the fields stay frozen): every
        # object key of the dataset starts with it, and percent-encoding the
        # names again for each cost more than dumping a small table's rows.
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
