"""A master or a store that stops answering without closing the connection.

The fault is a TCP blackhole (sandbox/blackhole.py) between the run and the
peer: it forwards until the test darkens it, then reads and drops
everything and never answers or closes -- only tracker's own timeouts can
end its waits.  The run's unit is held on the replica (``held_table``), so
the fault strikes at a known moment: while the unit is in flight.  The run
must exit 1 within a bound derived from its settings (README, "Silent
faults"), commit nothing, and leave the unit to another replica, which
takes the lapsed lease over and finishes the table.
"""

from __future__ import annotations

import time

import lz4.frame

from sandbox.blackhole import Blackhole
from tests.integration.helpers import (
    TRACKER_PASSWORD,
    held_dumps,
    held_table,
    run_tracker,
    s3_env,
    start_tracker,
    wait_for,
    write_config,
)
from tracker.db import qualified

LEASE = 6  # seconds: small, to keep the test fast
DATE = "2026-11-03"
ROWS = 50


def _table(master, replica_set, db: str) -> list[str]:
    """A replicated table ``db.t``; its rows as the dump's text lines."""
    master.sql(f"CREATE TABLE {qualified(db, 't')} (id INT PRIMARY KEY, v VARCHAR(40))")
    master.sql(f"INSERT INTO {qualified(db, 't')} VALUES " + ", ".join(f"({i}, MD5({i}))" for i in range(1, ROWS + 1)))
    replica_set.sync()
    return [f"{i}\t{v}" for i, v in master.sql(f"SELECT id, v FROM {qualified(db, 't')} ORDER BY id")]


def _config(tmp_path, server, dest, db: str, **extra):
    return write_config(
        tmp_path,
        server,
        dest if isinstance(dest, str) else f"file://{dest}",
        namespace=db,
        workers=1,
        retries=0,
        locks={"lease_seconds": LEASE},
        tables={"include": [rf"{db}\.t"]},
        replication={"wait_seconds": 30, "poll_seconds": 1},
        run_lock_dir=str(tmp_path),
        **extra,
    )


def _lease_lapsed(master, db: str) -> bool:
    rows = master.sql(
        "SELECT COUNT(*) FROM tracker.claims WHERE db = %s AND state = 'active' AND expires_at >= NOW(6)", (db,)
    )
    return rows[0][0] == 0


def test_master_that_stops_answering(master, replica, replica2, replica_set, fresh_db, tmp_path) -> None:
    lines = _table(master, replica_set, fresh_db)
    dest = tmp_path / "dest"
    proxy = Blackhole(master.port).start()
    try:
        via_proxy = {"host": "127.0.0.1", "port": proxy.port, "user": "tracker", "password": TRACKER_PASSWORD}
        config = _config(tmp_path, replica, dest, fresh_db, master=via_proxy)
        with held_table(replica, f"{fresh_db}.t"):
            proc = start_tracker(config, "run", "--date", DATE)
            try:
                assert wait_for(lambda: len(held_dumps(replica)) == 1, 60), "the unit never reached the server"
                proxy.go_dark()
                darkened = time.monotonic()
                _out, err = proc.communicate(timeout=LEASE * 3 + 30)
                took = time.monotonic() - darkened
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        proxy.stop()
    log = err.decode()
    assert proc.returncode == 1, log
    # Bound (README): detection within lease/3 + 2 * lease/3, the release
    # that fails as fast, and start-up noise -- far below three leases.
    assert took < LEASE * 3 + 10, (took, log)
    assert "event=lease_lost" in log and "Traceback" not in log, log
    assert not (dest / fresh_db / fresh_db / "t").exists() or not any((dest / fresh_db / fresh_db / "t").rglob("part-*")), log
    # Nothing released the claim (the master was unreachable): it lapses.
    assert wait_for(lambda: _lease_lapsed(master, fresh_db), LEASE + 10)
    again = run_tracker(_config(tmp_path, replica2, dest, fresh_db), "run", "--date", DATE)
    assert again.returncode == 0, again.stderr.decode()
    table_dir = dest / fresh_db / fresh_db / "t" / f"dt={DATE}"
    assert (table_dir / "_SUCCESS").exists()
    text = lz4.frame.decompress((table_dir / "part-00000.tsv.lz4").read_bytes()).decode()
    assert text.splitlines() == lines


S3_TIMEOUT = 1  # s3.read_timeout_seconds in the test


def test_store_that_stops_answering(master, replica, replica2, replica_set, fresh_db, moto_server, s3, bucket, tmp_path) -> None:
    lines = _table(master, replica_set, fresh_db)
    dest = f"s3://{bucket}/snap"
    env = s3_env(moto_server)
    proxy = Blackhole(moto_server.port).start()
    try:
        s3_via_proxy = {"endpoint_url": f"http://127.0.0.1:{proxy.port}", "read_timeout_seconds": S3_TIMEOUT}
        config = _config(tmp_path, replica, dest, fresh_db, s3=s3_via_proxy)
        with held_table(replica, f"{fresh_db}.t") as release:
            proc = start_tracker(config, "run", "--date", DATE, env=env)
            try:
                assert wait_for(lambda: len(held_dumps(replica)) == 1, 60), "the unit never reached the server"
                proxy.go_dark()  # the unit's upload comes next, into the dark
                darkened = time.monotonic()
                release()
                _out, err = proc.communicate(timeout=300)
                took = time.monotonic() - darkened
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        proxy.stop()
    log = err.decode()
    assert proc.returncode == 1, log
    # Bound (README): 6 attempts of read_timeout_seconds each plus botocore's
    # backoff (at most 2+4+8+16+20 s) for the one request the unit waits on.
    assert took < 6 * S3_TIMEOUT + 50 + 10, (took, log)
    assert "Traceback" not in log, log
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"snap/{fresh_db}/").get("Contents", [])
    assert not [o["Key"] for o in listed if "/part-" in o["Key"]], listed
    # The failed unit's claim was released (the master answers): another replica takes it at once.
    assert _lease_lapsed(master, fresh_db)
    again = run_tracker(_config(tmp_path, replica2, dest, fresh_db, s3={"endpoint_url": moto_server.endpoint_url}), "run", "--date", DATE, env=env)
    assert again.returncode == 0, again.stderr.decode()
    prefix = f"snap/{fresh_db}/{fresh_db}/t/dt={DATE}"
    s3.head_object(Bucket=bucket, Key=f"{prefix}/_SUCCESS")
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/part-00000.tsv.lz4")["Body"].read()
    assert lz4.frame.decompress(body).decode().splitlines() == lines
