"""``tracker verify --deep``: every stored object of a date read back against its manifest.

Real dumps (a real MariaDB replica) to file:// and to the moto S3 server;
each test damages one object the way a disk, a sync tool or a hand edit
would (a flipped byte, a cut part, a deleted part, a manifest that promises
another row count, a deleted schema.sql), checks that verify names exactly
that object in one line with status 1, and puts the object back.  On the
Parquet side, ``tracker convert`` output is checked against the source
manifest, and a host without pyarrow skips that with one INFO line.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.integration.helpers import run_tracker, write_config
from tracker.cli import cli
from tracker.db import qualified
from tracker.store.layout import encode_segment

DATE = "2026-11-05"
ROWS_T = 40
ROWS_P = 30
PROBLEM_KINDS = ("missing ", "corrupt ", "rows ")


@pytest.fixture(scope="module")
def tables(master, replica_set) -> Iterator[str]:
    """A plain table (binary values, NULs, tabs, newlines) and one of three partitions (three parts)."""
    db = f"vd_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {db}")
    master.sql(f"CREATE TABLE {qualified(db, 't')} (id INT PRIMARY KEY, b VARBINARY(64), s VARCHAR(40), n INT NULL)")
    master.sql(f"CREATE TABLE {qualified(db, 'p')} (id INT PRIMARY KEY, v VARCHAR(20)) PARTITION BY HASH(id) PARTITIONS 3")
    conn = master.connect(database=db)
    try:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO t VALUES (%s, %s, %s, %s)",
                [(i, bytes([0, 9, 10, 92, i % 256]) * 3, f"row {i}\t\\N", None if i % 4 else i) for i in range(ROWS_T)],
            )
            cur.executemany("INSERT INTO p VALUES (%s, %s)", [(i, f"v{i}") for i in range(ROWS_P)])
        conn.commit()
    finally:
        conn.close()
    replica_set.sync()
    yield db
    master.sql(f"DROP DATABASE {db}")
    replica_set.sync()


@dataclass
class Dumped:
    """A dumped date and a way to read, write and delete its objects by key."""

    config: Path
    db: str
    url: Callable[[str], str]
    read: Callable[[str], bytes]
    write: Callable[[str, bytes], None]
    delete: Callable[[str], None]
    env: dict[str, str] | None = None

    def key(self, table: str, name: str) -> str:
        return f"main/{encode_segment(self.db)}/{table}/dt={DATE}/{name}"

    def verify(self, *extra: str):
        return CliRunner().invoke(cli, ["--config", str(self.config), "verify", "--deep", "--date", DATE, *extra], env=self.env)


def _dump(config: Path, db: str, env: dict[str, str] | None = None) -> None:
    result = run_tracker(config, "dump", f"{db}.t", f"{db}.p", "--date", DATE, env=env)
    assert result.returncode == 0, result.stderr.decode()


@pytest.fixture(scope="module")
def file_dump(replica, tables, tmp_path_factory) -> Dumped:
    root = tmp_path_factory.mktemp("verify_deep")
    dest = root / "dest"
    config = write_config(root, replica, f"file://{dest}", tables={"include": [rf"{tables}\..*"]})
    _dump(config, tables)
    return Dumped(
        config,
        tables,
        url=lambda key: f"file://{dest / key}",
        read=lambda key: (dest / key).read_bytes(),
        write=lambda key, data: (dest / key).write_bytes(data),
        delete=lambda key: (dest / key).unlink(),
    )


@pytest.fixture(scope="module")
def s3_dump(replica, tables, moto_server, tmp_path_factory) -> Iterator[Dumped]:
    root = tmp_path_factory.mktemp("verify_deep_s3")
    bucket = f"vd-{uuid.uuid4().hex[:12]}"
    moto_server.create_bucket(bucket)
    env = moto_server.subprocess_env()
    config = write_config(
        root, replica, f"s3://{bucket}/snap", s3={"endpoint_url": moto_server.endpoint_url}, tables={"include": [rf"{tables}\..*"]}
    )
    _dump(config, tables, env)
    client = moto_server.client()
    yield Dumped(
        config,
        tables,
        url=lambda key: f"s3://{bucket}/snap/{key}",
        read=lambda key: client.get_object(Bucket=bucket, Key=f"snap/{key}")["Body"].read(),
        write=lambda key, data: client.put_object(Bucket=bucket, Key=f"snap/{key}", Body=data),
        delete=lambda key: client.delete_object(Bucket=bucket, Key=f"snap/{key}"),
        env=env,
    )
    moto_server.delete_bucket(bucket)


@pytest.fixture(params=["file", "s3"])
def dumped(request) -> Dumped:
    return request.getfixturevalue(f"{request.param}_dump")


def problem_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(PROBLEM_KINDS)]


def assert_one_problem(dumped: Dumped, expected: str) -> None:
    result = dumped.verify()
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = problem_lines(result)
    assert len(lines) == 1 and lines[0].startswith(expected), (expected, result.stdout)
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def damaged(dumped: Dumped, key: str, change: Callable[[bytes], bytes | None]) -> Iterator[bytes]:
    """``key`` replaced by ``change(original)`` (None: deleted) inside the block; restored after."""
    original = dumped.read(key)
    changed = change(original)
    if changed is None:
        dumped.delete(key)
    else:
        dumped.write(key, changed)
    try:
        yield original
    finally:
        dumped.write(key, original)


def flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x5A]) + data[middle + 1 :]


def manifest_of(dumped: Dumped, table: str) -> dict:
    return json.loads(dumped.read(dumped.key(table, "manifest.json")))


# --- the data set as dumped --------------------------------------------------------------


def test_a_clean_date_passes(dumped: Dumped) -> None:
    result = dumped.verify()
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert problem_lines(result) == []
    assert "2 of 2 tables complete" in result.stdout and "0 bad objects" in result.stdout
    parts = manifest_of(dumped, "p")["units"]
    assert len(parts) == 3 and sum(u["rows"] for u in parts) == ROWS_P  # three parts really were read


# --- one damaged object, one line ----------------------------------------------------------


def test_a_flipped_byte_is_a_crc_mismatch(dumped: Dumped) -> None:
    key = dumped.key("p", "part-00001.tsv.lz4")
    with damaged(dumped, key, flip_middle):
        assert_one_problem(dumped, f"corrupt {dumped.url(key)}: crc32c differs from the manifest")


def test_a_truncated_part_is_a_size_mismatch(dumped: Dumped) -> None:
    key = dumped.key("t", "part-00000.tsv.lz4")
    with damaged(dumped, key, lambda data: data[: len(data) // 2]):
        assert_one_problem(dumped, f"corrupt {dumped.url(key)}: size differs from the manifest")


def test_a_missing_part_is_named(dumped: Dumped) -> None:
    key = dumped.key("p", "part-00002.tsv.lz4")
    with damaged(dumped, key, lambda data: None):
        assert_one_problem(dumped, f"missing {dumped.url(key)}")


def test_a_manifest_promising_other_rows_is_found_by_counting(dumped: Dumped) -> None:
    """The part is intact (size, CRC) but the manifest says it holds one row more: only decoding finds it."""
    key = dumped.key("p", "manifest.json")
    part_url = dumped.url(dumped.key("p", "part-00000.tsv.lz4"))

    def one_more_row(data: bytes) -> bytes:
        document = json.loads(data)
        document["units"][0]["rows"] += 1
        document["rows"] += 1  # a consistent manifest: only the part itself contradicts it
        return json.dumps(document).encode()

    with damaged(dumped, key, one_more_row) as original:
        held = json.loads(original)["units"][0]["rows"]
        assert_one_problem(dumped, f"rows {part_url}: manifest {held + 1}, part {held}")


def test_a_missing_schema_is_named(dumped: Dumped) -> None:
    key = dumped.key("t", "schema.sql")
    with damaged(dumped, key, lambda data: None):
        assert_one_problem(dumped, f"missing {dumped.url(key)}")


def test_without_deep_verify_keeps_its_old_answer(dumped: Dumped) -> None:
    key = dumped.key("p", "part-00001.tsv.lz4")
    with damaged(dumped, key, flip_middle):
        result = CliRunner().invoke(cli, ["--config", str(dumped.config), "verify", "--date", DATE], env=dumped.env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert problem_lines(result) == [] and "2 of 2 tables complete" in result.stdout


def test_an_incomplete_table_is_still_reported_and_not_read(file_dump: Dumped) -> None:
    success = file_dump.key("t", "_SUCCESS")
    part = file_dump.key("t", "part-00000.tsv.lz4")
    with damaged(file_dump, success, lambda data: None), damaged(file_dump, part, flip_middle):
        result = file_dump.verify()
    assert result.exit_code == 1
    assert f"incomplete {file_dump.db}.t dt={DATE}" in result.stdout.splitlines()
    assert problem_lines(result) == []  # an incomplete dataset's objects are not judged


# --- Parquet (tracker convert output) -----------------------------------------------------


@pytest.fixture(scope="module")
def converted(replica, tables, tmp_path_factory) -> tuple[Dumped, Path]:
    root = tmp_path_factory.mktemp("verify_deep_parquet")
    dest, warehouse = root / "dest", root / "warehouse"
    config = write_config(
        root, replica, f"file://{dest}", tables={"include": [rf"{tables}\..*"]}, warehouse={"location": f"file://{warehouse}"}
    )
    _dump(config, tables)
    result = run_tracker(config, "convert", "--date", DATE)
    assert result.returncode == 0, result.stderr.decode()
    dumped = Dumped(
        config,
        tables,
        url=lambda key: f"file://{warehouse / key}",
        read=lambda key: (warehouse / key).read_bytes(),
        write=lambda key, data: (warehouse / key).write_bytes(data),
        delete=lambda key: (warehouse / key).unlink(),
    )
    return dumped, warehouse


def test_converted_parquet_passes_and_a_short_file_is_found(converted) -> None:
    dumped, _ = converted
    result = dumped.verify()
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert problem_lines(result) == []

    key = dumped.key("p", "part-00001.parquet")
    held = pq.read_metadata(pa.BufferReader(dumped.read(key))).num_rows
    assert held > 1

    def one_row(data: bytes) -> bytes:
        table = pq.read_table(pa.BufferReader(data)).slice(0, 1)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()

    with damaged(dumped, key, one_row):
        assert_one_problem(dumped, f"rows {dumped.url(key)}: manifest {held}, parquet 1")
    with damaged(dumped, key, lambda data: data[:100]):
        assert_one_problem(dumped, f"corrupt {dumped.url(key)}: not a readable Parquet file")
    with damaged(dumped, key, lambda data: None):
        assert_one_problem(dumped, f"missing {dumped.url(key)}")


def test_without_pyarrow_the_parquet_check_is_skipped_with_one_info_line(converted, tmp_path) -> None:
    dumped, _ = converted
    blocker = tmp_path / "no_pyarrow" / "pyarrow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('pyarrow is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", ""), os.getcwd()])}
    key = dumped.key("p", "part-00001.parquet")
    with damaged(dumped, key, lambda data: None):  # would be a problem if Parquet were checked
        result = run_tracker(dumped.config, "verify", "--deep", "--date", DATE, env=env)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    skipped = [line for line in stderr.splitlines() if "event=verify_parquet_skipped" in line]
    assert len(skipped) == 1 and " INFO " in skipped[0] and "reason=pyarrow_missing" in skipped[0], stderr
