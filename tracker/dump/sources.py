"""Sources: receive the bytes ``SELECT ... INTO OUTFILE`` writes, as they come.

Two ways, neither of which stages the table on disk:

* :class:`FollowSource` (stock MySQL and MariaDB, which refuse to write into
  an existing file): the server creates a regular file; we open it as soon
  as it appears, unlink it so nothing is left behind whatever happens next,
  read it as it grows and punch holes behind the reader, so the disk holds
  only a small window.  The query's own success is the end-of-data signal.
* :class:`FifoSource` (Percona Server): we create a named pipe and the server
  writes into it; the pipe's back-pressure paces the server.

A source owns its query: it starts it once the target is ready and, on
exit, stops it if it still runs and removes every file it made.  Chunks are
memoryviews valid until the next chunk is asked for (the pipeline consumes
each before reading the next): read-only maps of the followed file, or a
reused writable buffer for the pipe -- no allocation per chunk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import mmap
import os
import select
import threading
import time
from pathlib import Path
from typing import Iterator, Protocol

from tracker.db import error_code
from tracker.errors import Cancelled, DumpFailed  # noqa: F401  (Cancelled: re-exported)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# Punch in steps this large: fewer syscalls, and a window well below the
# 64 MiB the disk may hold.
PUNCH_STEP = 4 << 20
# How long to wait for a full chunk before taking what is there, so that a
# slow query still streams.
PARTIAL_AFTER_SECS = 0.05
POLL_SECS = 0.005
# A file the query has finished, this small, is read in one go rather than mapped.
SMALL_FILE = 256 << 10

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_F_SETPIPE_SZ = 1031

# Server errors worth another try of the unit: lock wait timeout, deadlock.
# A killed query (1317, 1927) means a person or `tracker kill` wants it
# stopped, and a full disk (3, errno 28) will not pass by itself.
TRANSIENT_ERRORS = frozenset({1205, 1213})


class RunningQuery(Protocol):
    """What a source needs of the query producing its bytes."""

    def start(self) -> None: ...
    def done(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def stop(self, timeout: float = 30.0) -> None: ...
    def describe_error(self) -> str: ...
    def outcome(self): ...


class Source(Protocol):
    def __enter__(self) -> "Source": ...
    def __exit__(self, *exc: object) -> None: ...
    def chunks(self) -> Iterator[memoryview]: ...
    def rows(self) -> int: ...


class _QuerySource:
    """Shared life cycle: start the query, report its result, always clean up."""

    def __init__(self, query: RunningQuery, path: str | Path, cancel: threading.Event, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.query = query
        self.path = path
        self.cancel = cancel
        self.chunk_bytes = chunk_bytes
        self._fd: int | None = None

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("stopped by request before the unit completed")

    def rows(self) -> int:
        """The query's row count once it succeeded; ``DumpFailed`` otherwise."""
        while not self.query.wait(0.2):
            self._check_cancel()
        outcome = self.query.outcome()
        if outcome.error is not None:
            raise DumpFailed(
                f"dump query failed: {self.query.describe_error()}",
                retryable=error_code(outcome.error) in TRANSIENT_ERRORS,
            )
        return int(outcome.rows or 0)

    def _remove_path(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("event=cleanup_failed path=%s error=%s", self.path, exc.strerror)


# --- follow ------------------------------------------------------------------


def _load_fallocate():
    # The running process's own symbols: libc is always there, and
    # ctypes.util.find_library would spawn ldconfig/gcc on every start.
    libc = ctypes.CDLL(None, use_errno=True)
    fallocate = libc.fallocate
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate.restype = ctypes.c_int
    return fallocate


_fallocate = _load_fallocate()


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the blocks of ``[offset, offset+length)``; the size stays."""
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class FollowSource(_QuerySource):
    """Follow the regular file a stock server writes, freeing what was read."""

    def __enter__(self) -> "FollowSource":
        self.query.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Stop the server first so it cannot recreate or extend the file.
        self.query.stop()
        if self._fd is not None:  # opened, and so already unlinked
            os.close(self._fd)
            self._fd = None
            return
        self._remove_path()

    def _open_when_created(self) -> int | None:
        """Open the file once the server created it; None if it never will.

        Each look waits a moment for the query's answer first: a small
        table's comes within a millisecond, and then one open finds the
        whole file, where looking first cost a failed open and a poll more
        per table; a large one's file is open at most ``POLL_SECS`` later.
        """
        while True:
            self._check_cancel()
            finished = self.query.wait(POLL_SECS)
            try:
                # O_RDWR: hole punching needs a writable descriptor.
                return os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if finished:
                    return None
            except PermissionError:
                raise DumpFailed(
                    f"cannot open {self.path} for reading and hole punching",
                    hint="run tracker as the mysql user or root, or give it write access to outfile_dir",
                ) from None

    def chunks(self) -> Iterator[memoryview]:
        fd = self._open_when_created()
        if fd is None:
            return
        self._fd = fd
        # Unlinked, the file vanishes with its last descriptor: a crash of
        # tracker or the server leaves nothing in outfile_dir.
        self._remove_path()
        yield from self._follow(fd)

    def _follow(self, fd: int) -> Iterator[memoryview]:
        offset = punched = 0
        waiting_since: float | None = None
        while True:
            self._check_cancel()
            # Read the flag before the size: if the query had finished then,
            # the size we see next is final.
            finished = self.query.done()
            available = os.fstat(fd).st_size - offset
            if available <= 0:
                if finished:
                    return
                self.query.wait(POLL_SECS)
                continue
            if available < self.chunk_bytes and not finished:
                now = time.monotonic()
                waiting_since = waiting_since or now
                if now - waiting_since < PARTIAL_AFTER_SECS:
                    self.query.wait(POLL_SECS)
                    continue
            waiting_since = None
            size = min(available, self.chunk_bytes)
            if finished and offset == 0 and size == available and size <= SMALL_FILE:
                # A small table's whole file: one read costs less than a map.
                yield memoryview(os.pread(fd, size, 0))
                return
            with _mapped(fd, offset, size) as view:
                yield view
            offset += size
            if offset - punched >= PUNCH_STEP:
                end = offset - offset % 4096
                punch_hole(fd, punched, end - punched)
                punched = end


@contextlib.contextmanager
def _mapped(fd: int, offset: int, size: int) -> Iterator[memoryview]:
    """A read-only view of ``[offset, offset+size)`` of the file, mapped.

    Mapping instead of reading saves the copy out of the page cache: the
    un-escaper reads the mapping and writes its output once.  The range is
    unmapped before anything punches it.
    """
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    mapping = mmap.mmap(fd, offset + size - start, access=mmap.ACCESS_READ, offset=start)
    view = memoryview(mapping)[offset - start :]
    try:
        yield view
    finally:
        view.release()
        mapping.close()


# --- fifo --------------------------------------------------------------------


class FifoSource(_QuerySource):
    """Read the named pipe Percona Server writes OUTFILE into."""

    def __enter__(self) -> "FifoSource":
        os.mkfifo(self.path, 0o600)
        try:
            # The server, another user, opens it for writing only.
            os.chmod(self.path, 0o622)
            # Non-blocking: a blocking open would wait forever if the query
            # fails before the server opens its end.  Before any writer has
            # connected, poll() reports nothing (no HUP), so we wait on the
            # pipe and on the query at once.
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.fcntl(self._fd, _F_SETPIPE_SZ, self.chunk_bytes)
            except OSError:
                pass  # a small pipe is slower, not wrong
            self.query.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # Close our end first: a server blocked writing into a full pipe gets
        # EPIPE and ends its statement; only then can KILL QUERY take effect.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.query.stop()
        self._remove_path()

    def chunks(self) -> Iterator[memoryview]:
        assert self._fd is not None
        fd = self._fd
        buf = memoryview(bytearray(self.chunk_bytes))
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        while True:
            self._check_cancel()
            if not poller.poll(50):
                if self.query.done():
                    # The query ended without ever writing (it failed before
                    # opening the pipe, or wrote nothing and closed).
                    tail = _drain_nonblocking(fd, self.chunk_bytes)
                    if tail:
                        yield memoryview(tail)
                    return
                continue
            try:
                n = os.readv(fd, [buf])
            except BlockingIOError:
                continue
            if n == 0:
                return  # every writer closed: end of data
            yield buf[:n]


def _drain_nonblocking(fd: int, chunk_bytes: int) -> bytearray:
    out = bytearray()
    while True:
        try:
            data = os.read(fd, chunk_bytes)
        except BlockingIOError:
            return out
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return out
            raise
        if not data:
            return out
        out += data
