"""Logical tables: sharded physical tables of two replica sets become one table with its source columns."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import yaml

from tests.integration.helpers import run_tracker, write_config
from tracker.db import qualified

DAY = "2026-11-04"


@pytest.fixture
def second_db(master, replica_set, fresh_db):
    name = f"{fresh_db}_b"
    master.sql(f"CREATE DATABASE `{name}`")
    replica_set.sync()
    yield name
    master.sql(f"DROP DATABASE IF EXISTS `{name}`")
    replica_set.sync()


def make_shard(master, db: str, table: str, first_id: int, extra: bool = False) -> None:
    columns = "id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, score DOUBLE"
    master.sql(f"CREATE TABLE {qualified(db, table)} ({columns}{', vip TINYINT' if extra else ''})")
    values = ", ".join(f"({first_id + i}, 'user {first_id + i}', {i / 8}{', 1' if extra else ''})" for i in range(25))
    master.sql(f"INSERT INTO {qualified(db, table)} VALUES {values}")


def test_four_shards_two_namespaces_become_one_table(master, replica, replica_set, fresh_db, second_db, tmp_path) -> None:
    db1, db2 = fresh_db, second_db
    make_shard(master, db1, "user_info_1", 100)
    make_shard(master, db1, "user_info_2", 200)
    make_shard(master, db2, "user_info_3", 300, extra=True)  # one shard has an added column
    make_shard(master, db2, "user_info_4", 400)
    master.sql(f"CREATE TABLE {qualified(db1, 'plain')} (id INT PRIMARY KEY)")
    master.sql(f"INSERT INTO {qualified(db1, 'plain')} VALUES (1), (2)")
    # Two shards whose `score` types differ cannot be one table.
    master.sql(f"CREATE TABLE {qualified(db1, 'clash_1')} (id INT PRIMARY KEY, score DOUBLE)")
    master.sql(f"CREATE TABLE {qualified(db2, 'clash_2')} (id INT PRIMARY KEY, score VARCHAR(10))")
    replica_set.sync()

    dumps, warehouse = tmp_path / "dumps", tmp_path / "wh"
    # Two replica sets: the same sandbox replica dumped under two namespaces.
    main = write_config(tmp_path, replica, f"file://{dumps}", namespace="main")
    main2 = write_config(tmp_path, replica, f"file://{dumps}", namespace="main2")
    for config, tables in ((main, [f"{db1}.user_info_1", f"{db1}.user_info_2", f"{db1}.plain", f"{db1}.clash_1"]),
                           (main2, [f"{db2}.user_info_3", f"{db2}.user_info_4", f"{db2}.clash_2"])):
        result = run_tracker(config, "dump", *tables, "--date", DAY)
        assert result.returncode == 0, result.stderr.decode()

    pattern = re.escape(db1) + r"(_b)?"
    convert_config = tmp_path / "convert.yaml"
    convert_config.write_text(yaml.safe_dump({
        "namespace": "main",
        "destination": f"file://{dumps}",
        "warehouse": {
            "location": f"file://{warehouse}",
            "logical_tables": [
                {"match": pattern + r"\.user_info_\d+", "name": "shop.user_info", "namespaces": ["main", "main2"]},
                {"match": pattern + r"\.clash_\d", "name": "shop.clash", "namespaces": ["main", "main2"]},
            ],
        },
    }))
    result = run_tracker(convert_config, "convert", "--date", DAY)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1, (out, err)
    assert f"done shop.user_info dt={DAY} rows=100 files=4" in out, out
    assert f"done {db1}.plain dt={DAY} rows=2 files=1" in out, out
    errors = [line for line in err.splitlines() if line.startswith("tracker: error:")]
    assert len(errors) == 1, err
    assert f"convert shop.clash dt={DAY}" in errors[0] and "'score'" in errors[0]
    assert "double" in errors[0] and "string" in errors[0]
    assert "Traceback" not in err

    folder = warehouse / "main" / "shop" / "user_info" / f"dt={DAY}"
    assert sorted(p.name for p in folder.iterdir()) == [
        "_SUCCESS", "_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet", "part-00003.parquet"
    ]
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert [(f["source"]["namespace"], f["source"]["db"], f["source"]["table"]) for f in manifest["files"]] == [
        ("main", db1, "user_info_1"), ("main", db1, "user_info_2"), ("main2", db2, "user_info_3"), ("main2", db2, "user_info_4")
    ]

    data = ds.dataset(str(warehouse / "main" / "shop" / "user_info"), format="parquet", partitioning="hive").to_table().sort_by("id")
    assert data.column_names == ["id", "name", "score", "vip", "_source_namespace", "_source_db", "_source_table", "dt"]
    assert data.schema.field("vip").type == pa.int8() and data.schema.field("vip").nullable
    expected = []
    for namespace, db, table, extra in (("main", db1, "user_info_1", False), ("main", db1, "user_info_2", False),
                                        ("main2", db2, "user_info_3", True), ("main2", db2, "user_info_4", False)):
        cols = "id, name, score" + (", vip" if extra else ", NULL")
        for row in replica.sql(f"SELECT {cols} FROM {qualified(db, table)} ORDER BY id"):
            expected.append((*row, namespace, db, table, DAY))
    got = list(zip(*(data.column(n).to_pylist() for n in data.column_names)))
    assert got == expected
    assert not (warehouse / "main2").exists()  # main2's own tables are its converter's work
