"""Bad input gets one clear line and a documented status; odd names work."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml
from click.testing import CliRunner

from tests.integration.helpers import run_tracker, write_config
from tracker.cli import cli
from tracker.db import qualified, quote_ident
from tracker.store.layout import encode_segment


def error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("tracker: error:")]


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
    out = result.stdout.decode()
    assert f"failed {fresh_db}.nope: table '{fresh_db}.nope' does not exist" in out
    assert f"failed {fresh_db}.v: '{fresh_db}.v' is a view, not a base table" in out
    assert f"done {fresh_db}.t rows=0" in out
    assert b"Traceback" not in result.stderr
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


@pytest.mark.parametrize(
    "args, words",
    [
        (["dump", "a.b", "--date", "tomorrow"], "is not a date"),
        (["dump", "a.b", "--date", dt.date.today().isoformat()], "only days before today"),
        (["dump", "nodot"], "must be DB.TABLE"),
        (["dump"], "Missing argument"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_are_status_2(replica, tmp_path, dest, args, words) -> None:
    config = write_config(tmp_path, replica, f"file://{dest}")
    result = run_tracker(config, *args)
    assert result.returncode == 2
    assert words in result.stderr.decode()
    assert b"Traceback" not in result.stderr


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
    assert "dump query failed: (1086)" in result.stdout.decode()
    assert list(replica.outfile_dir.iterdir()) == []
    assert [p for p in dest.rglob("*") if p.is_file()] == []
