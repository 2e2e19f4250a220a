"""Typed configuration, built and validated once from YAML.

Every component receives only its own slice (``MySQLConfig``, ``S3Config``,
...).  Errors name the file, the key and what is wrong, in one line, and map
to exit status 2.  Unknown keys are errors: a typo such as ``worker: 4``
silently ignored is a misconfigured fleet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tracker.errors import ConfigError, UsageError
from tracker.names import parse_table_name

DEFAULT_PATH = "/etc/tracker/config.yaml"
COMPRESSIONS = ("lz4", "zstd", "gzip", "none")
SOURCES = ("auto", "fifo", "follow")
SCHEMES = ("s3", "file")
MIN_PART_MB = 5  # S3's minimum for every part but the last
MAX_PART_MB = 5 * 1024
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class MySQLConfig:
    """How to reach the local server."""

    host: str = "127.0.0.1"
    port: int = 3306
    socket: str | None = None
    user: str = "tracker"
    password: str = field(default="", repr=False)
    connect_timeout: int = 10


@dataclass(frozen=True)
class S3Config:
    """Object-store client settings (credentials come from the AWS chain)."""

    endpoint_url: str | None = None
    region: str | None = None
    part_size_mb: int = 16
    upload_concurrency: int = 4
    read_timeout_seconds: int = 60  # each connect and each wait for a response (botocore's default)


@dataclass(frozen=True)
class Destination:
    """Where datasets land: ``s3://bucket/prefix`` or ``file:///dir``."""

    url: str
    scheme: str
    bucket: str  # empty for file://
    prefix: str  # no leading or trailing slash; for file:// an absolute path


@dataclass(frozen=True)
class TablesConfig:
    """Which tables ``run`` and ``verify`` cover; regexes fully match ``db.table``."""

    include: tuple[re.Pattern, ...] = ()
    exclude: tuple[re.Pattern, ...] = ()
    priority: tuple[re.Pattern, ...] = ()

    def wanted(self, db: str, table: str) -> bool:
        name = f"{db}.{table}"
        if self.include and not any(p.fullmatch(name) for p in self.include):
            return False
        return not any(p.fullmatch(name) for p in self.exclude)

    def rank(self, db: str, table: str) -> int:
        """0 for priority tables, 1 for the rest."""
        name = f"{db}.{table}"
        return 0 if any(p.fullmatch(name) for p in self.priority) else 1


@dataclass(frozen=True)
class ReplicationConfig:
    heartbeat_table: tuple[str, str] | None = None  # (db, table) of pt-heartbeat
    wait_seconds: int = 3600
    poll_seconds: int = 10
    max_lag_seconds: int | None = None  # pause dumping while the lag is above this
    max_threads_running: int | None = None  # pause before a unit while Threads_running is above this


@dataclass(frozen=True)
class LocksConfig:
    schema: str = "tracker"
    lease_seconds: int = 300


@dataclass(frozen=True)
class LogicalTable:
    """Many physical tables (``match``, across ``namespaces``) converted as one table ``name``."""

    match: re.Pattern
    name: tuple[str, str]  # (db, table) of the logical table
    namespaces: tuple[str, ...]  # the replica sets whose datasets it unites


@dataclass(frozen=True)
class WarehouseConfig:
    """Stage 2 (``tracker convert``): where Parquet goes and how it is catalogued.

    ``catalog`` holds pyiceberg catalog properties as sorted pairs (a frozen
    dataclass must stay hashable); :meth:`catalog_props` gives the dict.
    """

    location: Destination
    catalog: tuple[tuple[str, str], ...] | None = None
    logical_tables: tuple[LogicalTable, ...] = ()
    strict: bool = False  # zero dates: False -> NULL and counted; True -> the table fails

    def catalog_props(self) -> dict[str, str] | None:
        return None if self.catalog is None else dict(self.catalog)


@dataclass(frozen=True)
class Config:
    """The whole configuration of one host."""

    path: str
    namespace: str
    mysql: MySQLConfig
    outfile_dir: Path | None  # None: not given; only the dump commands need it (require_outfile_dir)
    destination: Destination
    s3: S3Config
    workers: int = 2
    compression: str = "lz4"
    source: str = "auto"
    master: MySQLConfig | None = None  # None: discovered from the replica status
    tables: TablesConfig = field(default_factory=TablesConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    locks: LocksConfig = field(default_factory=LocksConfig)
    skip_file: Path = Path("/etc/tracker/skip")
    kill_skip_file: Path = Path("/etc/tracker/no_kill")
    run_lock_dir: Path = Path("/tmp")
    retries: int = 2
    stale_upload_hours: int = 24
    ddl_wait_seconds: int = 300
    chunk_mb: int = 1024  # split tables (and partitions) above this into key ranges; 0: never
    max_mb_per_second: float | None = None  # per host, across workers; None: unlimited
    warehouse: WarehouseConfig | None = None  # None: no warehouse section (convert refuses)
    metrics_file: Path | None = None  # Prometheus textfile every command updates; None: none

    def require_outfile_dir(self) -> Path:
        """outfile_dir, for the commands that dump; a converter host's config may omit it."""
        if self.outfile_dir is None:
            raise ConfigError(f"{self.path}: outfile_dir: missing (a directory inside the server's secure_file_priv)")
        return self.outfile_dir

    def require_warehouse(self) -> WarehouseConfig:
        """The warehouse section, for ``tracker convert``."""
        if self.warehouse is None:
            raise ConfigError(f"{self.path}: warehouse: missing (warehouse.location is needed to convert)")
        return self.warehouse


# --- validation helpers -----------------------------------------------------


class _Section:
    """Reads typed values out of one mapping, naming ``file: key`` in errors."""

    def __init__(self, path: str, data: Mapping[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.name(key)}: {what}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        value = self.data.get(key, default)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # YAML booleans are ints to Python; never accept one for a number.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_name(kinds)}, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def patterns(self, key: str) -> tuple[re.Pattern, ...]:
        values = self.get(key, list, [])
        compiled = []
        for value in values:
            if not isinstance(value, str):
                raise self.fail(key, f"expected a list of regular expressions, got {value!r}")
            try:
                compiled.append(re.compile(value))
            except re.error as exc:
                raise self.fail(key, f"invalid regular expression {value!r}: {exc}") from None
        return tuple(compiled)

    def section(self, key: str) -> "_Section":
        value = self.get(key, dict, {})
        return _Section(self.path, value, f"{self.name(key)}.")

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used, key=str)
        if unknown:
            raise self.fail(str(unknown[0]), "unknown key")


def _optional_integer(section: _Section, key: str, low: int, high: int) -> int | None:
    if section.data.get(key) is None:
        section.used.add(key)
        return None
    return section.integer(key, 0, low, high)


def _rate(top: _Section) -> float | None:
    value = top.get("max_mb_per_second", (int, float), None)
    if value is not None and not 0 < value <= 1e6:
        raise top.fail("max_mb_per_second", f"must be a positive number of MB/s, got {value}")
    return None if value is None else float(value)


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", dict: "a mapping", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# --- sections ----------------------------------------------------------------


def _password(section: _Section, base_dir: Path, default: str) -> str:
    """``password`` or ``password_file`` (relative to the config file), not both."""
    password = section.get("password", str, None)
    password_file = section.get("password_file", str, None)
    if password_file is None:
        return default if password is None else password
    if password:
        raise section.fail("password_file", "give password or password_file, not both")
    return _read_secret(section, "password_file", base_dir / password_file)


def _mysql(section: _Section, base_dir: Path) -> MySQLConfig:
    password = _password(section, base_dir, "")
    config = MySQLConfig(
        host=section.get("host", str, "127.0.0.1"),
        port=section.integer("port", 3306, 1, 65535),
        socket=section.get("socket", str, None),
        user=section.get("user", str, "tracker"),
        password=password,
        connect_timeout=section.integer("connect_timeout", 10, 1, 3600),
    )
    section.reject_unknown()
    return config


def _read_secret(section: _Section, key: str, path: Path) -> str:
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise section.fail(key, f"cannot read {path}: {exc.strerror}") from None


def _master(top: _Section, base_dir: Path, local: MySQLConfig) -> MySQLConfig | None:
    if top.data.get("master") is None:
        top.used.add("master")
        return None
    section = top.section("master")
    password = _password(section, base_dir, local.password)
    host = section.get("host", str, None)
    if not host:
        raise section.fail("host", "missing (the master's address, or leave master: out to discover it)")
    config = MySQLConfig(
        host=host,
        port=section.integer("port", 3306, 1, 65535),
        socket=None,
        user=section.get("user", str, local.user),
        password=password,
        connect_timeout=section.integer("connect_timeout", local.connect_timeout, 1, 3600),
    )
    section.reject_unknown()
    return config


def _tables(section: _Section) -> TablesConfig:
    config = TablesConfig(
        include=section.patterns("include"),
        exclude=section.patterns("exclude"),
        priority=section.patterns("priority"),
    )
    section.reject_unknown()
    return config


def _replication(section: _Section) -> ReplicationConfig:
    heartbeat = section.get("heartbeat_table", str, None)
    table = None
    if heartbeat is not None:
        db, dot, name = heartbeat.partition(".")
        if not dot or not db or not name:
            raise section.fail("heartbeat_table", f"must be DB.TABLE, got {heartbeat!r}")
        table = (db, name)
    config = ReplicationConfig(
        heartbeat_table=table,
        wait_seconds=section.integer("wait_seconds", 3600, 0, 7 * 86400),
        poll_seconds=section.integer("poll_seconds", 10, 1, 3600),
        max_lag_seconds=_optional_integer(section, "max_lag_seconds", 1, 7 * 86400),
        max_threads_running=_optional_integer(section, "max_threads_running", 1, 100_000),
    )
    section.reject_unknown()
    return config


def _locks(section: _Section) -> LocksConfig:
    config = LocksConfig(
        schema=section.get("schema", str, "tracker"),
        lease_seconds=section.integer("lease_seconds", 300, 2, 86400),
    )
    if not config.schema:
        raise section.fail("schema", "must not be empty")
    section.reject_unknown()
    return config


def _s3(section: _Section) -> S3Config:
    config = S3Config(
        endpoint_url=section.get("endpoint_url", str, None),
        region=section.get("region", str, None),
        part_size_mb=section.integer("part_size_mb", 16, MIN_PART_MB, MAX_PART_MB),
        upload_concurrency=section.integer("upload_concurrency", 4, 1, 64),
        read_timeout_seconds=section.integer("read_timeout_seconds", 60, 1, 3600),
    )
    section.reject_unknown()
    return config


def parse_destination(url: str) -> Destination:
    """Split a destination URL; raises ``ValueError`` with the reason."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"unsupported scheme in {url!r} (use s3://bucket/prefix or file:///dir)")
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"file destination must be an absolute path, got {url!r}")
        return Destination(url, "file", "", rest.rstrip("/") or "/")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"missing bucket in {url!r}")
    return Destination(url, "s3", bucket, prefix.strip("/"))


def _destination(top: _Section) -> Destination:
    url = top.get("destination", str, None)
    if not url:
        raise top.fail("destination", "missing (s3://bucket/prefix or file:///dir)")
    try:
        return parse_destination(url)
    except ValueError as exc:
        raise top.fail("destination", str(exc)) from None


def _outfile_dir(top: _Section) -> Path | None:
    value = top.get("outfile_dir", str, None)
    if value is None:
        return None  # checked by the dump commands (Config.require_outfile_dir)
    if not value:
        raise top.fail("outfile_dir", "missing (a directory inside the server's secure_file_priv)")
    path = Path(value)
    if not path.is_absolute():
        raise top.fail("outfile_dir", f"must be an absolute path, got {value!r}")
    if not path.is_dir():
        raise top.fail("outfile_dir", f"{value} does not exist or is not a directory")
    return path


_CATALOG_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def _catalog(section: _Section) -> tuple[tuple[str, str], ...] | None:
    if section.data.get("catalog") is None:
        section.used.add("catalog")
        return None
    props = section.get("catalog", dict, {})
    pairs = []
    for key, value in props.items():
        if not isinstance(key, str) or not _CATALOG_KEY.fullmatch(key):
            raise section.fail(f"catalog.{key}", "not a catalog property name")
        if isinstance(value, (dict, list)) or value is None:
            raise section.fail(f"catalog.{key}", f"expected a string, number or boolean, got {value!r}")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        pairs.append((key, text))
    if not pairs:
        raise section.fail("catalog", "empty (give pyiceberg catalog properties, e.g. type and uri, or leave it out)")
    return tuple(sorted(pairs))


def _logical_name(section: _Section, value: str | None) -> tuple[str, str]:
    if not value:
        raise section.fail("name", "missing (DB.TABLE of the logical table)")
    try:
        return parse_table_name(value)
    except UsageError as exc:
        raise section.fail("name", str(exc)) from None


def _logical_tables(top: _Section, namespace: str) -> tuple[LogicalTable, ...]:
    items = top.get("logical_tables", list, [])
    tables: list[LogicalTable] = []
    names: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise top.fail(f"logical_tables[{i}]", f"expected a mapping with match and name, got {item!r}")
        section = _Section(top.path, item, f"{top.name('logical_tables')}[{i}].")
        pattern = section.get("match", str, None)
        if not pattern:
            raise section.fail("match", "missing (a regular expression matched against db.table)")
        try:
            match = re.compile(pattern)
        except re.error as exc:
            raise section.fail("match", f"invalid regular expression {pattern!r}: {exc}") from None
        name = _logical_name(section, section.get("name", str, None))
        if name in names:
            raise section.fail("name", f"{name[0]}.{name[1]} is named by two logical tables")
        names.add(name)
        spaces = section.get("namespaces", list, [namespace])
        if not spaces:
            raise section.fail("namespaces", "must not be empty")
        for space in spaces:
            if not isinstance(space, str) or not _NAMESPACE.fullmatch(space) or space in (".", ".."):
                raise section.fail("namespaces", f"not a namespace: {space!r}")
        section.reject_unknown()
        tables.append(LogicalTable(match=match, name=name, namespaces=tuple(dict.fromkeys(spaces))))
    return tuple(tables)


def _warehouse(top: _Section, namespace: str) -> WarehouseConfig | None:
    if top.data.get("warehouse") is None:
        top.used.add("warehouse")
        return None
    section = top.section("warehouse")
    url = section.get("location", str, None)
    if not url:
        raise section.fail("location", "missing (s3://bucket/prefix or file:///dir for the Parquet files)")
    try:
        location = parse_destination(url)
    except ValueError as exc:
        raise section.fail("location", str(exc)) from None
    config = WarehouseConfig(
        location=location,
        catalog=_catalog(section),
        logical_tables=_logical_tables(section, namespace),
        strict=section.get("strict", bool, False),
    )
    section.reject_unknown()
    return config


def _metrics_file(top: _Section) -> Path | None:
    """Where node_exporter's textfile collector reads tracker's metrics (``*.prom``)."""
    value = top.get("metrics_file", str, None)
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute() or not path.name.endswith(".prom"):
        raise top.fail("metrics_file", f"must be an absolute path ending in .prom, got {value!r}")
    return path


def _namespace(top: _Section) -> str:
    value = top.get("namespace", str, None)
    if not value:
        raise top.fail("namespace", "missing (names this replica set in object keys)")
    if not _NAMESPACE.fullmatch(value) or value in (".", ".."):
        raise top.fail("namespace", f"must be letters, digits, '_', '.' or '-', got {value!r}")
    return value


def build(path: str, data: Any) -> Config:
    """Validate parsed YAML into a :class:`Config`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    top = _Section(path, data)
    base_dir = Path(path).resolve().parent
    mysql = _mysql(top.section("mysql"), base_dir)
    namespace = _namespace(top)
    config = Config(
        path=path,
        namespace=namespace,
        mysql=mysql,
        outfile_dir=_outfile_dir(top),
        destination=_destination(top),
        s3=_s3(top.section("s3")),
        workers=top.integer("workers", 2, 1, 64),
        compression=top.choice("compression", "lz4", COMPRESSIONS),
        source=top.choice("source", "auto", SOURCES),
        master=_master(top, base_dir, mysql),
        tables=_tables(top.section("tables")),
        replication=_replication(top.section("replication")),
        locks=_locks(top.section("locks")),
        skip_file=Path(top.get("skip_file", str, "/etc/tracker/skip")),
        kill_skip_file=Path(top.get("kill_skip_file", str, "/etc/tracker/no_kill")),
        run_lock_dir=Path(top.get("run_lock_dir", str, "/tmp")),
        retries=top.integer("retries", 2, 0, 100),
        stale_upload_hours=top.integer("stale_upload_hours", 24, 0, 24 * 365),
        ddl_wait_seconds=top.integer("ddl_wait_seconds", 300, 1, 86400),
        chunk_mb=top.integer("chunk_mb", 1024, 0, 1024 * 1024),
        max_mb_per_second=_rate(top),
        warehouse=_warehouse(top, namespace),
        metrics_file=_metrics_file(top),
    )
    top.reject_unknown()
    return config


def load(path: str) -> Config:
    """Read, parse and validate the config file at ``path``."""
    # PyYAML costs ~15 ms to import; only here, so the many importers of the
    # dataclasses above (every library module, Spark executors, `cat` without
    # a config file) do not pay for it.
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    return build(path, data)


def resolve_path(option: str | None, environ: Mapping[str, str]) -> str:
    """``--config`` wins, then ``$TRACKER_CONFIG``, then the default path."""
    return option or environ.get("TRACKER_CONFIG") or DEFAULT_PATH


