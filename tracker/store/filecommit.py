"""Written files made committed objects on file://: their content durable, then their names, then the names durable.

Two ways with the same guarantees, chosen per commit:

* **File by file** (any file system, and commits of a few or large
  objects): writeback of every file started, then each fsynced, renamed
  into place, and each folder -- and the parent of each folder made for
  them -- fsynced once.
* **By file system** (many small objects on ext4, XFS or btrfs under Linux
  5.17 or later, :func:`tracker.store.fscalls.syncfs_trusted`): one
  ``syncfs`` before the renames and one after, per file system, instead of
  an fsync of every file and folder.  ``syncfs(2)`` gives the guarantees of
  an fsync of each file of the file system, and reports any writeback
  error since the descriptor it is called on was opened: it is called on
  the group's first file's descriptor, opened before anything of the group
  was written.  A table of the batched path costs three files and a folder:
  six fsyncs one way, a share of two calls the other (measured here: a
  sixth of the run's wall time for 1,000 small tables).  Its cost: it
  writes back what other writers left dirty on the same file system, which
  is why only commits of many small objects take this way.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Sequence

from tracker.errors import TrackerError, UploadFailed
from tracker.store import fscalls

if TYPE_CHECKING:
    from tracker.store.files import FileUpload

# A commit takes the file-system way from this many objects holding at
# most this much data: below, a few fsyncs cost less than flushing what
# others left dirty; above, the data's own writing is most of the cost.
MANY_OBJECTS = 8
SMALL_DATA = 32 << 20


def commit_files(uploads: Sequence["FileUpload"]) -> dict[str, TrackerError]:
    """Commit written files together; the ones that failed, with why."""
    if len(uploads) >= MANY_OBJECTS and sum(upload._written for upload in uploads) <= SMALL_DATA:
        devices = _trusted_devices(uploads)
        if devices is not None:
            return _commit_by_file_system(uploads, devices)
    return _commit_file_by_file(uploads)


def _commit_file_by_file(uploads: Sequence["FileUpload"]) -> dict[str, TrackerError]:
    """Each step for every file before the next step.

    One fsync commits the journal for every change made before it, so after
    the first most find their data written and their inode committed, and
    return at once: interleaving fsync, rename and folder fsync per file
    made each wait for a journal commit of its own (measured here: twice
    the time, and more CPU).
    """
    failed: dict[str, TrackerError] = {}
    for upload in uploads:
        upload._start_writeback()
    for step in ("_sync", "_place"):
        _each(uploads, step, failed)
    folders: dict[str, list[FileUpload]] = {}
    for upload in uploads:
        if upload.key not in failed:
            for folder in (upload._folder, *upload._new_entries):
                folders.setdefault(folder, []).append(upload)
    for folder, placed in folders.items():
        try:
            _sync_folder(folder)
        except UploadFailed as exc:  # in place but maybe not durable: not committed
            failed.update((upload.key, exc) for upload in placed)
    return failed


def _commit_by_file_system(uploads: Sequence["FileUpload"], devices: dict[str, int]) -> dict[str, TrackerError]:
    """The content of every file on disk (one syncfs per file system), the renames, then the names on disk (another)."""
    failed: dict[str, TrackerError] = {}
    syncers: dict[int, int] = {}  # device -> a descriptor opened before the group wrote to it
    try:
        # Per device, the file opened first: its descriptor sampled the file
        # system's errors before any of the group was written.
        for upload in sorted((u for u in uploads if u._file is not None), key=lambda u: u.opened):
            device = devices[upload._folder]
            if device not in syncers:
                syncers[device] = os.dup(upload._file.fileno())
        _sync_devices(syncers, uploads, devices, failed)
        _each(uploads, "_close", failed)
        _each(uploads, "_place", failed)
        for upload in uploads:  # a group of empty objects only: each folder's file system, opened now
            device = devices[upload._folder]
            if upload.key not in failed and device not in syncers:
                syncers[device] = _open_folder(upload._folder)
        _sync_devices(syncers, uploads, devices, failed)  # in place but maybe not durable: not committed
    finally:
        for fd in syncers.values():
            os.close(fd)
    return failed


def _trusted_devices(uploads: Sequence["FileUpload"]) -> dict[str, int] | None:
    """Each upload's folder to its device, if syncfs is trusted on all of them; None otherwise."""
    devices: dict[str, int] = {}
    for upload in uploads:
        folder = upload._folder
        if folder in devices:
            continue
        try:  # an open file's device, or its folder's (an empty object, made in place)
            device = (os.fstat(upload._file.fileno()) if upload._file is not None else os.stat(folder)).st_dev
        except OSError:  # a folder not made yet: the file-by-file way makes it
            return None
        if not fscalls.syncfs_trusted(device, folder):
            return None
        devices[folder] = device
    return devices


def _sync_devices(
    syncers: dict[int, int], uploads: Iterable["FileUpload"], devices: dict[str, int], failed: dict[str, TrackerError]
) -> None:
    """syncfs on each device; every upload on one that failed fails with its error (and is removed if not in place)."""
    for device, fd in syncers.items():
        try:
            fscalls.sync_file_system(fd)
        except OSError as exc:
            for upload in uploads:
                if upload.key not in failed and devices[upload._folder] == device:
                    upload._abort_quietly()
                    failed[upload.key] = UploadFailed(f"cannot sync {upload._final}: {exc.strerror}")


def _each(uploads: Iterable["FileUpload"], step: str, failed: dict[str, TrackerError]) -> None:
    """One step for every upload not failed yet; one that fails is aborted and noted."""
    for upload in uploads:
        if upload.key in failed:
            continue
        try:
            getattr(upload, step)()
        except UploadFailed as exc:
            upload._abort_quietly()
            failed[upload.key] = exc


def _open_folder(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UploadFailed(f"cannot open {path}: {exc.strerror}") from None


def _sync_folder(path: str) -> None:
    fd = _open_folder(path)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise UploadFailed(f"cannot sync {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
