"""Destinations: where objects land, and the one commit rule for data objects.

A data object is written through an :class:`Upload`, a context manager that
opens a multipart upload (or a temporary file) on enter and, on exit:

* after a clean body, runs the ``precommit`` check it was built with and
  only then completes the upload (or links the file into place);
* after any exception -- including KeyboardInterrupt and a failed
  precommit -- aborts the upload (or removes the temporary file) and lets
  the original error propagate.

``precommit`` is a required constructor argument and the commit runs only
inside ``__exit__``: there is no public ``commit`` to call around it.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Callable, Iterator

from tracker.config import Destination, S3Config
from tracker.errors import UploadFailed

log = logging.getLogger(__name__)

READ_CHUNK = 4 << 20

Precommit = Callable[[], None]


class Upload:
    """Base of the commit rule; subclasses supply open/write/commit/abort."""

    def __init__(self, key: str, precommit: Precommit, overwrite: bool) -> None:
        self.key = key
        self._precommit = precommit
        self.overwrite = overwrite

    def __enter__(self) -> "Upload":
        self._open()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None:
            try:
                self._precommit()
                self._commit()
            except BaseException:
                self._abort_quietly()
                raise
            return False
        self._abort_quietly()
        return False  # re-raise the original error

    def _abort_quietly(self) -> None:
        try:
            self._abort()
        except Exception as exc:  # the original error matters more
            log.error("event=abort_failed key=%s error=%s", self.key, exc)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


class Store:
    """Small-object access plus streaming uploads, keys relative to the root."""

    destination: Destination

    def url(self, key: str) -> str:
        raise NotImplementedError

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def read_stream(self, key: str) -> Iterator[bytes]:
        raise NotImplementedError

    def clean_stale(self, prefix: str, older_than: dt.timedelta) -> int:
        """Abort uploads of data objects under ``prefix`` started before ``older_than`` ago.

        What a killed tracker leaves: an open multipart upload (invisible, but
        billed) or a hidden temporary file.
        """
        raise NotImplementedError


# What tracker uploads: part-NNNNN.tsv[.lz4|.gz] (layout.part_name).
STALE_CANDIDATE = re.compile(r"(^|/)\.?part-\d{5}\.tsv(\.lz4|\.gz)?(\.tmp-\d+-[0-9a-f]+)?$")


# --- file:// -----------------------------------------------------------------


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except AttributeError:  # not Linux/glibc: the final fsync does it all
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER
WRITEBACK_STEP = 16 << 20


class FileUpload(Upload):
    """Write to a temporary name beside the target; link it into place.

    Writeback is started every 16 MiB as the data comes, so the fsync before
    the commit waits only for the tail instead of the whole object.
    """

    def __init__(self, store: "FileStore", key: str, precommit: Precommit, overwrite: bool) -> None:
        super().__init__(key, precommit, overwrite)
        self._final = store.path(key)
        self._tmp = self._final.with_name(f".{self._final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self._file = None
        self._written = 0
        self._flushed = 0  # writeback started up to here
        self._waited = 0  # written to disk up to here

    def _open(self) -> None:
        try:
            self._final.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "xb", buffering=0)
        except OSError as exc:
            raise UploadFailed(f"cannot create {self._tmp}: {exc.strerror}") from None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._file is not None
        try:
            view = memoryview(data)
            while view:  # a raw write may be short
                written = self._file.write(view)
                self._written += written
                view = view[written:]
        except OSError as exc:
            raise UploadFailed(f"cannot write {self._tmp}: {exc.strerror}") from None
        if _sync_file_range is not None and self._written - self._flushed >= WRITEBACK_STEP:
            self._write_back()

    def _write_back(self) -> None:
        """Start writeback of the new range; wait for the one before it.

        Waiting one step behind keeps at most two steps of dirty pages, so
        the fsync before the commit has only the tail left to write.
        """
        assert self._file is not None and _sync_file_range is not None
        fd = self._file.fileno()
        _sync_file_range(fd, self._flushed, self._written - self._flushed, _SYNC_FILE_RANGE_WRITE)
        if self._waited < self._flushed:
            _sync_file_range(fd, self._waited, self._flushed - self._waited, _SYNC_FILE_RANGE_WAIT_ALL)
        self._waited, self._flushed = self._flushed, self._written

    def _commit(self) -> None:
        assert self._file is not None
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            if self.overwrite:
                os.replace(self._tmp, self._final)
            else:
                # A hard link never replaces: of two racing writers, one wins.
                os.link(self._tmp, self._final)
                os.unlink(self._tmp)
            _fsync_dir(self._final.parent)
        except FileExistsError:
            raise UploadFailed(f"{self._final} already exists; not replaced (use --force)") from None
        except OSError as exc:
            raise UploadFailed(f"cannot commit {self._final}: {exc.strerror}") from None

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(Store):
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.root = Path(destination.prefix)

    def path(self, key: str) -> Path:
        return self.root / key

    def url(self, key: str) -> str:
        return f"file://{self.path(key)}"

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload:
        return FileUpload(self, key, precommit, overwrite)

    def put(self, key: str, data: bytes) -> None:
        """Small objects, atomically: temp file then rename."""
        with self.upload(key, lambda: None, overwrite=True) as upload:
            upload.write(data)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UploadFailed(f"cannot read {self.path(key)}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def clean_stale(self, prefix: str, older_than: dt.timedelta) -> int:
        base = self.path(prefix)
        if not base.is_dir():
            return 0
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for path in base.rglob(".part-*.tmp-*"):
            if STALE_CANDIDATE.search(path.name) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
                log.info("event=stale_temp_removed path=%s", path)
        return removed

    def read_stream(self, key: str) -> Iterator[bytes]:
        try:
            with open(self.path(key), "rb") as f:
                while chunk := f.read(READ_CHUNK):
                    yield chunk
        except OSError as exc:
            raise UploadFailed(f"cannot read {self.path(key)}: {exc.strerror}") from None


def open_store(destination: Destination, s3: S3Config) -> Store:
    if destination.scheme == "s3":
        # Imported here: boto3 costs ~0.2 s of CPU at start, paid only by
        # the runs that use it.
        from tracker.store.s3 import S3Store

        return S3Store(destination, s3)
    return FileStore(destination)
