"""Bad input gets one clear line and a documented status; odd names work."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from tests.integration.helpers import run_tracker, tracker_argv, write_config
from tracker.cli import cli
from tracker.db import qualified, quote_ident
from tracker.store.layout import encode_segment


def error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("tracker: error:")]


def last_error(result) -> str:
    """The one error line, which must be stderr's last; no traceback, no ERROR log line."""
    stderr = result.stderr.decode()
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(error_lines(result.stderr)) == 1 and lines[-1].startswith("tracker: error: "), stderr
    assert not [line for line in lines if " ERROR " in line], stderr
    return lines[-1]


@pytest.fixture
def dest(tmp_path):
    path = tmp_path / "dest"
    path.mkdir()
    return path


def test_every_command_is_documented() -> None:
    for name, command in cli.commands.items():
        assert command.help and "Examples" in command.help, name
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0


def test_missing_table_and_view(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    master.sql(f"CREATE TABLE {qualified(fresh_db, 't')} (a INT)")
    master.sql(f"CREATE VIEW {qualified(fresh_db, 'v')} AS SELECT a FROM {qualified(fresh_db, 't')}")
    replica_set.sync()
    config = write_config(tmp_path, replica, f"file://{dest}")
    result = run_tracker(config, "dump", f"{fresh_db}.nope", f"{fresh_db}.v", f"{fresh_db}.t", "--date", "2026-11-01")
    assert result.returncode == 1
    # the table that worked is reported on stdout; the failures in the one error line
    assert result.stdout.decode().splitlines() == [f"done {fresh_db}.t rows=0 units=1"]
    line = last_error(result)
    assert line.startswith(
        f"tracker: error: 2 of 3 tables failed: {fresh_db}.nope: table '{fresh_db}.nope' does not exist"
    ), line
    assert f"; {fresh_db}.v: '{fresh_db}.v' is a view, not a base table" in line, line
    names = {p.name for p in (dest / "main" / fresh_db).iterdir()}
    assert names == {"t"}  # nothing at all for the missing table and the view
    # an empty table is still a valid, decodable object
    part = dest / "main" / fresh_db / "t" / "dt=2026-11-01" / "part-00000.tsv.lz4"
    assert run_tracker(config, "cat", f"file://{part}").stdout == b""


def test_bad_config_is_one_line_status_2(replica, tmp_path, dest) -> None:
    config = write_config(tmp_path, replica, f"file://{dest}", workers="many")
    result = run_tracker(config, "dump", "a.b")
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"tracker: error: {config}: workers: expected an integer, got 'many'"


def test_outfile_dir_outside_secure_file_priv(replica, tmp_path, dest) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    config = write_config(tmp_path, replica, f"file://{dest}", outfile_dir=str(outside))
    result = run_tracker(config, "dump", "a.b", "--date", "2026-11-01")
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert f"{config}: outfile_dir: {outside} is outside the server's secure_file_priv" in line


def test_unreachable_server(replica, tmp_path, dest) -> None:
    config = write_config(tmp_path, replica, f"file://{dest}", mysql={"port": 1, "password": "hunter2-secret"})
    result = run_tracker(config, "dump", "a.b", "--date", "2026-11-01")
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    assert "cannot connect to MySQL tracker@127.0.0.1:1" in line
    assert b"hunter2-secret" not in result.stderr + result.stdout


TODAY = dt.datetime.now(dt.timezone.utc).date().isoformat()


@pytest.mark.parametrize(
    "args, line",
    [
        (["dump", "a.b", "--date", "tomorrow"], "--date 'tomorrow' is not a date in YYYY-MM-DD form"),
        # date.fromisoformat alone takes these; only YYYY-MM-DD is documented
        (["dump", "a.b", "--date", "20261130"], "--date '20261130' is not a date in YYYY-MM-DD form"),
        (["run", "--date", "2026-W48-1"], "--date '2026-W48-1' is not a date in YYYY-MM-DD form"),
        (["verify", "--date", "2026-11-1"], "--date '2026-11-1' is not a date in YYYY-MM-DD form"),
        (["dump", "a.b", "--date", "2026-02-30"], "--date '2026-02-30' is not a date in YYYY-MM-DD form"),
        (["dump", "a.b", "--date", TODAY], f"--date {TODAY}: only days before today (UTC, {TODAY}) can be dumped"),
        (["dump", "nodot"], "table name 'nodot' must be DB.TABLE"),
        # click's own usage errors: its message, then where to read more
        (["dump"], "Missing argument 'DB.TABLE...' (see 'tracker dump --help')"),
        (["frobnicate"], "No such command 'frobnicate' (see 'tracker --help')"),
        (["dump", "a.b", "--frob"], "No such option '--frob'. Did you mean '--force'? (see 'tracker dump --help')"),
        (["dump", "a.b", "--xyzzy"], "No such option '--xyzzy' (see 'tracker dump --help')"),
        (["run", "--workers", "many"], "Invalid value for '--workers': 'many' is not a valid integer range (see 'tracker run --help')"),
        (["run", "--workers", "0"], "Invalid value for '--workers': 0 is not in the range 1<=x<=64 (see 'tracker run --help')"),
        (["cat", "--format", "xml", "file:///x"], "Invalid value for '--format': 'xml' is not one of 'raw', 'jsonl' (see 'tracker cat --help')"),
        (["--config"], "Option '--config' requires an argument (see 'tracker --help')"),
    ],
)
def test_usage_errors_are_one_line_status_2(replica, tmp_path, dest, args, line) -> None:
    config = write_config(tmp_path, replica, f"file://{dest}")
    result = run_tracker(config, *args)
    assert result.returncode == 2, result.stderr.decode()
    assert result.stderr.decode().splitlines() == [f"tracker: error: {line}"]
    assert result.stdout == b""


def test_bare_command_shows_help_then_one_error_line(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "tracker"], capture_output=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("Usage: tracker ") and lines[-1] == "tracker: error: no command given"
    assert len(error_lines(result.stderr)) == 1


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["dump", "--help"], ["--version"]])
def test_help_and_version_still_work(args) -> None:
    result = subprocess.run([sys.executable, "-m", "tracker", *args], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"" and result.stdout
    assert (b"version" if args == ["--version"] else b"Usage: tracker") in result.stdout


def block_dataset(dest, namespace: str, db: str, table: str) -> None:
    """A plain file where the table's folder must go: its objects cannot be written."""
    folder = dest / namespace / encode_segment(db)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / encode_segment(table)).write_text("in the way\n")


def test_failed_units_of_a_run_are_one_error_line(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    for name in ("good", "bad"):
        master.sql(f"CREATE TABLE {qualified(fresh_db, name)} (id INT PRIMARY KEY)")
        master.sql(f"INSERT INTO {qualified(fresh_db, name)} VALUES (1)")
    replica_set.sync()
    block_dataset(dest, fresh_db, fresh_db, "bad")
    config = write_config(
        tmp_path,
        replica,
        f"file://{dest}",
        namespace=fresh_db,
        retries=0,
        tables={"include": [rf"{fresh_db}\..*"]},
        run_lock_dir=str(tmp_path),
        skip_file=str(tmp_path / "skip"),
    )
    result = run_tracker(config, "run", "--date", "2026-11-01")
    assert result.returncode == 1, result.stderr.decode()
    line = last_error(result)
    assert line.startswith(f"tracker: error: 1 of 2 units failed: {fresh_db}.bad/part-00000: "), line
    assert f"{dest}/{fresh_db}/{fresh_db}/bad/dt=2026-11-01" in line and "Not a directory" in line, line
    assert "units dumped here=1" in result.stdout.decode()
    assert (dest / fresh_db / fresh_db / "good" / "dt=2026-11-01" / "_SUCCESS").exists()


def test_complete_dataset_is_left_alone_unless_forced(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    master.sql(f"CREATE TABLE {qualified(fresh_db, 't')} (a INT PRIMARY KEY)")
    master.sql(f"INSERT INTO {qualified(fresh_db, 't')} VALUES (1), (2)")
    replica_set.sync()
    config = write_config(tmp_path, replica, f"file://{dest}")
    assert run_tracker(config, "dump", f"{fresh_db}.t", "--date", "2026-11-01").returncode == 0
    manifest_path = dest / "main" / fresh_db / "t" / "dt=2026-11-01" / "manifest.json"
    first = manifest_path.read_bytes()

    master.sql(f"INSERT INTO {qualified(fresh_db, 't')} VALUES (3)")
    replica_set.sync()
    again = run_tracker(config, "dump", f"{fresh_db}.t", "--date", "2026-11-01")
    assert again.returncode == 0 and again.stdout.decode().startswith(f"skipped {fresh_db}.t")
    assert manifest_path.read_bytes() == first

    forced = run_tracker(config, "dump", f"{fresh_db}.t", "--date", "2026-11-01", "--force")
    assert forced.returncode == 0, forced.stderr.decode()
    assert json.loads(manifest_path.read_bytes())["rows"] == 3


HOSTILE = ["we`ird", "sp ace", "quo'te\"s", "da-sh", "ünïcødé✓", "semi;colon", "per%cent", "dot.ted", "*/ comment"]


def test_hostile_names_round_trip(master, replica, replica_set, tmp_path, dest) -> None:
    db = "hostile db`; DROP"
    master.sql(f"DROP DATABASE IF EXISTS {quote_ident(db)}")
    master.sql(f"CREATE DATABASE {quote_ident(db)}")
    try:
        for i, name in enumerate(HOSTILE):
            table = qualified(db, name)
            master.sql(f"CREATE TABLE {table} ({quote_ident(name)} INT, v VARBINARY(10))")
            master.sql(f"INSERT INTO {table.replace('%', '%%')} VALUES (%s, %s)", (i, b"\x00\\\t"))
        replica_set.sync()
        config = write_config(tmp_path, replica, f"file://{dest}")
        quoted = ["`" + db.replace("`", "``") + "`.`" + n.replace("`", "``") + "`" for n in HOSTILE]
        result = run_tracker(config, "dump", *quoted, "--date", "2026-11-01")
        assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
        for i, name in enumerate(HOSTILE):
            directory = dest / "main" / encode_segment(db) / encode_segment(name) / "dt=2026-11-01"
            manifest = json.loads((directory / "manifest.json").read_text())
            assert (manifest["db"], manifest["table"], manifest["rows"]) == (db, name, 1)
            out = run_tracker(config, "cat", f"file://{directory / 'part-00000.tsv.lz4'}").stdout
            assert out == f"{i}\t".encode() + b"\x00\\\\\\\t\n"
    finally:
        master.sql(f"DROP DATABASE {quote_ident(db)}")
        replica_set.sync()


# Names a path resolver would rewrite ("." and ".."), or that look empty
# (MariaDB refuses "" and " ", but takes U+00A0 and U+200B).
DOT_TABLES = [(".", "."), (".", ".."), ("..", "."), ("..", ".."), ("..", "\u00a0"), ("\u200b", "...")]
PART_NAMES = ("part-00000.tsv.lz4", "schema.sql", "manifest.json", "_SUCCESS")


@pytest.fixture
def dot_tables(master, replica_set):
    """The tables of DOT_TABLES, each with rows naming it; yields {(db, table): rows}."""
    dbs = sorted({db for db, _t in DOT_TABLES})
    expected = {}
    try:
        for db in dbs:
            master.sql(f"DROP DATABASE IF EXISTS {quote_ident(db)}")
            master.sql(f"CREATE DATABASE {quote_ident(db)}")
        for i, (db, table) in enumerate(DOT_TABLES):
            master.sql(f"CREATE TABLE {qualified(db, table)} (id INT PRIMARY KEY, v VARCHAR(40))")
            rows = [(i * 10 + k, f"{db}|{table}|{k}\t\\") for k in range(3)]
            for row in rows:
                master.sql(f"INSERT INTO {qualified(db, table)} VALUES (%s, %s)", row)
            expected[(db, table)] = rows
        replica_set.sync()
        yield expected
    finally:
        for db in dbs:
            master.sql(f"DROP DATABASE IF EXISTS {quote_ident(db)}")
        replica_set.sync()


def dot_args() -> list[str]:
    return ["`" + db.replace("`", "``") + "`.`" + t.replace("`", "``") + "`" for db, t in DOT_TABLES]


def expected_keys(root: str) -> set[str]:
    return {
        f"{root}main/{encode_segment(db)}/{encode_segment(t)}/dt=2026-11-01/{name}" for db, t in DOT_TABLES for name in PART_NAMES
    }


def assert_values(replica, config, urls: dict, expected: dict) -> None:
    """Each part, read back by ``tracker cat``, holds exactly the server's rows."""
    for (db, table), url in urls.items():
        out = run_tracker(config, "cat", "--format", "jsonl", url)
        assert out.returncode == 0, out.stderr.decode()
        got = [json.loads(line) for line in out.stdout.decode().splitlines()]
        server = replica.sql(f"SELECT id, v FROM {qualified(db, table)} ORDER BY id")
        assert [(int(r["id"]), r["v"]) for r in got] == [tuple(r) for r in server] == expected[(db, table)]


def test_dot_names_stay_in_their_own_prefix_on_file(replica, tmp_path, dest, dot_tables) -> None:
    config = write_config(tmp_path, replica, f"file://{dest}")
    result = run_tracker(config, "dump", *dot_args(), "--date", "2026-11-01")
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    written = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert written == expected_keys("")  # nothing landed in a parent or a shared folder
    for db, table in DOT_TABLES:
        folder = dest / "main" / encode_segment(db) / encode_segment(table)
        assert folder.resolve() == folder  # no segment that a resolver rewrites
        manifest = json.loads((folder / "dt=2026-11-01" / "manifest.json").read_text())
        assert (manifest["db"], manifest["table"], manifest["rows"]) == (db, table, 3)
    urls = {(db, t): f"file://{dest}/main/{encode_segment(db)}/{encode_segment(t)}/dt=2026-11-01/part-00000.tsv.lz4" for db, t in DOT_TABLES}
    assert_values(replica, config, urls, dot_tables)


def test_dot_names_stay_in_their_own_prefix_on_s3(replica, moto_server, s3, bucket, tmp_path, dot_tables) -> None:
    config = write_config(tmp_path, replica, f"s3://{bucket}/snap", s3={"endpoint_url": moto_server.endpoint_url})
    env = moto_server.subprocess_env()
    result = subprocess.run(tracker_argv(config, "dump", *dot_args(), "--date", "2026-11-01"), env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == expected_keys("snap/")
    for db, table in DOT_TABLES:
        key = f"snap/main/{encode_segment(db)}/{encode_segment(table)}/dt=2026-11-01/manifest.json"
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert (manifest["db"], manifest["table"], manifest["rows"]) == (db, table, 3)
    urls = {(db, t): f"s3://{bucket}/snap/main/{encode_segment(db)}/{encode_segment(t)}/dt=2026-11-01/part-00000.tsv.lz4" for db, t in DOT_TABLES}
    cat_env = {**env}
    for (db, table), url in urls.items():
        out = subprocess.run(tracker_argv(config, "cat", "--format", "jsonl", url), env=cat_env, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
        got = [json.loads(line) for line in out.stdout.decode().splitlines()]
        server = replica.sql(f"SELECT id, v FROM {qualified(db, table)} ORDER BY id")
        assert [(int(r["id"]), r["v"]) for r in got] == [tuple(r) for r in server] == dot_tables[(db, table)]


def test_partitions_are_units(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    table = qualified(fresh_db, "p")
    master.sql(f"CREATE TABLE {table} (id INT PRIMARY KEY) PARTITION BY RANGE (id) (PARTITION `p 0` VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE)")
    master.sql(f"INSERT INTO {table} VALUES (1), (2), (30)")
    replica_set.sync()
    config = write_config(tmp_path, replica, f"file://{dest}")
    result = run_tracker(config, "dump", f"{fresh_db}.p", "--date", "2026-11-01")
    assert result.returncode == 0, result.stderr.decode()
    manifest = json.loads((dest / "main" / fresh_db / "p" / "dt=2026-11-01" / "manifest.json").read_text())
    assert [(u["partition"], u["rows"]) for u in manifest["units"]] == [("p 0", 2), ("p1", 1)]


def test_config_from_environment(replica, tmp_path, dest, monkeypatch) -> None:
    config = write_config(tmp_path, replica, f"file://{dest}", workers=0)
    monkeypatch.setenv("TRACKER_CONFIG", str(config))
    result = CliRunner().invoke(cli, ["dump", "a.b", "--date", "2026-11-01"])
    assert result.exit_code == 2
    assert "workers: must be between 1 and 64" in result.output
    assert yaml.safe_load(config.read_text())["workers"] == 0


def test_fifo_refused_by_stock_server_leaves_nothing(master, replica, replica_set, fresh_db, tmp_path, dest) -> None:
    """MariaDB refuses OUTFILE into an existing FIFO (1086): a clear failure, no pipe left."""
    master.sql(f"CREATE TABLE {qualified(fresh_db, 't')} (a INT)")
    replica_set.sync()
    config = write_config(tmp_path, replica, f"file://{dest}", source="fifo")
    result = run_tracker(config, "dump", f"{fresh_db}.t", "--date", "2026-11-01", timeout=60)
    assert result.returncode == 1
    assert "dump query failed: (1086)" in last_error(result)
    assert list(replica.outfile_dir.iterdir()) == []
    assert [p for p in dest.rglob("*") if p.is_file()] == []
