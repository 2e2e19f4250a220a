"""System-versioned tables keep their history; sequences are skipped; ``%`` in names loads.

A versioned table is changed on the master (updates, deletes), dumped from
the replica, and restored with ``system_versioning_insert_history`` so
``FOR SYSTEM_TIME ALL`` gives the same row versions, value by value.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path

import lz4.frame
import pytest

from tests.integration.helpers import checksum, run_tracker, write_config
from tracker.db import qualified, quote_ident
from tracker.dump.columns import load_data_sql

DATE = "2026-11-04"

VARIANTS = {
    # implicit, invisible row_start/row_end; big enough to be chunked at chunk_mb: 1
    "implicit": ("(id INT PRIMARY KEY, v INT, pad VARBINARY(1000)) WITH SYSTEM VERSIONING", ["row_start", "row_end"]),
    # declared period columns, one of them invisible
    "declared": (
        "(id INT PRIMARY KEY, v INT, pad VARBINARY(1000),"
        " s TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,"
        " e TIMESTAMP(6) GENERATED ALWAYS AS ROW END,"
        " PERIOD FOR SYSTEM_TIME(s, e)) WITH SYSTEM VERSIONING",
        ["s", "e"],
    ),
    # history in its own partition (which refuses FOR SYSTEM_TIME)
    "by_system_time": (
        "(id INT PRIMARY KEY, v INT, pad VARBINARY(1000)) WITH SYSTEM VERSIONING"
        " PARTITION BY SYSTEM_TIME (PARTITION p_hist HISTORY, PARTITION p_cur CURRENT)",
        ["row_start", "row_end"],
    ),
    # ordinary partitions: each holds current and historical rows
    "by_hash": (
        "(id INT PRIMARY KEY, v INT, pad VARBINARY(1000)) WITH SYSTEM VERSIONING PARTITION BY HASH (id) PARTITIONS 3",
        ["row_start", "row_end"],
    ),
}
ROWS = 3000


def all_versions(server, db: str, table: str, start: str, end: str) -> list[tuple]:
    return server.sql(
        f"SELECT id, v, HEX(pad), {quote_ident(start)}, {quote_ident(end)}"
        f" FROM {qualified(db, table)} FOR SYSTEM_TIME ALL ORDER BY id, {quote_ident(start)}"
    )


def restore_with_history(server, db: str, schema: str, manifest: dict, parts: list[bytes]) -> None:
    conn = server.connect(database=db, local_infile=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00', sql_mode = '', system_versioning_insert_history = ON")
            cur.execute(schema)
            for data in parts:
                with tempfile.NamedTemporaryFile(suffix=".tsv") as f:
                    f.write(data)
                    f.flush()
                    cur.execute(load_data_sql(manifest["columns"], quote_ident(manifest["table"])), (f.name,))
                    cur.execute("SHOW WARNINGS")
                    assert not cur.fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_versioned_table_dumps_and_restores_every_version(master, replica, replica_set, fresh_db, tmp_path, variant) -> None:
    ddl, (start, end) = VARIANTS[variant]
    table = f"hist_{variant}"
    name = qualified(fresh_db, table)
    conn = master.connect(database=fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} {ddl}")
            cur.execute(f"INSERT INTO {name} (id, v, pad) SELECT seq, seq, RANDOM_BYTES(996) FROM seq_1_to_{ROWS}")
            cur.execute(f"UPDATE {name} SET pad = CONCAT(pad, x'005c0a09') WHERE id % 2 = 0")
            cur.execute(f"UPDATE {name} SET v = v + 1000 WHERE id % 3 = 0")
            cur.execute(f"DELETE FROM {name} WHERE id % 5 = 0")
            cur.execute(f"ANALYZE TABLE {name}")
            cur.fetchall()
    finally:
        conn.close()
    replica_set.sync()

    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica, f"file://{dest}", chunk_mb=1)
    result = run_tracker(config, "dump", f"{fresh_db}.{table}", "--date", DATE)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    dataset = dest / "main" / fresh_db / table / f"dt={DATE}"
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["system_versioning"] == {"rows": "all_versions", "row_start": start, "row_end": end}
    periods = {c["name"]: c.get("period") for c in manifest["columns"]}
    assert periods[start] == "start" and periods[end] == "end"
    assert not any(c["generated"] for c in manifest["columns"])
    source = all_versions(replica, fresh_db, table, start, end)
    assert manifest["rows"] == len(source) > ROWS  # history rows included
    if variant == "implicit":
        assert len(manifest["units"]) > 1 and manifest["units"][0]["range"]["lower"] is None

    parts = [lz4.frame.decompress((dest / u["key"]).read_bytes()) for u in manifest["units"]]
    restored = f"r_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {restored}")
    try:
        restore_with_history(master, restored, (dataset / "schema.sql").read_text(), manifest, parts)
        assert all_versions(master, restored, table, start, end) == source
        assert checksum(master, restored, table) == checksum(replica, fresh_db, table)
        # the master's own history has the same versions (its period values may differ by microseconds)
        assert [r[:3] for r in all_versions(master, fresh_db, table, start, end)] == [r[:3] for r in source]
    finally:
        master.sql(f"DROP DATABASE {restored}")


def test_history_restore_needs_insert_history(master, replica, replica_set, fresh_db, tmp_path) -> None:
    """Without system_versioning_insert_history the server refuses the period columns: no silent loss."""
    master.sql(f"CREATE TABLE {qualified(fresh_db, 'h')} (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING")
    master.sql(f"INSERT INTO {qualified(fresh_db, 'h')} VALUES (1, 1)")
    master.sql(f"UPDATE {qualified(fresh_db, 'h')} SET v = 2")
    replica_set.sync()
    dest = tmp_path / "dest"
    result = run_tracker(write_config(tmp_path, replica, f"file://{dest}"), "dump", f"{fresh_db}.h", "--date", DATE)
    assert result.returncode == 0, result.stderr.decode()
    dataset = dest / "main" / fresh_db / "h" / f"dt={DATE}"
    manifest = json.loads((dataset / "manifest.json").read_text())
    restored = f"r_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {restored}")
    conn = master.connect(database=restored, local_infile=True)
    try:
        with conn.cursor() as cur, tempfile.NamedTemporaryFile(suffix=".tsv") as f:
            cur.execute((dataset / "schema.sql").read_text())
            f.write(lz4.frame.decompress((dest / manifest["units"][0]["key"]).read_bytes()))
            f.flush()
            with pytest.raises(Exception, match="row_start"):
                cur.execute(load_data_sql(manifest["columns"], quote_ident("h")), (f.name,))
    finally:
        conn.close()
        master.sql(f"DROP DATABASE {restored}")


def test_run_skips_sequences_with_one_log_line(master, replica, replica_set, fresh_db, tmp_path) -> None:
    master.sql(f"CREATE SEQUENCE {qualified(fresh_db, 'seq_a')}")
    master.sql(f"CREATE TABLE {qualified(fresh_db, 'plain')} (id INT PRIMARY KEY)")
    master.sql(f"INSERT INTO {qualified(fresh_db, 'plain')} VALUES (1)")
    replica_set.sync()
    dest = tmp_path / "dest"
    lock_dir = tmp_path / "runlock"
    lock_dir.mkdir()
    config = write_config(
        tmp_path,
        replica,
        f"file://{dest}",
        namespace=fresh_db,
        tables={"include": [re.escape(fresh_db) + r"\..*"]},
        skip_file=str(tmp_path / "skip"),
        run_lock_dir=str(lock_dir),
    )
    result = run_tracker(config, "run", "--date", DATE, timeout=120)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr[-2000:]
    assert stderr.count(f"event=skip_sequence table={fresh_db}.seq_a") == 1
    datasets = {p.parent.name for p in Path(dest, fresh_db, fresh_db).glob("*/dt=*")}
    assert datasets == {"plain"}


def test_load_data_sql_with_percent_and_quotes_in_names(master, fresh_db) -> None:
    table = "t%s`'\"%d%"
    column = "c%s`'\"%(x)s%%"
    master.sql(f"CREATE TABLE {qualified(fresh_db, table)} (id INT PRIMARY KEY, {quote_ident(column)} VARCHAR(20), b BIT(5))")
    master.sql(f"INSERT INTO {qualified(fresh_db, table)} VALUES (1, 'a%s', 3), (2, NULL, 0)")
    sql = load_data_sql(
        [
            {"name": "id", "encoding": "text", "generated": False},
            {"name": column, "encoding": "text", "generated": False},
            {"name": "b", "encoding": "bit-as-unsigned", "generated": False},
        ],
        qualified(fresh_db, table + "_copy"),
    )
    master.sql(f"CREATE TABLE {qualified(fresh_db, table + '_copy')} LIKE {qualified(fresh_db, table)}")
    conn = master.connect(local_infile=True)
    try:
        with conn.cursor() as cur, tempfile.NamedTemporaryFile(suffix=".tsv") as f:
            f.write(b"1\ta%s\t3\n2\t\\N\t0\n")
            f.flush()
            cur.execute(sql, (f.name,))
    finally:
        conn.close()
    assert checksum(master, fresh_db, table + "_copy") == checksum(master, fresh_db, table)
    assert master.sql(f"SELECT {quote_ident(column)}, b + 0 FROM {qualified(fresh_db, table + '_copy')} ORDER BY id") == [
        ("a%s", 3),
        (None, 0),
    ]
