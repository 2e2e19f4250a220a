"""Key-range chunking on a real server: no row lost or duplicated, whatever the key.

Each table is made on the master, replicated, dumped from a replica with
``chunk_mb: 1`` (so a few MB make several units), restored on the master
from the parts alone, and compared with ``CHECKSUM TABLE``.  Restoring
into a table with the same primary key also fails on any duplicated row.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from pathlib import Path

import lz4.frame
import pytest

from tests.integration.helpers import checksum, restore, run_tracker, write_config
from tracker.db import qualified

DATE = "2026-11-01"
PAD = 1000  # bytes of filler per row, so a few thousand rows pass chunk_mb: 1


def fill(master, db: str, table: str, ddl: str, rows: list[tuple], replica_set) -> None:
    master.sql(f"CREATE TABLE {qualified(db, table)} {ddl}")
    conn = master.connect(database=db)
    try:
        with conn.cursor() as cur:
            marks = ", ".join(["%s"] * len(rows[0]))
            # IGNORE drops values equal to an earlier one under the key's collation.
            cur.executemany(f"INSERT IGNORE INTO {qualified(db, table)} VALUES ({marks})", rows)
            cur.execute(f"ANALYZE TABLE {qualified(db, table)}")  # fresh size estimates for the planner
            cur.fetchall()
    finally:
        conn.close()
    replica_set.sync()


def dump_restore_compare(master, replica, db: str, table: str, tmp_path: Path, **config) -> dict:
    """Dump with chunking, restore the parts on the master, compare checksums; returns the manifest.

    The manifest gets a ``_log`` entry: the dump's stderr, for what the planner said.
    """
    dest = tmp_path / "dest"
    settings = {"chunk_mb": 1, **config}
    path = write_config(tmp_path, replica, f"file://{dest}", **settings)
    result = run_tracker(path, "dump", f"{db}.{table}", "--date", DATE)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    dataset = dest / "main" / db / table / f"dt={DATE}"
    manifest = json.loads((dataset / "manifest.json").read_text())
    parts = [lz4.frame.decompress((dest / u["key"]).read_bytes()) for u in manifest["units"]]
    restored = f"{db}_restored"
    master.sql(f"CREATE DATABASE IF NOT EXISTS {restored}")
    restore(master, restored, (dataset / "schema.sql").read_text(), manifest, parts)
    count = replica.sql(f"SELECT COUNT(*) FROM {qualified(db, table)}")[0][0]
    assert manifest["rows"] == count
    assert checksum(master, restored, table) == checksum(replica, db, table)
    master.sql(f"DROP DATABASE {restored}")
    return {**manifest, "_log": result.stderr.decode()}


def assert_chunked(manifest: dict, at_least: int) -> None:
    units = manifest["units"]
    assert len(units) >= at_least, [u["rows"] for u in units]
    assert all("range" in u for u in units)
    assert units[0]["range"]["lower"] is None and units[-1]["range"]["upper"] is None
    for before, after in zip(units, units[1:]):
        assert before["range"]["upper"] == after["range"]["lower"]  # consecutive, nothing between


def filler(rng: random.Random) -> bytes:
    # NULs, tabs, newlines and backslashes exercise the escaping inside ranges too
    return rng.randbytes(PAD - 4) + b"\x00\t\n\\"


def test_integer_key_with_gaps_and_negatives(master, replica, replica_set, fresh_db, tmp_path) -> None:
    rng = random.Random(1)
    ids = list(range(-(10**12), -(10**12) + 1500)) + list(range(0, 2500)) + list(range(9 * 10**18, 9 * 10**18 + 1500))
    ids += [rng.randrange(-(2**63), 2**63) for _ in range(500)] + [-(2**63), 2**63 - 1]
    fill(master, fresh_db, "gaps", "(id BIGINT PRIMARY KEY, pad VARBINARY(1000))", [(i, filler(rng)) for i in ids], replica_set)
    manifest = dump_restore_compare(master, replica, fresh_db, "gaps", tmp_path)
    assert_chunked(manifest, 4)
    rows = [u["rows"] for u in manifest["units"]]
    # Even cuts of the span would leave most ranges empty and one with a
    # cluster; cuts placed on the optimizer's estimates balance them.
    assert max(rows) <= 3 * len(ids) / len(rows) and min(rows) > 0, rows
    assert "method=walk" in manifest["_log"]
    assert manifest["units"][1]["range"]["columns"] == ["id"]
    assert "`id` >= " in manifest["units"][1]["range"]["where"]


def test_random_unsigned_keys(master, replica, replica_set, fresh_db, tmp_path) -> None:
    rng = random.Random(2)
    ids = {0, 2**64 - 1, 2**63, 2**63 - 1} | {rng.randrange(2**64) for _ in range(6000)}
    fill(
        master, fresh_db, "rnd", "(id BIGINT UNSIGNED PRIMARY KEY, pad VARBINARY(1000))",
        [(i, filler(rng)) for i in ids], replica_set,
    )
    manifest = dump_restore_compare(master, replica, fresh_db, "rnd", tmp_path)
    assert_chunked(manifest, 4)
    assert "method=even" in manifest["_log"]  # uniform keys need no walk


def test_composite_key_with_few_leading_values_is_walked(master, replica, replica_set, fresh_db, tmp_path) -> None:
    rng = random.Random(3)
    rows = [(rng.randrange(3), f"user-{rng.randrange(10**9)}-ÄäÅ", rng.randrange(100), filler(rng)) for _ in range(6000)]
    fill(
        master, fresh_db, "comp",
        "(tenant TINYINT NOT NULL, name VARCHAR(100) COLLATE utf8mb4_unicode_ci NOT NULL, n INT NOT NULL,"
        " pad VARBINARY(1000), PRIMARY KEY (tenant, name, n))",
        rows, replica_set,
    )
    manifest = dump_restore_compare(master, replica, fresh_db, "comp", tmp_path)
    assert_chunked(manifest, 4)
    assert manifest["units"][1]["range"]["columns"] == ["tenant", "name", "n"]  # 3 tenants < wanted ranges: walked


EDGE_STRINGS = [
    "", " ", "a", "A", "a ", "á", "Á", "à", "ä", "ae", "æ", "ß", "ss", "ſ", "İ", "i", "ı", "z", "Z",
    "😀", "😁", "𝄞", "\u0301", "e\u0301", "é", "\t", "\\", "'", "%", "_", "x\\'y", "ÿ", "\u00a0",
]


def random_text(rng: random.Random, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12)))


@pytest.mark.parametrize(
    "column_type, alphabet",
    [
        ("VARCHAR(60) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci", "aAáÁäßs 😀é\u0301zZ'\\"),
        ("VARCHAR(60) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", "aAáÁäßs 😀é\u0301zZ'\\"),
        ("VARCHAR(60) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", "aAáÁäßs 😀é\u0301zZ'\\"),
        ("CHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_ci", "aAåÅäÄöÖyüÜ v'\\"),
        ("VARBINARY(60)", None),
    ],
)
def test_string_keys_in_their_collation(master, replica, replica_set, fresh_db, tmp_path, column_type, alphabet) -> None:
    rng = random.Random(column_type)
    if alphabet is None:
        keys: list[object] = [rng.randbytes(rng.randrange(0, 16)) for _ in range(5000)] + [b"", b"\x00", b"\x00\x00", b"\xff"]
    else:
        edges = [s for s in EDGE_STRINGS if "latin1" not in column_type or s.isascii() or s in "åÅäÄöÖüÜ"]
        keys = edges + [random_text(rng, alphabet) for _ in range(5000)]
    fill(master, fresh_db, "s", f"(k {column_type} NOT NULL PRIMARY KEY, pad VARBINARY(1000))", [(k, filler(rng)) for k in keys], replica_set)
    manifest = dump_restore_compare(master, replica, fresh_db, "s", tmp_path)
    assert_chunked(manifest, 3)


@pytest.mark.parametrize(
    "column_type, make_key",
    [
        ("CHAR(36) CHARACTER SET ascii", lambda rng, i: str(uuid.UUID(int=rng.getrandbits(128), version=4))),
        ("VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", lambda rng, i: f"user-{i * 7919 % 1000003:07d}"),
        ("BINARY(16)", lambda rng, i: rng.randbytes(16)),
        # byte order (B < a) is not the collation's (a < B): cuts must be in the collation's order
        (
            "VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
            lambda rng, i: "".join(rng.choice("aAbBcCdDxXyYzZ09_-") for _ in range(12)),
        ),
    ],
)
def test_string_keys_are_sampled_not_walked(master, replica, replica_set, fresh_db, tmp_path, column_type, make_key) -> None:
    rng = random.Random(column_type)
    keys = {make_key(rng, i) for i in range(6000)}
    fill(master, fresh_db, "s", f"(k {column_type} NOT NULL PRIMARY KEY, pad VARBINARY(1000))", [(k, filler(rng)) for k in keys], replica_set)
    manifest = dump_restore_compare(master, replica, fresh_db, "s", tmp_path)
    assert_chunked(manifest, 3)
    assert "method=sample" in manifest["_log"]
    rows = [u["rows"] for u in manifest["units"]]
    assert max(rows) <= 3 * len(keys) / len(rows), rows


@pytest.mark.parametrize("column_type", ["DATETIME(6)", "TIMESTAMP(6)", "DATE"])
def test_temporal_keys_are_cut_evenly(master, replica, replica_set, fresh_db, tmp_path, column_type) -> None:
    rng = random.Random(5)
    if column_type == "DATE":
        days = rng.sample(range(730_000, 740_000), 5000)
        stamps = {dt.date.fromordinal(d).isoformat() for d in days}
    else:
        stamps = {
            f"20{rng.randrange(10, 38)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}"
            f" 0{rng.randrange(10)}:00:00.{rng.randrange(10**6):06d}"
            for _ in range(5000)
        }
    fill(master, fresh_db, "d", f"(t {column_type} PRIMARY KEY, pad VARBINARY(1000))", [(s, filler(rng)) for s in stamps], replica_set)
    manifest = dump_restore_compare(master, replica, fresh_db, "d", tmp_path)
    assert_chunked(manifest, 3)
    assert "method=even" in manifest["_log"]


def test_large_partition_is_chunked_small_one_is_not(master, replica, replica_set, fresh_db, tmp_path) -> None:
    rng = random.Random(6)
    rows = [(i, filler(rng)) for i in range(1, 5001)] + [(i, filler(rng)) for i in range(100_000, 100_050)]
    fill(
        master, fresh_db, "p",
        "(id INT PRIMARY KEY, pad VARBINARY(1000)) PARTITION BY RANGE (id)"
        " (PARTITION big VALUES LESS THAN (100000), PARTITION small VALUES LESS THAN MAXVALUE)",
        rows, replica_set,
    )
    manifest = dump_restore_compare(master, replica, fresh_db, "p", tmp_path)
    by_partition = [(u["partition"], "range" in u) for u in manifest["units"]]
    assert by_partition[-1] == ("small", False)
    assert [p for p, chunked in by_partition[:-1]] == ["big"] * (len(by_partition) - 1)
    assert len(by_partition) >= 4 and all(chunked for _, chunked in by_partition[:-1])
    assert manifest["units"][-1]["rows"] == 50


def test_table_without_usable_key_is_one_unit(master, replica, replica_set, fresh_db, tmp_path) -> None:
    rng = random.Random(7)
    fill(master, fresh_db, "nokey", "(a INT, pad VARBINARY(1000))", [(i % 7, filler(rng)) for i in range(5000)], replica_set)
    manifest = dump_restore_compare(master, replica, fresh_db, "nokey", tmp_path)
    assert len(manifest["units"]) == 1 and "range" not in manifest["units"][0]


def test_chunk_mb_zero_turns_chunking_off(master, replica, replica_set, fresh_db, tmp_path) -> None:
    rng = random.Random(8)
    fill(master, fresh_db, "off", "(id INT PRIMARY KEY, pad VARBINARY(1000))", [(i, filler(rng)) for i in range(5000)], replica_set)
    manifest = dump_restore_compare(master, replica, fresh_db, "off", tmp_path, chunk_mb=0)
    assert len(manifest["units"]) == 1


def test_string_first_column_with_many_rows_per_value(master, replica, replica_set, fresh_db, tmp_path) -> None:
    """Ranges on a first column that repeats: every value's rows stay in one range, none lost."""
    rng = random.Random(9)
    names = [f"{rng.choice('aAbBzZ')}{i:03d}" for i in range(60)]
    rows = [(name, n, filler(rng)) for name in names for n in range(100)]
    fill(
        master, fresh_db, "rep",
        "(name VARCHAR(20) COLLATE utf8mb4_general_ci NOT NULL, n INT NOT NULL, pad VARBINARY(1000), PRIMARY KEY (name, n))",
        rows, replica_set,
    )
    manifest = dump_restore_compare(master, replica, fresh_db, "rep", tmp_path)
    assert_chunked(manifest, 3)
    assert all(u["rows"] % 100 == 0 for u in manifest["units"]), [u["rows"] for u in manifest["units"]]
