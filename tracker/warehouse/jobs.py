"""The plain data every conversion engine passes around: settings, jobs, results.

All picklable (frozen dataclasses of str, dict, date and a ``pa.Schema``),
so a Spark driver can ship a job to executors and get results back.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tracker.config import Config, Destination, S3Config
from tracker.store import layout
from tracker.store.sinks import Store, open_store

@dataclass(frozen=True)
class ConvertSettings:
    """The slice of the config a unit's conversion needs (picklable; no secrets: S3 uses the AWS chain)."""

    destination: Destination  # where the datasets are
    location: Destination  # where the Parquet goes
    s3: S3Config
    strict: bool = False
    lease_seconds: int = 300
    catalog: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def from_config(cls, config: Config) -> "ConvertSettings":
        warehouse = config.require_warehouse()
        return cls(
            destination=config.destination,
            location=warehouse.location,
            s3=config.s3,
            strict=warehouse.strict,
            lease_seconds=config.locks.lease_seconds,
            catalog=warehouse.catalog,
        )


@dataclass(frozen=True, eq=False)
class SourceDataset:
    """One complete physical dataset a target reads."""

    namespace: str
    db: str
    table: str
    manifest: dict[str, Any]


@dataclass(frozen=True, eq=False)
class PlannedUnit:
    """Output file ``index`` comes from unit ``entry`` of source ``source``."""

    index: int
    source: int  # index into DatasetJob.sources
    entry: dict[str, Any]  # the source manifest's unit entry
    fingerprint: str


@dataclass(frozen=True, eq=False)
class DatasetJob:
    """One output table for one date: everything an engine needs, picklable."""

    namespace: str
    db: str
    table: str
    date: dt.date
    logical: bool
    sources: tuple[SourceDataset, ...] = ()
    units: tuple[PlannedUnit, ...] = ()
    schema: pa.Schema | None = None
    force: bool = False
    up_to_date: bool = False  # at planning time; checked again under the lease
    problem: str | None = None  # the plan failed: the dataset fails with this line
    lease_token: str | None = None  # set while a converter holds the dataset's lease

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"

    @property
    def table_prefix(self) -> str:
        return "/".join((self.namespace, layout.encode_segment(self.db), layout.encode_segment(self.table)))

    @property
    def prefix(self) -> str:
        return f"{self.table_prefix}/dt={self.date.isoformat()}"

    def file_key(self, index: int) -> str:
        return f"{self.prefix}/part-{index:05d}.parquet"

    @property
    def identifier(self) -> tuple[str, str, str]:
        """The Iceberg identifier: <namespace>.<db>.<table>."""
        return (self.namespace, self.db, self.table)


@dataclass(frozen=True)
class FileResult:
    """One committed (or reused) Parquet file."""

    index: int
    key: str
    url: str
    rows: int
    bytes: int
    fingerprint: str
    source: dict[str, Any]
    zero_dates: dict[str, int] = field(default_factory=dict)
    reused: bool = False


@dataclass
class DatasetOutcome:
    """What happened to one output table: done, up-to-date, busy or failed."""

    namespace: str
    db: str
    table: str
    date: dt.date
    status: str
    rows: int = 0
    files: int = 0
    zero_dates: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    registered: bool | None = None  # None: no catalog configured
    location_url: str = ""
    schema: pa.Schema | None = None

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"


@functools.lru_cache(maxsize=8)
def store_for(destination: Destination, s3: S3Config) -> Store:
    """One store (one S3 client) per process and destination; boto3 clients are thread-safe."""
    return open_store(destination, s3)
