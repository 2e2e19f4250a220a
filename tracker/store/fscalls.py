"""Linux file-system calls Python lacks, with what to do where they are missing.

``sync_file_range`` starts writeback early, so a later fsync waits only for
what is left; ``renameat2(RENAME_NOREPLACE)`` renames without replacing in
one step (a link and an unlink otherwise).  Both come from glibc through
ctypes; without them the callers fall back to plain fsync and link.
"""

from __future__ import annotations

import ctypes
import errno
import os
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
