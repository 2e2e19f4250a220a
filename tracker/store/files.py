"""The file:// destination: temporary files renamed into place under the commit rule of ``sinks``.

A data object is written to a hidden temporary name beside its target,
fsynced, then renamed into place -- never replacing unless asked to (of two
racing writers one wins) -- and its folder fsynced, and so is the parent of
every folder made for it.  An empty object (``_SUCCESS``) has nothing to
hide while written: it is created in place.  Objects committed together (a
:class:`~tracker.store.sinks.CommitGroup`, ``put_many``) go through each
step as a group, so that few fsyncs each wait for a journal commit; many
small ones on a file system that can be trusted to, with one ``syncfs`` for
all instead (:mod:`tracker.store.filecommit`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import secrets
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from tracker.config import Destination
from tracker.errors import TrackerError, UploadFailed
from tracker.store import fscalls
from tracker.store.filecommit import commit_files
from tracker.store.sinks import READ_CHUNK, STALE_CANDIDATE, Precommit, Store, Upload

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITEBACK_STEP = 16 << 20


class FileUpload(Upload):
    """Write to a temporary name beside the target; link it into place.

    Writeback is started every 16 MiB as the data comes, so the fsync before
    the commit waits only for the tail instead of the whole object.
    """

    def __init__(self, store: "FileStore", key: str, precommit: Precommit, overwrite: bool) -> None:
        super().__init__(key, precommit, overwrite)
        # Plain strings, not Paths: built for every object, and pathlib's
        # parsing cost more than the write of a small one.
        self._final = os.path.join(store.root_name, key)
        self._folder, name = os.path.split(self._final)
        self._tmp = os.path.join(self._folder, f".{name}.tmp-{os.getpid()}-{_temp_suffix()}")
        self._file = None
        self.opened = -1  # when its file was opened, in this process's order
        self._written = 0
        self._flushed = 0  # writeback started up to here
        self._waited = 0  # written to disk up to here
        self._new_entries: list[str] = []  # folders that got a new subfolder for this object: synced too

    def _in_folder(self, create: Callable[[], T]) -> T:
        """``create()`` a file in the object's folder, making the folder first if it is missing."""
        try:
            return create()
        except FileNotFoundError:  # the dataset's first object
            self._new_entries = fscalls.make_folder(self._folder)
            return create()

    def _open(self) -> None:
        try:
            self._file = self._in_folder(lambda: open(self._tmp, "xb", buffering=0))
        except OSError as exc:
            raise UploadFailed(f"cannot create {self._tmp}: {exc.strerror}") from None
        self.opened = next(_opened)  # which of a group's files was opened first (filecommit)

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
        if fscalls.HAVE_SYNC_FILE_RANGE and self._written - self._flushed >= WRITEBACK_STEP:
            self._write_back()

    def _write_back(self) -> None:
        """Start writeback of the new range; wait for the one before it.

        Waiting one step behind keeps at most two steps of dirty pages, so
        the fsync before the commit has only the tail left to write.
        """
        assert self._file is not None
        fd = self._file.fileno()
        fscalls.start_writeback(fd, self._flushed, self._written - self._flushed)
        if self._waited < self._flushed:
            fscalls.wait_written(fd, self._waited, self._flushed - self._waited)
        self._waited, self._flushed = self._flushed, self._written

    def _commit(self) -> None:
        failed = commit_files([self])  # one object: the same steps as a group's
        if failed:
            raise failed[self.key]

    def _start_writeback(self) -> None:
        """Ask the kernel to start writing what is not on its way yet (advisory: the fsync decides)."""
        if self._file is not None and fscalls.HAVE_SYNC_FILE_RANGE and self._written > self._flushed:
            fscalls.start_writeback(self._file.fileno(), self._flushed, 0)
            self._flushed = self._written

    def _sync(self) -> None:
        """The content on disk, before any name points to it.

        An empty file has no content to tear: its inode is made in the same
        journal transaction as its name, which the folder's fsync makes durable.
        """
        assert self._file is not None
        try:
            if self._written:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        except OSError as exc:
            raise UploadFailed(f"cannot commit {self._final}: {exc.strerror}") from None

    def _close(self) -> None:
        """Close the written file unsynced: a ``syncfs`` of its file system stands for its fsync."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                raise UploadFailed(f"cannot commit {self._final}: {exc.strerror}") from None
            self._file = None

    def _place(self) -> None:
        """Give the written file its name (durable once its folder is synced)."""
        try:
            if self.overwrite:
                os.replace(self._tmp, self._final)
            elif not fscalls.rename_no_replace(self._tmp, self._final):
                # A hard link never replaces either: of two racing writers, one wins.
                os.link(self._tmp, self._final)
                os.unlink(self._tmp)
        except FileExistsError:
            raise UploadFailed(f"{self._final} already exists; not replaced (use --force)") from None
        except OSError as exc:
            raise UploadFailed(f"cannot commit {self._final}: {exc.strerror}") from None

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


class _EmptyFile(FileUpload):
    """An empty object (``_SUCCESS``): created under its own name at once.

    It has no content that a reader could see half-written, so it needs no
    temporary name, rename or fsync of its own: its folder's fsync makes
    the name and the inode durable together.
    """

    def _open(self) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            raise ValueError(f"{self.key}: an empty object takes no data")

    def _sync(self) -> None:
        pass

    def _place(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if self.overwrite else os.O_EXCL)
        try:
            os.close(self._in_folder(lambda: os.open(self._final, flags, 0o666)))
        except FileExistsError:
            raise UploadFailed(f"{self._final} already exists; not replaced (use --force)") from None
        except OSError as exc:
            raise UploadFailed(f"cannot commit {self._final}: {exc.strerror}") from None

    def _abort(self) -> None:
        pass


# Temporary names: the pid, a random tag drawn once (a reused pid cannot
# collide with a dead process's leftovers) and a counter.
_TEMP_TAG = secrets.token_hex(3)
_temp_numbers = itertools.count()
_opened = itertools.count()


def _temp_suffix() -> str:
    return f"{_TEMP_TAG}{next(_temp_numbers):x}"


def _no_check() -> None:
    """The precommit of objects no lease guards (what ``put`` writes)."""


class FileStore(Store):
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.root = Path(destination.prefix)
        self.root_name = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def url(self, key: str) -> str:
        return f"file://{os.path.join(self.root_name, key)}"  # what path() gives, without pathlib's parsing

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload:
        return FileUpload(self, key, precommit, overwrite)

    def put(self, key: str, data: bytes) -> None:
        """Small objects, atomically: temp file then rename."""
        failed = self.put_many([(key, data)])
        if failed:
            raise failed[key]

    def put_many(self, items: Sequence[tuple[str, bytes]], pool: Executor | None = None) -> dict[str, TrackerError]:
        """Every file written, then committed together (:func:`~tracker.store.filecommit.commit_files`); each renamed into place in order."""
        uploads: list[FileUpload] = []
        failed: dict[str, TrackerError] = {}
        for key, data in items:
            upload = (FileUpload if data else _EmptyFile)(self, key, _no_check, overwrite=True)
            try:
                upload._open()
                upload.write(data)
            except UploadFailed as exc:
                upload._abort_quietly()
                failed[key] = exc
                continue
            uploads.append(upload)
        failed.update(commit_files(uploads))
        return failed

    def commit_together(self, members: Sequence[Upload], pool: Executor | None) -> dict[str, BaseException]:
        return dict(commit_files([m for m in members if isinstance(m, FileUpload)]))

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UploadFailed(f"cannot read {self.path(key)}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(os.path.join(self.root_name, key))

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        if not os.path.isdir(os.path.join(self.root_name, prefix)):  # the common case, a dataset not begun: no Path
            return []
        base = self.path(prefix)
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def clean_stale(self, prefix: str, older_than: dt.timedelta, dates: Sequence[str] | None = None) -> int:
        """Hidden temporary files of data objects; with ``dates``, only in ``<prefix><db>/<table>/dt=<date>``.

        A whole walk visits every object ever stored under ``prefix`` (for a
        namespace a year old, millions of files); with ``dates`` the search
        reads the database and table folders and opens only those datasets.
        """
        base = self.path(prefix)
        if not base.is_dir():
            return 0
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for path in self._temp_files(base, dates):
            try:
                if STALE_CANDIDATE.search(path.name) and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
                    log.info("event=stale_temp_removed path=%s", path)
            except FileNotFoundError:  # its writer committed or removed it meanwhile
                continue
        return removed

    @staticmethod
    def _temp_files(base: Path, dates: Sequence[str] | None) -> Iterator[Path]:
        if dates is None:
            yield from base.rglob(".part-*.tmp-*")
            return
        # os.scandir, not Path.glob: a glob of a folder costs ~60 us, and
        # this looks into (tables x dates) folders, most of which do not exist.
        folders = [f"dt={date}" for date in dates]
        for db in _subdirs(str(base)):
            for table in _subdirs(db):
                for folder in folders:
                    try:
                        with os.scandir(os.path.join(table, folder)) as entries:
                            names = [e.path for e in entries if e.name.startswith(".part-") and ".tmp-" in e.name]
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    yield from map(Path, names)

    def read_stream(self, key: str) -> Iterator[bytes]:
        try:
            with open(self.path(key), "rb") as f:
                while chunk := f.read(READ_CHUNK):
                    yield chunk
        except OSError as exc:
            raise UploadFailed(f"cannot read {self.path(key)}: {exc.strerror}") from None


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
