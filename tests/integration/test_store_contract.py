"""One contract, every destination: the commit rule holds for file:// and S3.

S3 runs against the moto server over HTTP (which, like S3, rejects parts
under 5 MiB but the last), so the multipart path is exercised for real.
"""

from __future__ import annotations

import os

import pytest

from tracker.config import S3Config, parse_destination
from tracker.errors import UploadFailed
from tracker.store.sinks import Store, open_store

MiB = 1 << 20


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "file":
        return open_store(parse_destination(f"file://{tmp_path / 'dest'}"), S3Config())
    moto_server = request.getfixturevalue("moto_server")
    request.getfixturevalue("aws_env")
    bucket = request.getfixturevalue("bucket")
    return open_store(
        parse_destination(f"s3://{bucket}/pre/fix"),
        S3Config(endpoint_url=moto_server.endpoint_url, part_size_mb=5, upload_concurrency=2),
    )


def visible(store: Store) -> list[str]:
    return store.list("")


def test_clean_exit_commits_after_precommit(store: Store) -> None:
    calls: list[str] = []
    data = os.urandom(12 * MiB + 123)  # three parts on S3, the last one small
    with store.upload("a/b.bin", lambda: calls.append("checked"), overwrite=False) as upload:
        for i in range(0, len(data), MiB):
            upload.write(data[i : i + MiB])
        assert visible(store) == []  # nothing visible before the commit
    assert calls == ["checked"]
    assert store.get("a/b.bin") == data
    assert b"".join(store.read_stream("a/b.bin")) == data
    assert visible(store) == ["a/b.bin"]


def test_empty_object(store: Store) -> None:
    with store.upload("empty", lambda: None, overwrite=False):
        pass
    assert store.get("empty") == b""


@pytest.mark.parametrize("size", [100, 11 * MiB])
def test_exception_in_body_aborts(store: Store, size: int) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with store.upload("x", lambda: None, overwrite=False) as upload:
            upload.write(os.urandom(size))
            raise RuntimeError("boom")
    assert visible(store) == []
    assert not store.exists("x")


@pytest.mark.parametrize("size", [100, 11 * MiB])
def test_failed_precommit_aborts_and_keeps_its_error(store: Store, size: int) -> None:
    def lost() -> None:
        raise UploadFailed("lease lost")

    with pytest.raises(UploadFailed, match="lease lost"):
        with store.upload("x", lost, overwrite=False) as upload:
            upload.write(os.urandom(size))
    assert visible(store) == []


@pytest.mark.parametrize("size", [100, 11 * MiB])
def test_no_clobber_unless_overwrite(store: Store, size: int) -> None:
    store.put("k", b"first")
    with pytest.raises(UploadFailed):
        with store.upload("k", lambda: None, overwrite=False) as upload:
            upload.write(os.urandom(size))
    assert store.get("k") == b"first"
    with store.upload("k", lambda: None, overwrite=True) as upload:
        upload.write(b"second")
    assert store.get("k") == b"second"


def test_small_objects(store: Store) -> None:
    assert store.get("nope") is None and not store.exists("nope")
    store.put("d/one", b"1")
    store.put("d/two", b"2")
    store.put("e/three", b"3")
    assert store.list("d/") == ["d/one", "d/two"]
    store.delete("d/one")
    store.delete("d/one")  # deleting what is gone is fine
    assert store.list("") == ["d/two", "e/three"]
    assert store.url("d/two").endswith("/d/two")


def test_clean_stale_removes_only_abandoned_data_uploads(store: Store, tmp_path) -> None:
    """What a kill -9 leaves (an open multipart upload, a hidden temp file) is cleaned; nothing else."""
    import datetime as dt

    abandoned = store.upload("ns/db/t/dt=2026-01-01/part-00000.tsv.lz4", lambda: None, overwrite=False)
    abandoned.__enter__()
    abandoned.write(os.urandom(6 * MiB))  # on S3 this opens a multipart upload
    store.put("ns/db/t/dt=2026-01-01/manifest.json", b"{}")
    if not hasattr(store, "client"):
        # moto reports every upload as initiated in 2010, so age is only
        # checkable on the file store here; real S3 reports the true time.
        assert store.clean_stale("ns/", dt.timedelta(hours=1)) == 0  # too young to be abandoned
    assert store.clean_stale("other/", dt.timedelta(0)) == 0  # another prefix
    assert store.clean_stale("ns/", dt.timedelta(0)) == 1
    assert store.list("") == ["ns/db/t/dt=2026-01-01/manifest.json"]
    if hasattr(store, "client"):
        assert store.client.list_multipart_uploads(Bucket=store.destination.bucket).get("Uploads", []) == []
    else:
        assert [p for p in (tmp_path / "dest").rglob(".*") if p.is_file()] == []


def test_s3_parts_carry_our_crc32c(moto_server, aws_env, bucket) -> None:
    """Each part (and a single PUT) carries the CRC-32C of its bytes for S3 to verify,
    and botocore computes no checksum of its own on top of it."""
    from base64 import b64encode

    from tracker.store.checksum import HARDWARE_CRC32C, crc32c  # checked against the reference in tests/unit

    if not HARDWARE_CRC32C:
        pytest.fail("the C extension is not built: scripts/install.sh builds it")
    store = open_store(
        parse_destination(f"s3://{bucket}/crc"),
        S3Config(endpoint_url=moto_server.endpoint_url, part_size_mb=5, upload_concurrency=2),
    )
    sent: list[tuple[str, dict[str, str]]] = []

    def record(request, **_kw) -> None:
        headers = {k.lower(): v for k, v in request.headers.items() if "checksum" in k.lower()}
        sent.append((request.method, {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}))

    store.client.meta.events.register("before-send.s3.*", record)
    data = os.urandom(11 * MiB)
    with store.upload("big.bin", lambda: None, overwrite=False) as upload:
        for i in range(0, len(data), MiB):
            upload.write(data[i : i + MiB])
    with store.upload("small.bin", lambda: None, overwrite=False) as upload:
        upload.write(b"small")
    puts = [h for method, h in sent if method == "PUT"]  # the parts, then the single PUT
    assert all(set(h) == {"x-amz-checksum-crc32c"} for h in puts), puts  # no x-amz-checksum-crc32 from botocore
    pieces = [data[: 5 * MiB], data[5 * MiB : 10 * MiB], data[10 * MiB :], b"small"]
    expected = sorted(b64encode(crc32c(p).to_bytes(4, "big")).decode() for p in pieces)
    assert sorted(h["x-amz-checksum-crc32c"] for h in puts) == expected
    assert store.get("big.bin") == data
