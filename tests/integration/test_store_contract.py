"""One contract, every destination: the commit rule holds for file:// and S3.

S3 runs against the moto server over HTTP (which, like S3, rejects parts
under 5 MiB but the last), so the multipart path is exercised for real.
"""

from __future__ import annotations

import os
from typing import Sequence

import pytest

from tracker.config import S3Config, parse_destination
from tracker.errors import UploadFailed
from tracker.store.sinks import CommitGroup, Store, open_store

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


def test_clean_stale_with_dates_looks_only_in_those_datasets(store: Store, tmp_path) -> None:
    """``dates`` narrows a file tree's search to the datasets of those dates (S3 lists its open uploads anyway)."""
    import datetime as dt

    keys = [f"ns/db/t/dt={d}/part-00000.tsv.zst" for d in ("2026-01-01", "2026-01-05")]
    for key in keys:
        abandoned = store.upload(key, lambda: None, overwrite=False)
        abandoned.__enter__()
        abandoned.write(os.urandom(6 * MiB))
    found = store.clean_stale("ns/", dt.timedelta(0), dates=["2026-01-05", "2026-01-04"])
    if hasattr(store, "client"):
        assert found == 2
    else:
        assert found == 1
        left = [p.parent.name for p in (tmp_path / "dest").rglob(".part-*") if p.is_file()]
        assert left == ["dt=2026-01-01"]
        assert store.clean_stale("ns/", dt.timedelta(0)) == 1  # a whole walk finds the rest


def test_group_commits_every_member_after_one_check(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    checked: list[list[str]] = []
    data = {f"g/{i}.bin": os.urandom(size) for i, size in enumerate([0, 100, 6 * MiB])}
    with ThreadPoolExecutor(4) as pool:
        with CommitGroup(store, lambda keys: checked.append(list(keys)) or {}, pool) as group:
            for key, body in data.items():
                with group.upload(key, lambda: None, overwrite=False) as upload:
                    upload.write(body)
                assert visible(store) == []  # a member waits for the group
            assert checked == []
    assert checked == [list(data)]
    assert group.committed == set(data) and group.failed == {}
    assert {key: store.get(key) for key in data} == data


def test_group_aborts_refused_and_failed_members_only(store: Store) -> None:
    def refuse(keys: Sequence[str]) -> dict[str, BaseException]:
        return {"g/refused": UploadFailed("lease lost")}

    with CommitGroup(store, refuse) as group:
        for key in ("g/ok", "g/refused"):
            with group.upload(key, lambda: None, overwrite=False) as upload:
                upload.write(key.encode())
        with pytest.raises(UploadFailed, match="own check"):
            with group.upload("g/own", _fail("own check"), overwrite=False) as upload:
                upload.write(b"x")
        store.put("g/taken", b"first")
        with group.upload("g/taken", lambda: None, overwrite=False) as upload:  # no clobber: fails at commit
            upload.write(b"second")
    assert group.committed == {"g/ok"}
    assert set(group.failed) == {"g/refused", "g/taken"}
    assert str(group.failed["g/refused"]) == "lease lost"
    assert visible(store) == ["g/ok", "g/taken"] and store.get("g/taken") == b"first"


@pytest.mark.parametrize("where", ["body", "check"])
def test_group_error_aborts_every_member(store: Store, where: str) -> None:
    def check(keys: Sequence[str]) -> dict[str, BaseException]:
        if where == "check":
            raise UploadFailed("master unreachable")
        return {}

    with pytest.raises((UploadFailed, RuntimeError)):
        with CommitGroup(store, check) as group:
            for key in ("g/a", "g/b"):
                with group.upload(key, lambda: None, overwrite=False) as upload:
                    upload.write(os.urandom(6 * MiB))
            if where == "body":
                raise RuntimeError("stopped")
    assert visible(store) == [] and group.committed == set()
    if hasattr(store, "client"):
        assert store.client.list_multipart_uploads(Bucket=store.destination.bucket).get("Uploads", []) == []


def test_group_in_the_background_commits_after_the_body_and_the_check(store: Store) -> None:
    """With ``background``, the exit hands over the check and the commits; ``wait`` waits for them."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    gate = threading.Event()

    def check(keys: Sequence[str]) -> dict[str, BaseException]:
        gate.wait(30)  # held until the test has looked
        return {"g/b": UploadFailed("lease lost")}

    with ThreadPoolExecutor(1) as background:
        with CommitGroup(store, check, background=background) as group:
            for key in ("g/a", "g/b"):
                with group.upload(key, lambda: None, overwrite=False) as upload:
                    upload.write(key.encode())
        assert visible(store) == [] and group.committed == set()  # returned before the check ran
        gate.set()
        group.wait()
    assert group.committed == {"g/a"} and set(group.failed) == {"g/b"}
    assert visible(store) == ["g/a"]

    def unreachable(keys: Sequence[str]) -> dict[str, BaseException]:
        raise UploadFailed("master unreachable")

    with ThreadPoolExecutor(1) as background:
        with CommitGroup(store, unreachable, background=background) as group:
            with group.upload("g/c", lambda: None, overwrite=False) as upload:
                upload.write(os.urandom(6 * MiB))
        with pytest.raises(UploadFailed, match="unreachable"):
            group.wait()
    assert visible(store) == ["g/a"] and group.committed == set()


def test_put_many_fails_only_the_objects_it_could_not_write(store: Store) -> None:
    store.put("q/blocker", b"a file where a folder would be")
    failed = store.put_many([("q/one", b"1"), ("q/blocker/inside", b"2"), ("q/two", b"")])
    if hasattr(store, "client"):  # S3 has no folders: all three are objects
        assert failed == {}
    else:
        assert list(failed) == ["q/blocker/inside"] and isinstance(failed["q/blocker/inside"], UploadFailed)
    assert store.get("q/one") == b"1" and store.get("q/two") == b""


def test_put_many_writes_each_object_whole(store: Store) -> None:
    items = [("p/schema.sql", b"CREATE TABLE t (id INT)\n"), ("p/manifest.json", b"{}\n"), ("p/_SUCCESS", b"")]
    store.put("p/manifest.json", b"old")
    store.put_many(items)
    assert {key: store.get(key) for key, _ in items} == dict(items)
    assert visible(store) == sorted(key for key, _ in items)


def _fail(why: str):
    def check() -> None:
        raise UploadFailed(why)

    return check


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


def test_empty_objects_put_in_place_replace_and_leave_no_temporary_file(store: Store) -> None:
    store.put("m/_SUCCESS", b"")  # its folder made on the way
    store.put("m/was-full", b"old content")
    assert store.put_many([("m/was-full", b""), ("m/new/_SUCCESS", b"")]) == {}
    assert store.get("m/_SUCCESS") == b"" and store.get("m/was-full") == b"" and store.get("m/new/_SUCCESS") == b""
    if not hasattr(store, "client"):  # file://: nothing hidden left beside them
        root = store.path("m")  # type: ignore[attr-defined]
        assert sorted(p.name for p in root.rglob("*")) == ["_SUCCESS", "_SUCCESS", "new", "was-full"]


@pytest.mark.parametrize("rename_no_replace", [True, False], ids=["renameat2", "hard-link"])
def test_file_no_clobber_commit_with_and_without_renameat2(tmp_path, monkeypatch, rename_no_replace: bool) -> None:
    """Whether the system renames without replacing or tracker links instead, of two writers one wins."""
    from tracker.store import fscalls

    if not rename_no_replace:
        monkeypatch.setattr(fscalls, "_renameat2", None)
    store = open_store(parse_destination(f"file://{tmp_path / 'dest'}"), S3Config())
    with pytest.raises(UploadFailed, match="already exists"):
        with store.upload("d/part-00000.tsv", lambda: None, overwrite=False) as first:
            first.write(b"first\n")
            with store.upload("d/part-00000.tsv", lambda: None, overwrite=False) as second:
                second.write(b"second\n")
            # the second committed first and won; the first must not replace it
    assert store.get("d/part-00000.tsv") == b"second\n"
    assert sorted(p.name for p in (tmp_path / "dest" / "d").iterdir()) == ["part-00000.tsv"]


def test_file_commit_syncs_every_folder_it_made(tmp_path, monkeypatch) -> None:
    """A new folder's name is durable only once its parent is synced: the commit syncs each."""
    from tracker.store import filecommit

    synced: list[str] = []
    real = filecommit._sync_folder
    monkeypatch.setattr(filecommit, "_sync_folder", lambda path: synced.append(path) or real(path))
    store = open_store(parse_destination(f"file://{tmp_path / 'dest'}"), S3Config())
    with store.upload("ns/db/t/dt=2026-01-02/part-00000.tsv", lambda: None, overwrite=False) as upload:
        upload.write(b"1\n")
    dataset = tmp_path / "dest" / "ns" / "db" / "t" / "dt=2026-01-02"
    made = [dataset, dataset.parent, dataset.parent.parent, tmp_path / "dest" / "ns", tmp_path / "dest"]
    # its own folder, and the parent of each folder made for it: each once
    assert sorted(synced) == sorted({str(dataset), *(str(folder.parent) for folder in made)})
    assert len(synced) == len(set(synced)) == 6
    synced.clear()
    store.put_many([("ns/db/t/dt=2026-01-02/_SUCCESS", b""), ("ns/db/u/dt=2026-01-02/_SUCCESS", b"")])
    other = tmp_path / "dest" / "ns" / "db" / "u" / "dt=2026-01-02"
    assert sorted(synced) == sorted({str(dataset), str(other), str(other.parent), str(other.parent.parent)})
