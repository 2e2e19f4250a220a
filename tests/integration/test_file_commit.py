"""file:// commits of many small objects: one syncfs per file system before the renames and one after.

These run on this machine's real file system.  Whether syncfs is trusted
there is the business of ``tests/unit/test_fscalls.py``; here the decision is
forced either way, so the commit's steps are checked wherever the suite
runs (syncfs itself works on any file system).
"""

from __future__ import annotations

import errno
import os

import pytest

from tracker.config import S3Config, parse_destination
from tracker.errors import UploadFailed
from tracker.store import filecommit, fscalls
from tracker.store.sinks import CommitGroup, open_store

ITEMS = [(f"ns/db/t{i}/dt=2026-01-02/{name}", f"{i} {name}\n".encode()) for i in range(4) for name in ("schema.sql", "manifest.json")]


@pytest.fixture
def store(tmp_path):
    return open_store(parse_destination(f"file://{tmp_path / 'dest'}"), S3Config())


@pytest.fixture
def trusted(monkeypatch) -> None:
    monkeypatch.setattr(fscalls, "syncfs_trusted", lambda device, path: True)


@pytest.fixture
def calls(monkeypatch, store) -> list[tuple[str, object]]:
    """Every syncfs, fsync and folder fsync of the commit, in order; at each syncfs, which final names exist."""
    seen: list[tuple[str, object]] = []
    real_syncfs, real_fsync, real_folder = fscalls.sync_file_system, os.fsync, filecommit._sync_folder

    def syncfs(fd: int) -> None:
        placed = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file() and not p.name.startswith("."))
        seen.append(("syncfs", (os.readlink(f"/proc/self/fd/{fd}"), placed)))
        real_syncfs(fd)

    monkeypatch.setattr(fscalls, "sync_file_system", syncfs)
    monkeypatch.setattr(os, "fsync", lambda fd: seen.append(("fsync", fd)) or real_fsync(fd))
    monkeypatch.setattr(filecommit, "_sync_folder", lambda path: seen.append(("folder", path)) or real_folder(path))
    return seen


def test_many_small_objects_take_one_syncfs_before_and_one_after_the_renames(store, trusted, calls) -> None:
    assert store.put_many(ITEMS) == {}
    assert [kind for kind, _ in calls] == ["syncfs", "syncfs"]
    (first_fd, placed_before), (_, placed_after) = (value for _, value in calls)
    # the first on the descriptor of the first file written (opened before any of the group wrote)
    first_folder = store.root / "ns/db/t0/dt=2026-01-02"
    assert os.path.dirname(first_fd) == str(first_folder) and os.path.basename(first_fd).startswith(".schema.sql.tmp-")
    assert placed_before == []  # content on disk before any name points to it
    assert placed_after == sorted(key for key, _ in ITEMS)  # the names, after every rename
    assert {key: store.get(key) for key, _ in ITEMS} == dict(ITEMS)
    assert not [p for p in store.root.rglob(".*")]  # no temporary file left


def test_a_group_of_empty_objects_syncs_once_after_creating_them(store, trusted, calls) -> None:
    store.put_many(ITEMS)
    calls.clear()
    successes = [(f"ns/db/t{i}/dt=2026-01-02/_SUCCESS", b"") for i in range(4)] + [(key, b"") for key, _ in ITEMS[:4]]
    assert store.put_many(successes) == {}
    assert [kind for kind, _ in calls] == ["syncfs"]
    _, (folder, placed) = calls[0]
    assert os.path.isdir(folder) and all(key in placed for key, _ in successes)
    assert all(store.get(key) == b"" for key, _ in successes)


def test_a_commit_group_of_many_parts_takes_the_same_way(store, trusted, calls) -> None:
    with CommitGroup(store, lambda keys: {}) as group:
        for key, data in ITEMS:
            with group.upload(key, lambda: None, overwrite=False) as upload:
                upload.write(data)
    group.wait()
    assert group.committed == {key for key, _ in ITEMS}
    assert [kind for kind, _ in calls] == ["syncfs", "syncfs"]


@pytest.mark.parametrize(
    "why", ["few objects", "much data", "untrusted file system"],
)
def test_otherwise_each_file_and_folder_is_fsynced(store, calls, monkeypatch, why: str) -> None:
    items = ITEMS
    if why == "few objects":
        monkeypatch.setattr(fscalls, "syncfs_trusted", lambda device, path: True)
        items = ITEMS[: filecommit.MANY_OBJECTS - 1]
    elif why == "much data":
        monkeypatch.setattr(fscalls, "syncfs_trusted", lambda device, path: True)
        monkeypatch.setattr(filecommit, "SMALL_DATA", 16)
    else:
        monkeypatch.setattr(fscalls, "syncfs_trusted", lambda device, path: False)
    assert store.put_many(items) == {}
    kinds = [kind for kind, _ in calls]
    assert "syncfs" not in kinds
    # an fsync of each file, and of each folder (the file system's own fsync under each "folder")
    assert kinds.count("folder") >= 4 and kinds.count("fsync") == len(items) + kinds.count("folder")


def test_a_failed_syncfs_before_the_renames_commits_nothing(store, trusted, monkeypatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fscalls, "sync_file_system", broken)
    failed = store.put_many(ITEMS)
    assert sorted(failed) == sorted(key for key, _ in ITEMS)
    assert all(isinstance(exc, UploadFailed) and "cannot sync" in str(exc) for exc in failed.values())
    assert [p for p in store.root.rglob("*") if p.is_file()] == []  # neither names nor temporary files


def test_a_failed_syncfs_after_the_renames_fails_every_object(store, trusted, monkeypatch) -> None:
    """In place but maybe not durable: reported failed, as when a folder's fsync fails."""
    real, count = fscalls.sync_file_system, []

    def second_fails(fd: int) -> None:
        count.append(fd)
        if len(count) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(fscalls, "sync_file_system", second_fails)
    failed = store.put_many(ITEMS)
    assert sorted(failed) == sorted(key for key, _ in ITEMS) and len(count) == 2


def test_a_missing_folder_takes_the_file_by_file_way(store, trusted, calls) -> None:
    """Empty objects are created in place: a folder not made yet is made by the file-by-file commit."""
    items = [(f"new/t{i}/_SUCCESS", b"") for i in range(filecommit.MANY_OBJECTS)]
    assert store.put_many(items) == {}
    assert "syncfs" not in [kind for kind, _ in calls]
    assert all(store.get(key) == b"" for key, _ in items)


def test_the_first_syncfs_is_on_the_file_opened_first_whatever_the_order_given(store, trusted, calls) -> None:
    """Its descriptor sampled the file system's errors before any other file of the commit was written."""
    uploads = [store.upload(key, lambda: None, overwrite=False) for key, _ in ITEMS]
    for upload, (_, data) in reversed(list(zip(uploads, ITEMS))):  # opened last to first
        upload._open()
        upload.write(data)
    assert filecommit.commit_files(uploads) == {}
    first_fd, _ = calls[0][1]
    assert os.path.basename(first_fd).startswith(".manifest.json.tmp-") and "/t3/" in first_fd
    assert {key: store.get(key) for key, _ in ITEMS} == dict(ITEMS)
