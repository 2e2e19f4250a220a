"""``tracker cat`` checks what the manifest promises: a changed or cut object fails with status 1.

A real dump (real MariaDB replica, file:// and the moto S3 server) is read
back; single bytes of the stored part are flipped (lz4 frame header, first,
middle, last, a sample across the whole object) and the object is cut.  The
lz4 frame carries no content checksum, so the decoder alone accepts most of
these; only the manifest's size and CRC-32C catch them.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from pathlib import Path
from typing import Any, Iterator

import lz4.frame
import pytest

from tests.integration.helpers import run_tracker, write_config
from tracker.config import S3Config
from tracker.db import qualified
from tracker.store import reader
from tracker.store.layout import encode_segment
from tracker.store.reader import CorruptObject, open_url, unit_entry_for, verified_chunks

DATE = "2026-11-03"
ROWS = 300


def _blob(i: int) -> bytes:
    return bytes((i * 7 + k * 13) % 256 for k in range(50 + i % 40))


@pytest.fixture(scope="module")
def table(master, replica_set) -> Iterator[tuple[str, str]]:
    """A table with binary, text and NULL values on every server of the replica set."""
    db = f"ci_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {db}")
    master.sql(
        f"CREATE TABLE {qualified(db, 't')} (id INT PRIMARY KEY, b BLOB, s VARCHAR(100) CHARACTER SET utf8mb4, n INT NULL)"
    )
    conn = master.connect(database=db)
    try:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO t VALUES (%s, %s, %s, %s)",
                [(i, _blob(i), f"row {i}\t\\N é 😀\n", None if i % 3 else i) for i in range(ROWS)],
            )
        conn.commit()
    finally:
        conn.close()
    replica_set.sync()
    yield db, "t"
    master.sql(f"DROP DATABASE {db}")
    replica_set.sync()


@pytest.fixture(scope="module")
def file_dump(replica, table, tmp_path_factory) -> tuple[Path, Path]:
    """(config, part path) of the table dumped to file://."""
    root = tmp_path_factory.mktemp("cat_integrity")
    dest = root / "dest"
    config = write_config(root, replica, f"file://{dest}")
    db, name = table
    result = run_tracker(config, "dump", f"{db}.{name}", "--date", DATE)
    assert result.returncode == 0, result.stderr.decode()
    part = dest / "main" / encode_segment(db) / name / f"dt={DATE}" / "part-00000.tsv.lz4"
    return config, part


def _server_rows(server, db: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in server.sql(f"SELECT id, b, s, n FROM {qualified(db, 't')} ORDER BY id")]


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return base64.b64decode(value["base64"])
    return value.encode()


def _records(stdout: bytes) -> list[tuple[Any, ...]]:
    rows = [json.loads(line) for line in stdout.splitlines()]
    out = [(int(r["id"]), _as_bytes(r["b"]), r["s"], None if r["n"] is None else int(r["n"])) for r in rows]
    return sorted(out)


def _flipped(data: bytes, position: int) -> bytes:
    return data[:position] + bytes((data[position] ^ 0x01,)) + data[position + 1 :]


def _fails_with_one_line(result, url: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr.decode())
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"tracker: error: {url}: "), lines[0]
    return lines[0]


def test_unchanged_part_reads_back_the_servers_values(file_dump, replica, table) -> None:
    config, part = file_dump
    raw = run_tracker(config, "cat", f"file://{part}")
    assert raw.returncode == 0, raw.stderr.decode()
    assert raw.stdout == lz4.frame.decompress(part.read_bytes())
    lines = run_tracker(config, "cat", "--format", "jsonl", f"file://{part}")
    assert lines.returncode == 0, lines.stderr.decode()
    assert _records(lines.stdout) == _server_rows(replica, table[0])


def test_any_flipped_byte_or_cut_is_caught_before_any_output(file_dump) -> None:
    """Every sampled position, in process: the object is refused before a byte is handed on."""
    _config, part = file_dump
    original = part.read_bytes()
    size = len(original)
    positions = sorted({*range(0, 12), size // 2, size - 5, size - 4, size - 2, size - 1, *range(0, size, 61)})
    store, key = open_url(f"file://{part}", S3Config())
    entry = unit_entry_for(store, key)
    assert entry is not None and entry["bytes"] == size
    # Without the manifest check the lz4 decoder accepts a changed literal byte:
    # the check is what turns these into failures.
    assert lz4.frame.decompress(_flipped(original, size // 2)) != lz4.frame.decompress(original)
    try:
        for position in positions:
            part.write_bytes(_flipped(original, position))
            chunks = verified_chunks(store, key, entry)
            with pytest.raises(CorruptObject, match=r"crc32c differs from the manifest: expected [0-9a-f]{8}, got [0-9a-f]{8}$"):
                next(chunks)
        for cut in (0, 1, 7, size // 2, size - 1):
            part.write_bytes(original[:cut])
            with pytest.raises(CorruptObject, match=rf"size differs from the manifest: expected {size} bytes, got {cut}$"):
                next(verified_chunks(store, key, entry))
        part.write_bytes(original + b"\x00")
        with pytest.raises(CorruptObject, match=rf"expected {size} bytes, got more$"):
            next(verified_chunks(store, key, entry))
    finally:
        part.write_bytes(original)
    assert b"".join(verified_chunks(store, key, entry)) == lz4.frame.decompress(original)


def test_large_objects_are_checked_while_streaming(file_dump, monkeypatch) -> None:
    """Above VERIFY_FIRST_BYTES the object streams and fails at its end (or as soon as it is too long)."""
    _config, part = file_dump
    original = part.read_bytes()
    size = len(original)
    monkeypatch.setattr(reader, "VERIFY_FIRST_BYTES", 0)
    store, key = open_url(f"file://{part}", S3Config())
    entry = unit_entry_for(store, key)
    try:
        for position in (0, 4, 6, size // 3, size // 2, size - 1):
            part.write_bytes(_flipped(original, position))
            with pytest.raises(CorruptObject, match="crc32c differs from the manifest"):
                for _chunk in verified_chunks(store, key, entry):
                    pass
        for cut in (0, 7, size // 2, size - 1):
            part.write_bytes(original[:cut])
            with pytest.raises(CorruptObject, match=rf"size differs from the manifest: expected {size} bytes, got {cut}$"):
                for _chunk in verified_chunks(store, key, entry):
                    pass
        part.write_bytes(original + b"x" * 100_000)
        with pytest.raises(CorruptObject, match=rf"expected {size} bytes, got more$"):
            for _chunk in verified_chunks(store, key, entry):
                pass
    finally:
        part.write_bytes(original)
    assert b"".join(verified_chunks(store, key, entry)) == lz4.frame.decompress(original)


@pytest.mark.parametrize(
    ("fmt", "change"),
    [
        ("raw", "flip:0"),  # lz4 magic number
        ("raw", "flip:4"),  # frame descriptor (FLG)
        ("raw", "flip:mid"),
        ("jsonl", "flip:mid"),
        ("raw", "flip:last"),  # end mark
        ("raw", "cut:half"),
        ("jsonl", "cut:last"),
    ],
)
def test_cat_refuses_a_changed_part(file_dump, fmt: str, change: str) -> None:
    config, part = file_dump
    original = part.read_bytes()
    kind, where = change.split(":")
    position = {"mid": len(original) // 2, "last": len(original) - 1, "half": len(original) // 2}.get(where)
    position = int(where) if position is None else position
    url = f"file://{part}"
    try:
        part.write_bytes(_flipped(original, position) if kind == "flip" else original[:position])
        result = run_tracker(config, "cat", "--format", fmt, url)
    finally:
        part.write_bytes(original)
    line = _fails_with_one_line(result, url)
    assert ("crc32c differs" if kind == "flip" else f"expected {len(original)} bytes, got {position}") in line
    assert result.stdout == b""  # a small object is checked before anything is written


def test_cat_refuses_a_changed_part_in_s3(replica, table, moto_server, s3, bucket, tmp_path) -> None:
    config = write_config(tmp_path, replica, f"s3://{bucket}/snap", s3={"endpoint_url": moto_server.endpoint_url})
    env = moto_server.subprocess_env()
    db, name = table
    result = run_tracker(config, "dump", f"{db}.{name}", "--date", DATE, env=env)
    assert result.returncode == 0, result.stderr.decode()
    key = f"snap/main/{encode_segment(db)}/{name}/dt={DATE}/part-00000.tsv.lz4"
    url = f"s3://{bucket}/{key}"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    changes = [("raw", _flipped(original, len(original) // 2)), ("jsonl", _flipped(original, 5)), ("raw", original[:-1])]
    for fmt, changed in changes:
        s3.put_object(Bucket=bucket, Key=key, Body=changed)
        _fails_with_one_line(run_tracker(config, "cat", "--format", fmt, url, env=env), url)
    s3.put_object(Bucket=bucket, Key=key, Body=original)
    raw = run_tracker(config, "cat", url, env=env)
    assert raw.returncode == 0 and raw.stdout == lz4.frame.decompress(original)
    lines = run_tracker(config, "cat", "--format", "jsonl", url, env=env)
    assert lines.returncode == 0, lines.stderr.decode()
    assert _records(lines.stdout) == _server_rows(replica, db)


def _make_object(directory: Path, data: bytes, columns: list[dict]) -> str:
    """A one-part dataset folder with a manifest, as tracker writes it."""
    from tracker.store.checksum import crc32c

    directory.mkdir(parents=True)
    stored = lz4.frame.compress(data)
    (directory / "part-00000.tsv.lz4").write_bytes(stored)
    unit = {"index": 0, "key": "part-00000.tsv.lz4", "rows": 1, "bytes": len(stored), "checksum": {"crc32c": f"{crc32c(stored):08x}"}}
    (directory / "manifest.json").write_text(json.dumps({"columns": columns, "units": [unit]}))
    return f"file://{directory / 'part-00000.tsv.lz4'}"


def _max_rss_kb(argv: list[str]) -> tuple[int, bytes]:
    import subprocess
    import sys

    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (this test, holding the data).
    probe = (
        "import runpy, sys; sys.argv = sys.argv[1:]\ntry:\n    runpy.run_module('tracker', run_name='__main__')\n"
        "finally:\n    print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", probe, "tracker", *argv], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return int(result.stderr.decode().split()[-1]), result.stdout


def test_jsonl_memory_stays_bounded_on_a_big_value(tmp_path) -> None:
    """A 16 MB BLOB value: the jsonl reader holds it in a few forms at most (it held ~10 before)."""
    value = random.Random(9).randbytes(16 << 20)
    encoded = value.replace(b"\\", b"\\\\").replace(b"\t", b"\\\t").replace(b"\n", b"\\\n")
    columns = [{"name": "id"}, {"name": "b"}]
    big = _make_object(tmp_path / "big", b"1\t" + encoded + b"\n", columns)
    small = _make_object(tmp_path / "small", b"1\tx\n", columns)
    baseline, _ = _max_rss_kb(["cat", "--format", "jsonl", small])
    peak, out = _max_rss_kb(["cat", "--format", "jsonl", big])
    assert base64.b64decode(json.loads(out)["b"]["base64"]) == value
    print(f"max RSS delta {(peak - baseline) / 1024:.0f} MB for a {len(value) >> 20} MB value")
    assert (peak - baseline) * 1024 < 6 * len(value), (peak - baseline) / 1024
