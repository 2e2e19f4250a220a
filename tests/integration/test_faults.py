"""A several-hundred-MB table under streaming limits and under faults.

Every fault must leave no object under the table's keys, no multipart
upload open, nothing in outfile_dir (counting unlinked files still held
open) and no dump query running on the server.

No fault is timed against the dump: the test holds the dump where the fault
must land -- between two parts of its upload (the S3 proxy holds part 3 and
later, so parts 1 and 2 are stored and the upload is open) or, for a killed
query, before the query's first byte (a metadata lock holds it) -- so the
tests pass or fail the same way on a fast machine and a slow one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sandbox.faults import FaultProxy, part_number_at_least
from tests.integration.conftest import BIG_ROWS
from tests.integration.helpers import (
    Sampler,
    create_small_table,
    drop_unreplicated,
    held_dumps,
    held_table,
    outfile_bytes_on_disk,
    peak_rss,
    run_tracker,
    start_tracker,
    tagged_queries,
    wait_for,
    write_config,
)

MiB = 1 << 20


@pytest.fixture
def big_table(big_on_replica) -> str:
    return big_on_replica


def assert_nothing_left(replica, s3, bucket: str) -> None:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listed == [], [o["Key"] for o in listed]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert wait_for(lambda: not tagged_queries(replica), 5), tagged_queries(replica)
    assert wait_for(lambda: outfile_bytes_on_disk(replica) == 0, 5)
    assert list(replica.outfile_dir.iterdir()) == []


def s3_config(tmp_path, replica, bucket: str, endpoint: str):
    return write_config(tmp_path, replica, f"s3://{bucket}/snap", s3={"endpoint_url": endpoint})


def follow_windows(server, pid: int) -> list[tuple[int, int, int]]:
    """Of each OUTFILE tracker (``pid``) has a chunk of mapped right now:
    (bytes on disk, bytes the server wrote that tracker has not reached yet, size).

    Where tracker reads a file is the file offset of its mapping (in
    /proc/pid/maps, matched to the open file by inode); read first, then the
    file's size and blocks: the reader only moves on, so the later size
    never understates what is left.
    """
    prefix = str(server.outfile_dir)
    reading: dict[int, int] = {}  # inode -> lowest mapped offset
    try:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith(prefix):
                inode, offset = int(fields[4]), int(fields[2], 16)
                reading[inode] = min(offset, reading.get(inode, offset))
        fds = [fd for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd).startswith(prefix)]
    except OSError:
        return []
    windows = []
    for fd in fds:
        try:
            st = os.stat(fd)
        except OSError:
            continue
        if st.st_ino in reading:
            windows.append((st.st_blocks * 512, st.st_size - reading[st.st_ino], st.st_size))
    return windows


def test_large_table_streams_in_a_small_window(replica, moto_server, s3, bucket, tmp_path, big_table) -> None:
    """The follow source punches holes right behind its reader.

    What it guarantees is relative to the reader, not absolute: the disk
    holds what the server wrote that tracker has not read yet, plus less
    than one punch step (PUNCH_STEP, 4 MiB) behind the reader.  How much is
    unread depends on how fast tracker keeps up with the server (on a
    machine where tracker is slower the window grows), so that part is not
    asserted; the excess over it is, at every sample taken while tracker
    had a chunk mapped.
    """
    from tracker.dump.sources import PUNCH_STEP

    config = s3_config(tmp_path, replica, bucket, moto_server.endpoint_url)
    proc = start_tracker(config, "dump", big_table, "--date", "2026-11-01", env=moto_server.subprocess_env())
    rss = [0]
    samples: list[tuple[int, int, int]] = []

    def sample_window() -> int:
        windows = follow_windows(replica, proc.pid)
        samples.extend(windows)
        return max((on_disk - unread for on_disk, unread, _size in windows), default=0)

    def sample_rss() -> int:
        try:
            rss[0] = max(rss[0], peak_rss(proc.pid))
        except OSError:
            pass
        return 0

    with Sampler(sample_window) as excess, Sampler(sample_rss, interval=0.1):
        _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    # Not vacuous: samples caught tracker well into the file (the test is
    # about the bytes behind it), and some of the file was punched away.
    read = [size - unread for _disk, unread, size in samples]
    assert len(samples) >= 5 and max(read) > 8 * PUNCH_STEP, f"{len(samples)} samples, read up to {max(read, default=0)}"
    assert any(disk < size - 2 * PUNCH_STEP for disk, _unread, size in samples), "no hole was ever punched"
    # Per file: less than a punch step behind its reader, plus block rounding.
    assert excess.peak <= PUNCH_STEP + 1 * MiB, (
        f"{excess.peak / MiB:.1f} MiB on disk beyond what tracker had not read; (disk, unread, size): {samples[:20]}"
    )
    assert 0 < rss[0] < 300 * 1000 * 1000, f"peak RSS {rss[0] / 1e6:.0f} MB"
    db, table = big_table.split(".")
    key = f"snap/main/{db}/{table}/dt=2026-11-01/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["rows"] == BIG_ROWS
    assert manifest["raw_bytes"] > 300 * MiB
    part = s3.head_object(Bucket=bucket, Key=manifest["units"][0]["key"].replace("main/", "snap/main/", 1))
    assert part["ContentLength"] == manifest["units"][0]["bytes"]
    assert list(replica.outfile_dir.iterdir()) == []


def stored_parts(s3, bucket: str) -> int:
    """Parts stored so far of the bucket's one open multipart upload."""
    (upload,) = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return len(s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", []))


def finish(proc: subprocess.Popen, proxy: FaultProxy | None = None, timeout: float = 10) -> bytes:
    """Wait for the faulted tracker (status 1, no traceback) within ``timeout`` s; its stderr.

    Parts the proxy still holds are let go on, a batch at a time, while
    waiting: later parts are held again, so the upload can not finish unless
    tracker keeps going after the fault.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if proxy is not None:
            proxy.release_held()
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err.decode()
    assert b"Traceback" not in err
    return err


def test_killed_dump_query_commits_nothing(replica, moto_server, s3, bucket, tmp_path) -> None:
    table = create_small_table(replica)
    try:
        config = s3_config(tmp_path, replica, bucket, moto_server.endpoint_url)
        with held_table(replica, table):
            proc = start_tracker(config, "dump", table, "--date", "2026-11-01", env=moto_server.subprocess_env())
            try:
                assert wait_for(lambda: held_dumps(replica), 60), "the dump query never started"
                (query_id, _info), = held_dumps(replica)
                replica.sql(f"KILL QUERY {int(query_id)}")
                err = finish(proc)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert b"dump query failed: (1317)" in err.splitlines()[-1], err.decode()
        assert_nothing_left(replica, s3, bucket)
    finally:
        drop_unreplicated(replica, table.split(".")[0])


def test_s3_errors_mid_upload_abort_the_upload(replica, moto_server, s3, bucket, tmp_path, big_table) -> None:
    proxy = FaultProxy(moto_server.port, rule=part_number_at_least(3))
    proxy.start()
    try:
        config = s3_config(tmp_path, replica, bucket, proxy.endpoint_url)
        result = run_tracker(config, "dump", big_table, "--date", "2026-11-01", env=moto_server.subprocess_env())
    finally:
        proxy.stop()
    assert result.returncode == 1, result.stderr.decode()
    assert b"InternalError" in result.stderr and b"Traceback" not in result.stderr
    assert proxy.failed >= 2, "the failing part was not retried"
    assert_nothing_left(replica, s3, bucket)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_process_commits_nothing(replica, moto_server, s3, bucket, tmp_path, big_table, sig) -> None:
    """The signal lands while parts 1-2 are stored and part 3 on is held: mid-upload, well into the table."""
    proxy = FaultProxy(moto_server.port, hold=part_number_at_least(3))
    proxy.start()
    try:
        config = s3_config(tmp_path, replica, bucket, proxy.endpoint_url)
        proc = start_tracker(config, "dump", big_table, "--date", "2026-11-01", env=moto_server.subprocess_env())
        try:
            assert proxy.wait_held(1, timeout=120), "no part 3 was ever sent"
            assert wait_for(lambda: stored_parts(s3, bucket) == 2, 60), stored_parts(s3, bucket)
            proc.send_signal(sig)
            err = finish(proc, proxy)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        proxy.stop()
    assert err.decode().splitlines()[-1] == "tracker: error: interrupted; nothing unfinished was committed", err.decode()
    assert_nothing_left(replica, s3, bucket)
