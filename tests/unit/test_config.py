"""Every bad config is one line naming the file and the key, status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tracker import config
from tracker.errors import ConfigError


@pytest.fixture
def base(tmp_path: Path) -> dict:
    (tmp_path / "out").mkdir()
    return {
        "namespace": "main",
        "mysql": {"host": "127.0.0.1", "port": 3306, "user": "tracker", "password": "pw"},
        "outfile_dir": str(tmp_path / "out"),
        "destination": "s3://bucket/prefix",
    }


def write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_valid(tmp_path: Path, base: dict) -> None:
    cfg = config.load(write(tmp_path, base))
    assert cfg.namespace == "main"
    assert cfg.destination.bucket == "bucket" and cfg.destination.prefix == "prefix"
    assert cfg.compression == "lz4" and cfg.workers == 2 and cfg.source == "auto"
    assert "pw" not in repr(cfg)  # secrets never reach logs through repr


def test_password_file(tmp_path: Path, base: dict) -> None:
    (tmp_path / "pass").write_text("s3cret\n")
    del base["mysql"]["password"]
    base["mysql"]["password_file"] = "pass"  # relative to the config file
    assert config.load(write(tmp_path, base)).mysql.password == "s3cret"


@pytest.mark.parametrize(
    "change, key, words",
    [
        (lambda d: d.update(workers="two"), "workers", "expected an integer"),
        (lambda d: d.update(workers=0), "workers", "between 1 and 64"),
        (lambda d: d.update(workers=True), "workers", "expected an integer"),
        (lambda d: d.update(compression="brotli"), "compression", "must be one of"),
        (lambda d: d.update(worker=4), "worker", "unknown key"),
        (lambda d: d["mysql"].update(prot=1), "mysql.prot", "unknown key"),
        (lambda d: d["mysql"].update(port=70000), "mysql.port", "between 1 and 65535"),
        (lambda d: d.pop("destination"), "destination", "missing"),
        (lambda d: d.update(destination="ftp://x/y"), "destination", "unsupported scheme"),
        (lambda d: d.update(destination="file://relative"), "destination", "absolute"),
        (lambda d: d.update(outfile_dir="/nonexistent/dir"), "outfile_dir", "does not exist"),
        (lambda d: d.update(outfile_dir="relative"), "outfile_dir", "absolute"),
        (lambda d: d.update(namespace="a/b"), "namespace", "must be letters"),
        (lambda d: d["mysql"].update(password_file="/nonexistent"), "mysql.password_file", "not both"),
        (lambda d: d.update(s3={"part_size_mb": 1}), "s3.part_size_mb", "between 5"),
        (lambda d: d.update(source="pipe"), "source", "must be one of"),
    ],
)
def test_invalid(tmp_path: Path, base: dict, change, key: str, words: str) -> None:
    change(base)
    path = write(tmp_path, base)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert words in message
    assert "\n" not in message
    assert info.value.exit_status == 2


@pytest.mark.parametrize("text, words", [("a: [1,\n", "invalid YAML at line"), ("- 1\n- 2\n", "mapping")])
def test_malformed_yaml(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=words):
        config.load(path)


def test_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(str(tmp_path / "missing.yaml"))


def test_resolve_path() -> None:
    assert config.resolve_path("x.yaml", {"TRACKER_CONFIG": "y"}) == "x.yaml"
    assert config.resolve_path(None, {"TRACKER_CONFIG": "y"}) == "y"
    assert config.resolve_path(None, {}) == config.DEFAULT_PATH


def test_run_sections(tmp_path: Path, base: dict) -> None:
    base.update(
        master={"host": "db-master", "port": 3307},
        tables={"include": [r"shop\..*"], "exclude": [r"shop\.tmp_.*"], "priority": [r"shop\.orders"]},
        replication={"heartbeat_table": "heartbeat.heartbeat", "wait_seconds": 60, "poll_seconds": 5},
        locks={"schema": "tracker_locks", "lease_seconds": 120},
        skip_file="/tmp/skip",
        run_lock_dir="/run/lock",
        retries=1,
    )
    cfg = config.load(write(tmp_path, base))
    assert cfg.master is not None and (cfg.master.host, cfg.master.port) == ("db-master", 3307)
    assert cfg.master.user == "tracker" and cfg.master.password == "pw"  # inherited from mysql:
    assert cfg.tables.wanted("shop", "orders") and not cfg.tables.wanted("shop", "tmp_x")
    assert not cfg.tables.wanted("other", "orders")
    assert cfg.tables.wanted("shop", "a.b")  # full match over db.table, dots and all
    assert cfg.tables.rank("shop", "orders") == 0 and cfg.tables.rank("shop", "users") == 1
    assert cfg.replication.heartbeat_table == ("heartbeat", "heartbeat")
    assert (cfg.locks.schema, cfg.locks.lease_seconds, cfg.retries) == ("tracker_locks", 120, 1)


def test_load_control_and_chunking(tmp_path: Path, base: dict) -> None:
    defaults = config.load(write(tmp_path, base))
    assert (defaults.chunk_mb, defaults.max_mb_per_second, defaults.replication.max_lag_seconds) == (1024, None, None)
    base.update(chunk_mb=0, max_mb_per_second=2.5, replication={"max_lag_seconds": 300})
    cfg = config.load(write(tmp_path, base))
    assert (cfg.chunk_mb, cfg.max_mb_per_second, cfg.replication.max_lag_seconds) == (0, 2.5, 300)
    base.update(max_mb_per_second=200)
    assert config.load(write(tmp_path, base)).max_mb_per_second == 200.0


def test_run_defaults(tmp_path: Path, base: dict) -> None:
    cfg = config.load(write(tmp_path, base))
    assert cfg.master is None
    assert cfg.tables.wanted("any", "table")
    assert cfg.replication.wait_seconds == 3600 and cfg.replication.heartbeat_table is None
    assert (cfg.locks.schema, cfg.locks.lease_seconds) == ("tracker", 300)
    assert str(cfg.skip_file) == "/etc/tracker/skip"


@pytest.mark.parametrize(
    "change, key, words",
    [
        (lambda d: d.update(tables={"include": ["("]}), "tables.include", "invalid regular expression"),
        (lambda d: d.update(tables={"include": "shop"}), "tables.include", "expected a list"),
        (lambda d: d.update(replication={"heartbeat_table": "nodot"}), "replication.heartbeat_table", "DB.TABLE"),
        (lambda d: d.update(locks={"lease_seconds": 1}), "locks.lease_seconds", "between 2"),
        (lambda d: d.update(master={"port": 3306}), "master.host", "missing"),
        (lambda d: d.update(retries=-1), "retries", "between 0"),
        (lambda d: d.update(chunk_mb=-1), "chunk_mb", "between 0"),
        (lambda d: d.update(chunk_mb="1G"), "chunk_mb", "expected an integer"),
        (lambda d: d.update(max_mb_per_second=0), "max_mb_per_second", "positive"),
        (lambda d: d.update(max_mb_per_second="fast"), "max_mb_per_second", "expected an integer or a number"),
        (lambda d: d.update(max_mb_per_second=True), "max_mb_per_second", "expected"),
        (lambda d: d.update(replication={"max_lag_seconds": 0}), "replication.max_lag_seconds", "between 1"),
        (lambda d: d.update(replication={"max_lag_seconds": "1h"}), "replication.max_lag_seconds", "expected an integer"),
    ],
)
def test_invalid_run_sections(tmp_path: Path, base: dict, change, key: str, words: str) -> None:
    change(base)
    path = write(tmp_path, base)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: {key}:") and words in str(info.value), str(info.value)


# --- warehouse (tracker convert) ----------------------------------------------


def test_warehouse_section(tmp_path: Path, base: dict) -> None:
    base["warehouse"] = {
        "location": "s3://wh/warehouse/",
        "catalog": {"type": "sql", "uri": "sqlite:////tmp/c.db", "init": True},
        "strict": True,
        "logical_tables": [
            {"match": r"shard_\d+\.user_info_\d+", "name": "shop.user_info", "namespaces": ["main", "main2"]},
            {"match": r"a\..*", "name": "`my.db`.t"},
        ],
    }
    wh = config.load(write(tmp_path, base)).warehouse
    assert wh is not None
    assert (wh.location.scheme, wh.location.bucket, wh.location.prefix) == ("s3", "wh", "warehouse")
    assert wh.catalog_props() == {"type": "sql", "uri": "sqlite:////tmp/c.db", "init": "true"}
    assert wh.strict is True
    first, second = wh.logical_tables
    assert first.name == ("shop", "user_info") and first.namespaces == ("main", "main2")
    assert first.match.fullmatch("shard_12.user_info_3") and not first.match.fullmatch("shard_1.user_info_2x")
    assert second.name == ("my.db", "t") and second.namespaces == ("main",)  # default: this namespace


def test_warehouse_defaults_and_absent(tmp_path: Path, base: dict) -> None:
    assert config.load(write(tmp_path, base)).warehouse is None
    base["warehouse"] = {"location": "file:///data/wh"}
    wh = config.load(write(tmp_path, base)).warehouse
    assert wh is not None and wh.catalog is None and wh.catalog_props() is None
    assert wh.logical_tables == () and wh.strict is False


def test_converter_config_needs_no_mysql(tmp_path: Path) -> None:
    """A converter host: destination, warehouse and S3 settings only; dump commands refuse it."""
    path = write(tmp_path, {"namespace": "main", "destination": "file:///data/dumps", "warehouse": {"location": "file:///data/wh"}})
    cfg = config.load(path)
    assert cfg.outfile_dir is None and cfg.warehouse is not None
    with pytest.raises(ConfigError) as info:
        cfg.require_outfile_dir()
    assert str(info.value).startswith(f"{path}: outfile_dir: missing") and info.value.exit_status == 2


def test_require_warehouse(tmp_path: Path, base: dict) -> None:
    path = write(tmp_path, base)
    with pytest.raises(ConfigError, match=r"warehouse: missing") as info:
        config.load(path).require_warehouse()
    assert str(info.value).startswith(f"{path}: warehouse:")


@pytest.mark.parametrize(
    "warehouse, key, words",
    [
        ({}, "warehouse.location", "missing"),
        ({"location": "ftp://x"}, "warehouse.location", "unsupported scheme"),
        ({"location": "file:///w", "strict": "yes"}, "warehouse.strict", "true or false"),
        ({"location": "file:///w", "catalog": "sqlite"}, "warehouse.catalog", "expected a mapping"),
        ({"location": "file:///w", "catalog": {}}, "warehouse.catalog", "empty"),
        ({"location": "file:///w", "catalog": {"uri": {"a": 1}}}, "warehouse.catalog.uri", "expected a string"),
        ({"location": "file:///w", "locaton": "x"}, "warehouse.locaton", "unknown key"),
        ({"location": "file:///w", "logical_tables": {"a": 1}}, "warehouse.logical_tables", "expected a list"),
        ({"location": "file:///w", "logical_tables": ["x"]}, "warehouse.logical_tables[0]", "expected a mapping"),
        ({"location": "file:///w", "logical_tables": [{"name": "a.b"}]}, "warehouse.logical_tables[0].match", "missing"),
        ({"location": "file:///w", "logical_tables": [{"match": "(", "name": "a.b"}]}, "warehouse.logical_tables[0].match", "invalid regular expression"),
        ({"location": "file:///w", "logical_tables": [{"match": "a"}]}, "warehouse.logical_tables[0].name", "missing"),
        ({"location": "file:///w", "logical_tables": [{"match": "a", "name": "nodot"}]}, "warehouse.logical_tables[0].name", "DB.TABLE"),
        ({"location": "file:///w", "logical_tables": [{"match": "a", "name": "a.b", "namespaces": []}]}, "warehouse.logical_tables[0].namespaces", "empty"),
        ({"location": "file:///w", "logical_tables": [{"match": "a", "name": "a.b", "namespaces": ["x/y"]}]}, "warehouse.logical_tables[0].namespaces", "not a namespace"),
        ({"location": "file:///w", "logical_tables": [{"match": "a", "name": "a.b", "nme": 1}]}, "warehouse.logical_tables[0].nme", "unknown key"),
        ({"location": "file:///w", "logical_tables": [{"match": "a", "name": "a.b"}, {"match": "c", "name": "a.b"}]}, "warehouse.logical_tables[1].name", "two logical tables"),
    ],
)
def test_invalid_warehouse(tmp_path: Path, base: dict, warehouse: dict, key: str, words: str) -> None:
    base["warehouse"] = warehouse
    path = write(tmp_path, base)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert words in message and "\n" not in message
    assert info.value.exit_status == 2


# --- metrics_file and replication.max_threads_running (load guard) -----------------------


def test_metrics_file_and_load_guard_defaults_and_values(tmp_path: Path, base: dict) -> None:
    defaults = config.load(write(tmp_path, base))
    assert defaults.metrics_file is None and defaults.replication.max_threads_running is None
    base.update(metrics_file="/var/lib/node_exporter/textfile/tracker.prom", replication={"max_threads_running": 40})
    cfg = config.load(write(tmp_path, base))
    assert cfg.metrics_file == Path("/var/lib/node_exporter/textfile/tracker.prom")
    assert cfg.replication.max_threads_running == 40


@pytest.mark.parametrize(
    "change, key, words",
    [
        (lambda d: d.update(metrics_file="relative/tracker.prom"), "metrics_file", "absolute path ending in .prom"),
        (lambda d: d.update(metrics_file="/var/lib/tracker.txt"), "metrics_file", "absolute path ending in .prom"),
        (lambda d: d.update(metrics_file=5), "metrics_file", "expected a string"),
        (lambda d: d.update(replication={"max_threads_running": 0}), "replication.max_threads_running", "between 1"),
        (lambda d: d.update(replication={"max_threads_running": "many"}), "replication.max_threads_running", "expected an integer"),
    ],
)
def test_metrics_file_and_load_guard_errors(tmp_path: Path, base: dict, change, key: str, words: str) -> None:
    change(base)
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, base))
    assert f": {key}: " in str(err.value) and words in str(err.value)
