"""The FIFO source against a writer that behaves like Percona Server.

MariaDB refuses OUTFILE into an existing FIFO (error 1086), so the server
side is played by a thread that does what the server does: opens the pipe
for writing (blocking until a reader exists), writes OUTFILE bytes in
blocks, closes, and only then reports the statement's result.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import lz4.frame
import pytest

from tracker.config import parse_destination
from tracker.errors import DumpFailed, UploadFailed
from tracker.dump.outfile import QueryOutcome
from tracker.dump.pipeline import run_unit
from tracker.store.files import FileStore
from tracker.dump.sources import FifoSource


class FakeServerQuery:
    """Plays the server's side of ``SELECT ... INTO OUTFILE '<fifo>'``."""

    def __init__(self, path: Path, data: bytes, *, fail_before_open: bool = False, rows: int = 3, delay: float = 0.0) -> None:
        self.path = path
        self.data = data
        self.fail_before_open = fail_before_open
        self.rows = rows
        self.delay = delay
        self.killed = threading.Event()
        self._outcome = QueryOutcome()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            if self.fail_before_open:
                time.sleep(0.2)
                raise RuntimeError("(1146) Table 'd.t' doesn't exist")
            fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader exists, like the server
            try:
                for i in range(0, len(self.data), 65536):
                    if self.killed.is_set():
                        raise RuntimeError("(1317) Query execution was interrupted")
                    os.write(fd, self.data[i : i + 65536])
                    if self.delay:
                        time.sleep(self.delay)
            finally:
                os.close(fd)
            self._outcome.rows = self.rows
        except OSError as exc:
            self._outcome.error = RuntimeError(f"(1) Error writing file (errno {exc.errno})")
        except BaseException as exc:
            self._outcome.error = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def outcome(self) -> QueryOutcome:
        return self._outcome

    def describe_error(self) -> str:
        return str(self._outcome.error)

    def stop(self, timeout: float = 30.0) -> None:
        self.killed.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "server writer left blocked"


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    path = tmp_path / "outfile"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(parse_destination(f"file://{tmp_path / 'dest'}"))


def escaped_payload(size: int) -> tuple[bytes, bytes]:
    """OUTFILE bytes with escaped NULs, and what tracker must store."""
    raw = (b"row\\0with\\\\0nul\t\\N\n" * (size // 20 + 1))[:size]
    raw = raw[: raw.rfind(b"\n") + 1]
    return raw, raw.replace(b"\\\\0", b"\x01").replace(b"\\0", b"\x00").replace(b"\x01", b"\\\\0")


def test_streams_through_pipeline(outdir: Path, store: FileStore) -> None:
    data, expected = escaped_payload(5 << 20)
    path = outdir / "u.fifo"
    query = FakeServerQuery(path, data)
    stats = run_unit(FifoSource(query, path, threading.Event()), store, "k/part.lz4", compression="lz4", overwrite=False)
    assert stats.rows == 3
    assert lz4.frame.decompress(store.get("k/part.lz4")) == expected
    assert stats.raw_bytes == len(expected)
    assert list(outdir.iterdir()) == []


def test_query_failing_before_open_does_not_block(outdir: Path, store: FileStore) -> None:
    path = outdir / "u.fifo"
    query = FakeServerQuery(path, b"", fail_before_open=True)
    started = time.monotonic()
    with pytest.raises(DumpFailed, match="1146"):
        run_unit(FifoSource(query, path, threading.Event()), store, "k/part.lz4", compression="lz4", overwrite=False)
    assert time.monotonic() - started < 5
    assert store.list("") == []
    assert list(outdir.iterdir()) == []


class FailingStore(FileStore):
    """A destination whose writes fail after a few MiB, like a full disk."""

    def upload(self, key, precommit, *, overwrite, size_hint=0):
        upload = super().upload(key, precommit, overwrite=overwrite)
        written = [0]
        original = upload.write

        def write(data):
            written[0] += len(data)
            if written[0] > (2 << 20):
                raise UploadFailed("injected write failure")
            original(data)

        upload.write = write
        return upload


def test_downstream_failure_unblocks_the_server(outdir: Path, tmp_path: Path) -> None:
    store = FailingStore(parse_destination(f"file://{tmp_path / 'dest'}"))
    data, _ = escaped_payload(32 << 20)
    path = outdir / "u.fifo"
    query = FakeServerQuery(path, data)
    with pytest.raises(UploadFailed, match="injected"):
        run_unit(FifoSource(query, path, threading.Event()), store, "k/part.tsv", compression="none", overwrite=False)
    # The writer ended (EPIPE or kill) instead of blocking on a full pipe.
    assert query.done()
    assert query.outcome().error is not None
    assert store.list("") == []
    assert not any(p.name.startswith(".") for p in (tmp_path / "dest").rglob("*"))
    assert list(outdir.iterdir()) == []


def test_cancel_stops_promptly(outdir: Path, store: FileStore) -> None:
    from tracker.errors import Cancelled

    cancel = threading.Event()
    path = outdir / "u.fifo"
    query = FakeServerQuery(path, b"x\n" * (4 << 20), delay=0.01)
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        run_unit(FifoSource(query, path, cancel), store, "k/part.lz4", compression="lz4", overwrite=False)
    assert time.monotonic() - started < 5
    assert store.list("") == []
    assert list(outdir.iterdir()) == []


