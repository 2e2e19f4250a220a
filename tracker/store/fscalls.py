"""Linux file-system calls Python lacks, with what to do where they are missing.

``sync_file_range`` starts writeback early, so a later fsync waits only for
what is left; ``renameat2(RENAME_NOREPLACE)`` renames without replacing in
one step (a link and an unlink otherwise); ``syncfs`` makes a whole file
system durable in one call, where it can be trusted to (see
:func:`syncfs_trusted`).  They come from glibc through ctypes; without them
the callers fall back to plain fsync and link.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import threading
from typing import Callable


def _libc_function(name: str, argtypes: tuple) -> Callable[..., int] | None:
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except AttributeError:  # not Linux, or a glibc too old (renameat2 came in 2.28)
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _libc_function("sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint))
_renameat2 = _libc_function("renameat2", (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint))
_syncfs = _libc_function("syncfs", (ctypes.c_int,))
_statfs = _libc_function("statfs", (ctypes.c_char_p, ctypes.c_void_p))
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER

HAVE_SYNC_FILE_RANGE = _sync_file_range is not None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``[offset, offset+length)`` (0: to the end); advisory, the fsync decides."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def wait_written(fd: int, offset: int, length: int) -> None:
    """Write ``[offset, offset+length)`` and wait until it is on disk (its data; not the metadata)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WAIT_ALL)


def rename_no_replace(source: str, target: str) -> bool:
    """Rename ``source`` to ``target`` unless it exists (``FileExistsError``); False if this system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system or kernel without it
        return False
    raise OSError(err, os.strerror(err), target)


def make_folder(path: str) -> list[str]:
    """Make ``path`` and its missing parents; the folders that got a new entry (each new folder's parent).

    A new folder's name is durable only once its parent is fsynced, as a
    file's is once its folder is: the caller syncs these too.  A folder
    another writer made meanwhile counts as new: its maker may not have
    synced its parent yet.
    """
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not os.path.isdir(folder):  # a file where the folder should be
                raise
    return [os.path.dirname(folder) for folder in missing]


# The file systems whose syncfs is trusted to stand for an fsync of every
# file and folder on them: their ``sync_fs`` writes back every dirty inode
# and commits the journal (or log, or transaction) before it returns.
SYNCFS_FILE_SYSTEMS = {0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x9123683E: "btrfs"}
# syncfs reports any file's writeback error since Linux 5.8, and the file
# system's own (a failed journal commit) since 5.17: before, it said 0.
SYNCFS_KERNEL = (5, 17)

_trusted: dict[int, bool] = {}  # by device
_trusted_lock = threading.Lock()


def kernel_at_least(release: str, version: tuple[int, int]) -> bool:
    """Whether a kernel release string (``os.uname().release``, e.g. ``6.1.0-18-amd64``) is ``version`` or later."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return found is not None and (int(found[1]), int(found[2])) >= version


def file_system_magic(path: str) -> int | None:
    """The ``f_type`` of the file system ``path`` is on (``statfs(2)``); None where unknown."""
    if _statfs is None:
        return None
    buffer = ctypes.create_string_buffer(256)  # struct statfs, f_type first
    if _statfs(os.fsencode(path), buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def syncfs_trusted(device: int, path: str) -> bool:
    """Whether ``syncfs`` on ``device``, the file system of ``path``, stands for an fsync of each of its files and folders.

    It does where the kernel reports every error through it (5.17 and
    later) and the file system is one whose ``sync_fs`` commits its journal
    (ext4, XFS, btrfs); not on NFS, FUSE, overlays or tmpfs, whose syncfs
    promises less or nothing.  Known per device once asked.
    """
    known = _trusted.get(device)
    if known is None:
        known = (
            _syncfs is not None
            and kernel_at_least(os.uname().release, SYNCFS_KERNEL)
            and file_system_magic(path) in SYNCFS_FILE_SYSTEMS
        )
        with _trusted_lock:
            _trusted[device] = known
    return known


def sync_file_system(fd: int) -> None:
    """``syncfs(fd)``: every file's data and every name on ``fd``'s file system on disk.

    Raises the error of any writeback on that file system since ``fd`` was
    opened (or since the last ``syncfs`` on it), whoever wrote.
    """
    assert _syncfs is not None
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
