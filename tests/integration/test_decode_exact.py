"""Every MySQL type, dumped by ``tracker dump`` from a replica and decoded by read_part, value by value.

Each value the decoder returns is compared with what the server returns for
it (tests/integration/alltypes.py): text through ``CONVERT(col USING
utf8mb4)``, FLOAT by its float32 bits, spatial values by ST_AsBinary and
ST_SRID.  Zero and partial dates are NULL and counted like the server's own
zero values.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from tests.integration.alltypes import (
    TABLE,
    arrow_columns,
    create_alltypes_table,
    diff_values,
    expected_values,
    expected_zero_dates,
)
from tests.integration.helpers import run_tracker, write_config
from tracker.config import S3Config, parse_destination
from tracker.errors import TrackerError
from tracker.store.layout import encode_segment
from tracker.store.sinks import Store, open_store
from tracker.warehouse.decode import DecodeError, DecodeReport, arrow_schema, read_part

DATE = "2026-11-03"


@pytest.fixture
def alltypes(master, replica_set, fresh_db) -> str:
    create_alltypes_table(master, fresh_db)
    replica_set.sync()
    return fresh_db


def dataset_prefix(db: str) -> str:
    return f"main/{encode_segment(db)}/{TABLE}/dt={DATE}/"


def dump(tmp_path: Path, replica, destination: str, db: str, env=None, **config) -> None:
    path = write_config(tmp_path, replica, destination, **config)
    result = run_tracker(path, "dump", f"{db}.{TABLE}", "--date", DATE, env=env)
    assert result.returncode == 0, result.stderr.decode()


def manifest_of(store: Store, db: str) -> dict:
    return json.loads(store.get(dataset_prefix(db) + "manifest.json"))


def decode_dataset(store: Store, manifest: dict, **kwargs) -> tuple[list[pa.RecordBatch], DecodeReport]:
    report = DecodeReport()
    batches = [b for unit in manifest["units"] for b in read_part(store, unit, manifest, report=report, **kwargs)]
    return batches, report


def test_the_table_really_holds_the_tricky_bytes(replica, alltypes) -> None:
    """Guards the comparison below: the multibyte values contain 5C/09/0A/00 inside characters."""
    (row,) = replica.sql(f"SELECT HEX(sj), HEX(gb), HEX(b5), HEX(u16t) FROM `{alltypes}`.{TABLE} WHERE id = 2")
    sj, gb, b5, u16 = row
    assert "955C945C835C" in sj and "815C825C835C" in gb and "A55CA25C" in b5
    assert u16.startswith("5C71" "0900" "0A05" "0041")


@pytest.mark.parametrize("block_bytes", [8 << 20, 4096])
def test_every_type_decodes_to_the_servers_values(replica, tmp_path, alltypes, block_bytes) -> None:
    db = alltypes
    dump(tmp_path, replica, f"file://{tmp_path / 'dest'}", db)
    store = open_store(parse_destination(f"file://{tmp_path / 'dest'}"), S3Config())
    manifest = manifest_of(store, db)

    batches, report = decode_dataset(store, manifest, block_bytes=block_bytes)

    schema = arrow_schema(manifest["columns"])
    assert all(b.schema == schema for b in batches)
    if block_bytes == 4096:
        assert len(batches) > 10  # the part really spans many blocks
    assert [f.metadata[b"mysql.type"].decode() for f in schema] == [c["type"] for c in manifest["columns"]]
    expected = expected_values(replica, db)
    assert diff_values(expected, arrow_columns(batches)) == []
    assert report.zero_dates == expected_zero_dates(replica, db) and report.zero_dates
    assert report.rows == manifest["rows"] == len(expected["id"])


def test_values_read_from_s3_are_the_same(replica, moto_server, bucket, tmp_path, alltypes) -> None:
    db = alltypes
    dump(tmp_path, replica, f"s3://{bucket}/snap", db, env=moto_server.subprocess_env(),
         s3={"endpoint_url": moto_server.endpoint_url}, compression="gzip")
    s3 = S3Config(endpoint_url=moto_server.endpoint_url)
    env = moto_server.env()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        store = open_store(parse_destination(f"s3://{bucket}/snap"), s3)
        manifest = manifest_of(store, db)
        assert manifest["units"][0]["key"].endswith(".tsv.gz")
        batches, report = decode_dataset(store, manifest)
    assert diff_values(expected_values(replica, db), arrow_columns(batches)) == []
    assert report.zero_dates == expected_zero_dates(replica, db)


def test_strict_refuses_the_first_zero_date(replica, tmp_path, alltypes) -> None:
    db = alltypes
    dump(tmp_path, replica, f"file://{tmp_path / 'dest'}", db)
    store = open_store(parse_destination(f"file://{tmp_path / 'dest'}"), S3Config())
    manifest = manifest_of(store, db)
    with pytest.raises(DecodeError) as err:
        decode_dataset(store, manifest, strict=True)
    message = str(err.value)
    # id 4 is the 4th row of the part (primary key order); DATE is the first temporal column
    assert re.fullmatch(r"file://.*/part-00000\.tsv\.lz4: column 'dd' row 4: zero or partial date \(strict\): '0000-00-00'", message), message
    assert err.value.exit_status == 1


def test_text_not_valid_in_its_charset_names_column_row_and_bytes(replica, tmp_path, alltypes) -> None:
    """latin1 bytes read as if the column were utf8mb4: refused, never replaced."""
    db = alltypes
    dump(tmp_path, replica, f"file://{tmp_path / 'dest'}", db)
    store = open_store(parse_destination(f"file://{tmp_path / 'dest'}"), S3Config())
    manifest = copy.deepcopy(manifest_of(store, db))
    (lat,) = [c for c in manifest["columns"] if c["name"] == "lat"]
    assert lat["charset"] == "latin1"
    lat["charset"] = "utf8mb4"
    with pytest.raises(DecodeError) as err:
        decode_dataset(store, manifest)
    message = str(err.value)
    assert re.fullmatch(r"file://.*: column 'lat' row 2: not valid utf8mb4 \(.*\): x'000102[0-9a-f]+'\.\.\. \(256 bytes\)", message), message


def test_a_changed_byte_or_row_count_is_never_decoded_silently(replica, tmp_path, alltypes) -> None:
    db = alltypes
    dest = tmp_path / "dest"
    dump(tmp_path, replica, f"file://{dest}", db, compression="none")
    store = open_store(parse_destination(f"file://{dest}"), S3Config())
    manifest = manifest_of(store, db)
    (unit,) = manifest["units"]

    wrong_rows = copy.deepcopy(unit)
    wrong_rows["rows"] += 1
    with pytest.raises(DecodeError, match=f"{manifest['rows']} rows decoded, the manifest says {manifest['rows'] + 1}"):
        list(read_part(store, wrong_rows, manifest))

    part = store.path(unit["key"])
    data = part.read_bytes()
    assert data.count(b"\t2155\t") == 1  # YEAR 2155 of id 2: still a valid YEAR when changed
    part.write_bytes(data.replace(b"\t2155\t", b"\t2154\t"))
    with pytest.raises(TrackerError, match="crc32c"):
        list(read_part(store, unit, manifest))
