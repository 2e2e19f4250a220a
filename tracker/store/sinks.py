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

Many small objects can commit as one :class:`CommitGroup`: each member
still runs its own precommit on leaving its ``with`` block, then waits for
the group, which commits the members only on its own clean exit, after one
shared check (one round trip to the master for all their leases).

The stores themselves: ``files`` (file://) and ``s3``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from concurrent.futures import Executor, Future
from typing import Callable, Iterator, Mapping, Protocol, Sequence, TypeVar

from tracker.config import Destination, S3Config
from tracker.errors import TrackerError
from tracker.store.layout import SUFFIXES

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

READ_CHUNK = 4 << 20

Precommit = Callable[[], None]


class Upload:
    """Base of the commit rule; subclasses supply open/write/commit/abort."""

    def __init__(self, key: str, precommit: Precommit, overwrite: bool) -> None:
        self.key = key
        self._precommit = precommit
        self.overwrite = overwrite
        self._group: CommitGroup | None = None  # set by CommitGroup.upload: commit with the group

    def __enter__(self) -> "Upload":
        self._open()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None:
            try:
                self._precommit()
                if self._group is not None:
                    self._group._hold(self)  # committed by the group, after its check
                else:
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

    def put_many(self, items: Sequence[tuple[str, bytes]], pool: Executor | None = None) -> dict[str, TrackerError]:
        """Small objects, each atomically; all in place and durable on return, except the ones returned, with why.

        No order among them is kept (on S3 they go up at once on ``pool``):
        what must be in place before another object appears is put first,
        in a call of its own.
        """
        def put(item: tuple[str, bytes]) -> TrackerError | None:
            try:
                self.put(*item)
            except TrackerError as exc:
                return exc
            return None

        return {key: error for (key, _), error in _each(put, items, pool) if error is not None}

    def commit_together(self, members: Sequence[Upload], pool: Executor | None) -> dict[str, BaseException]:
        """Commit the waiting members of a :class:`CommitGroup`; the ones that failed (each aborted), with why.

        A PUT is waiting rather than work: the members commit at once on ``pool``.
        """
        return {member.key: error for member, error in _each(_commit_member, members, pool) if error is not None}

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

    def clean_stale(self, prefix: str, older_than: dt.timedelta, dates: Sequence[str] | None = None) -> int:
        """Abort uploads of data objects under ``prefix`` started before ``older_than`` ago.

        What a killed tracker leaves: an open multipart upload (invisible, but
        billed) or a hidden temporary file.  ``dates`` (``YYYY-MM-DD``), when
        given, lets a store whose search costs as much as its whole history
        (a file tree) look only in the datasets of those dates.
        """
        raise NotImplementedError


class Uploads(Protocol):
    """Where a unit's object is uploaded: a :class:`Store`, or a :class:`CommitGroup` of one."""

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload: ...


# Checks every waiting member of a group at once; returns the keys refused, each with its error.
GroupCheck = Callable[[Sequence[str]], Mapping[str, BaseException]]


class CommitGroup:
    """Uploads that pass one shared check, then commit together.

    A member (from :meth:`upload`) runs its own precommit when its ``with``
    block ends cleanly and then waits here; one that fails aborts alone, as
    any upload does.  On the group's clean exit ``check`` is called once
    with the waiting keys; the keys it refuses are aborted and the others
    committed together (:meth:`Store.commit_together`: PUTs at once on
    ``pool``, files in phases so that few fsyncs wait).  If the group's
    body raises, or ``check`` does, every waiting member is aborted and the
    error propagates.  Afterwards ``committed`` holds the keys in place and
    ``failed`` the others' errors.

    With ``background``, a clean exit hands the check and the commits to
    that executor and returns at once (they wait on the master and on
    fsyncs, not on the caller): :meth:`wait` waits for them, and only then
    are ``committed`` and ``failed`` complete.  They still run only after
    the body ended cleanly, and the commits only after the check.
    """

    def __init__(
        self, store: "Store", check: GroupCheck, pool: Executor | None = None, background: Executor | None = None
    ) -> None:
        self.store = store
        self._check = check
        self._pool = pool
        self._background = background
        self._settled: Future | None = None
        self._waiting: list[Upload] = []
        self._lock = threading.Lock()
        self.committed: set[str] = set()
        self.failed: dict[str, BaseException] = {}

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload:
        member = self.store.upload(key, precommit, overwrite=overwrite, size_hint=size_hint)
        member._group = self
        return member

    def _hold(self, member: Upload) -> None:
        with self._lock:
            self._waiting.append(member)

    def __enter__(self) -> "CommitGroup":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if exc_type is not None:
            _abort_all(waiting)
            return False  # re-raise the original error
        if self._background is None:
            self._check_and_commit(waiting)
        else:
            self._settled = self._background.submit(self._check_and_commit, waiting)
        return False

    def wait(self) -> None:
        """Until the check and the commits ran, when they run in the background; raises what ``check`` raised."""
        if self._settled is not None:
            self._settled.result()

    def _check_and_commit(self, waiting: list[Upload]) -> None:
        try:
            refused = self._check([m.key for m in waiting]) if waiting else {}
        except BaseException:
            _abort_all(waiting)
            raise
        passed = []
        for member in waiting:
            if member.key in refused:
                member._abort_quietly()
                self.failed[member.key] = refused[member.key]
            else:
                passed.append(member)
        self._commit_all(passed)

    def _commit_all(self, members: list[Upload]) -> None:
        failed = self.store.commit_together(members, self._pool)
        self.failed.update(failed)
        self.committed.update(m.key for m in members if m.key not in failed)


def _each(step: Callable[[T], E | None], items: Sequence[T], pool: Executor | None) -> list[tuple[T, E | None]]:
    """``step`` of every item, with what it returned (an error, or None): at once on ``pool`` when given."""
    if pool is None or len(items) < 2:
        return [(item, step(item)) for item in items]
    return list(zip(items, pool.map(step, items)))


def _commit_member(member: Upload) -> BaseException | None:
    """Commit one waiting member; its error (it is then aborted), or None."""
    try:
        member._commit()
    except Exception as exc:
        member._abort_quietly()
        return exc
    return None


def _abort_all(members: list[Upload]) -> None:
    for member in members:
        member._abort_quietly()


# What tracker uploads: part-NNNNN.tsv plus a compression's suffix (layout.part_name).
_PART_SUFFIXES = "|".join(re.escape(s.removeprefix(".tsv")) for s in SUFFIXES.values() if s != ".tsv")
STALE_CANDIDATE = re.compile(rf"(^|/)\.?part-\d{{5}}\.tsv({_PART_SUFFIXES})?(\.tmp-\d+-[0-9a-f]+)?$")


def open_store(destination: Destination, s3: S3Config) -> Store:
    if destination.scheme == "s3":
        # Imported here: boto3 costs ~0.2 s of CPU at start, paid only by
        # the runs that use it.
        from tracker.store.s3 import S3Store

        return S3Store(destination, s3)
    from tracker.store.files import FileStore

    return FileStore(destination)
