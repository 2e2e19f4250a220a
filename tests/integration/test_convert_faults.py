"""``tracker convert`` under faults: SIGKILL mid-dataset, S3 errors, two converters of one dataset.

Deterministic: a converter is held inside an upload by the fault proxy (its
request parked until the test lets it go), never raced against a clock.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sandbox.faults import FaultProxy, Request, puts_of
from tests.integration.helpers import run_tracker, start_tracker, wait_for, write_config
from tracker.db import qualified
from tracker.store.layout import encode_segment

DAY = "2026-11-03"
UNITS = 4


class Hold:
    """A proxy rule that parks the first PUT of ``name`` until ``released``.

    Then it forwards the request, or with ``drop`` answers 500 without
    forwarding: the request of a client killed before it finished never
    reaches the store (the proxy has read the whole body by then, which the
    store would not have).
    """

    def __init__(self, name: str, drop: bool = False) -> None:
        self.name = name
        self.drop = drop
        self.reached = threading.Event()
        self.released = threading.Event()
        self._taken = False
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> bool:
        if request.method == "PUT" and request.path.endswith(self.name):
            with self._lock:
                first, self._taken = not self._taken, True
            if first:
                self.reached.set()
                self.released.wait(120)
                return self.drop
        return False


def chunked_table(master, replica_set, db: str) -> str:
    """A table of about UNITS MB that dumps as several key-range units (chunk_mb 1)."""
    table = "events"
    master.sql(f"CREATE TABLE {qualified(db, table)} (id INT PRIMARY KEY, body VARBINARY(1000), note VARCHAR(20))")
    master.sql(
        f"INSERT INTO {qualified(db, table)} SELECT seq, RANDOM_BYTES(900), CONCAT('n', seq) FROM `{db}`.seq_1_to_{UNITS * 1000}"
    )
    master.sql(f"ANALYZE TABLE {qualified(db, table)}")  # fresh size estimates: the dump splits it
    replica_set.sync()
    return table


def setup(tmp_path: Path, replica, master, replica_set, fresh_db, bucket: str, endpoint: str, lease_seconds: int = 300):
    dumps = tmp_path / "dumps"
    table = chunked_table(master, replica_set, fresh_db)
    dump_config = write_config(tmp_path, replica, f"file://{dumps}", chunk_mb=1)
    result = run_tracker(dump_config, "dump", f"{fresh_db}.{table}", "--date", DAY)
    assert result.returncode == 0, result.stderr.decode()
    manifest = json.loads((dumps / "main" / encode_segment(fresh_db) / table / f"dt={DAY}" / "manifest.json").read_text())
    assert len(manifest["units"]) >= 3, manifest["units"]
    data = {
        "namespace": "main",
        "destination": f"file://{dumps}",
        "s3": {"endpoint_url": endpoint},
        "locks": {"lease_seconds": lease_seconds},
        "warehouse": {"location": f"s3://{bucket}/wh"},
    }
    config = tmp_path / f"convert-{endpoint.rsplit(':', 1)[1]}.yaml"
    config.write_text(yaml.safe_dump(data))
    prefix = f"wh/main/{encode_segment(fresh_db)}/{table}/dt={DAY}/"
    return config, table, prefix


def listing(s3, bucket: str, prefix: str) -> dict[str, str]:
    """Key name -> ETag of what is under the dataset's folder."""
    contents = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: o["ETag"] for o in contents}


def read_back(s3, bucket: str, prefix: str) -> pa.Table:
    names = sorted(n for n in listing(s3, bucket, prefix) if n.endswith(".parquet"))
    tables = [pq.read_table(pa.BufferReader(s3.get_object(Bucket=bucket, Key=prefix + n)["Body"].read())) for n in names]
    return pa.concat_tables(tables).sort_by("id")


def assert_server_values(replica, db: str, table: str, data: pa.Table) -> None:
    rows = replica.sql(f"SELECT id, body, note FROM {qualified(db, table)} ORDER BY id")
    assert list(zip(data.column("id").to_pylist(), data.column("body").to_pylist(), data.column("note").to_pylist())) == [
        tuple(r) for r in rows
    ]
    assert set(data.column("dt").to_pylist()) == {DAY}


def test_sigkill_mid_dataset_then_rerun_reuses_committed_files(
    master, replica, replica_set, fresh_db, moto_server, s3, bucket, tmp_path
) -> None:
    hold = Hold("part-00002.parquet", drop=True)
    proxy = FaultProxy(moto_server.port, rule=hold)
    proxy.start()
    try:
        proxy_url = proxy.endpoint_url
        config, table, prefix = setup(tmp_path, replica, master, replica_set, fresh_db, bucket, proxy_url)
        proc = start_tracker(config, "convert", "--date", DAY, env=moto_server.subprocess_env())
        assert hold.reached.wait(120), "the converter never reached part 2"
        before = listing(s3, bucket, prefix)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        hold.released.set()
    finally:
        hold.released.set()
        proxy.stop()
    # Parts 0 and 1 were committed whole; nothing else under a final name, no _SUCCESS.
    after = listing(s3, bucket, prefix)
    assert sorted(n for n in after if not n.startswith("_lease")) == ["part-00000.parquet", "part-00001.parquet"]
    assert after == before

    direct = tmp_path / "direct.yaml"
    direct.write_text(config.read_text().replace(proxy_url, moto_server.endpoint_url))
    result = run_tracker(direct, "convert", "--date", DAY, env=moto_server.subprocess_env())
    assert result.returncode == 0, result.stderr.decode()
    assert b"event=convert_files_reused" in result.stderr and b"files=2" in result.stderr
    final = listing(s3, bucket, prefix)
    assert final["part-00000.parquet"] == before["part-00000.parquet"]  # reused, not rewritten
    assert final["part-00001.parquet"] == before["part-00001.parquet"]
    assert "_SUCCESS" in final and not [n for n in final if n.startswith("_lease")]
    assert not s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads")
    assert_server_values(replica, fresh_db, table, read_back(s3, bucket, prefix))


def test_s3_errors_fail_the_dataset_with_one_line_then_rerun_completes(
    master, replica, replica_set, fresh_db, moto_server, s3, bucket, tmp_path
) -> None:
    proxy = FaultProxy(moto_server.port, rule=puts_of("part-00001.parquet"))
    proxy.start()
    try:
        proxy_url = proxy.endpoint_url
        config, table, prefix = setup(tmp_path, replica, master, replica_set, fresh_db, bucket, proxy_url)
        result = run_tracker(config, "convert", "--date", DAY, env=moto_server.subprocess_env())
    finally:
        proxy.stop()
    assert result.returncode == 1
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("tracker: error:")]
    assert len(errors) == 1 and f"convert {fresh_db}.{table} dt={DAY}" in errors[0] and "part-00001.parquet" in errors[0], errors
    assert b"Traceback" not in result.stderr
    names = listing(s3, bucket, prefix)
    assert "_SUCCESS" not in names and "part-00001.parquet" not in names
    assert not s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads")

    direct = tmp_path / "direct.yaml"
    direct.write_text(config.read_text().replace(proxy_url, moto_server.endpoint_url))
    again = run_tracker(direct, "convert", "--date", DAY, env=moto_server.subprocess_env())
    assert again.returncode == 0, again.stderr.decode()
    assert "_SUCCESS" in listing(s3, bucket, prefix)
    assert_server_values(replica, fresh_db, table, read_back(s3, bucket, prefix))


def test_concurrent_converters_never_publish_a_mix(
    master, replica, replica_set, fresh_db, moto_server, s3, bucket, tmp_path
) -> None:
    """A holds the lease (parked in an upload): B is told it is busy.  A frozen past its lease: B takes over and
    publishes; A, resumed, commits nothing (its late file write is refused, its lease is gone)."""
    hold = Hold("part-00001.parquet")
    proxy = FaultProxy(moto_server.port, rule=hold)
    proxy.start()
    try:
        config, table, prefix = setup(tmp_path, replica, master, replica_set, fresh_db, bucket, proxy.endpoint_url, lease_seconds=3)
        direct = tmp_path / "direct.yaml"
        direct.write_text(config.read_text().replace(proxy.endpoint_url, moto_server.endpoint_url))
        a = start_tracker(config, "convert", "--date", DAY, env=moto_server.subprocess_env())
        assert hold.reached.wait(60), "the converter never reached part 1"
        busy = run_tracker(direct, "convert", "--date", DAY, env=moto_server.subprocess_env())
        assert busy.returncode == 0, busy.stderr.decode()
        assert f"busy {fresh_db}.{table} dt={DAY}: being converted by host".encode() in busy.stdout
        assert "_SUCCESS" not in listing(s3, bucket, prefix)

        a.send_signal(signal.SIGSTOP)  # A's lease can no longer be renewed
        assert wait_for(lambda: _lease_expired(s3, bucket, prefix), 30)
        b = run_tracker(direct, "convert", "--date", DAY, env=moto_server.subprocess_env())
        assert b.returncode == 0, b.stderr.decode()
        assert f"done {fresh_db}.{table} dt={DAY}".encode() in b.stdout
        published = listing(s3, bucket, prefix)
        assert "_SUCCESS" in published

        hold.released.set()
        a.send_signal(signal.SIGCONT)
        _, a_err = a.communicate(timeout=60)
    finally:
        hold.released.set()
        proxy.stop()
    assert a.returncode == 1, a_err.decode()
    assert b"Traceback" not in a_err
    a_errors = [line for line in a_err.decode().splitlines() if line.startswith("tracker: error:")]
    # A's parked write reaches the store after B published: refused (If-None-Match), nothing replaced.
    assert len(a_errors) == 1 and "part-00001.parquet" in a_errors[0] and "PreconditionFailed" in a_errors[0], a_errors
    assert listing(s3, bucket, prefix) == {k: v for k, v in published.items()}  # B's files, untouched
    assert_server_values(replica, fresh_db, table, read_back(s3, bucket, prefix))


def _lease_expired(s3, bucket: str, prefix: str) -> bool:
    import time

    leases = sorted(n for n in listing(s3, bucket, prefix) if n.startswith("_lease-"))
    if not leases:
        return False
    doc = json.loads(s3.get_object(Bucket=bucket, Key=prefix + leases[-1])["Body"].read())
    return doc["expires"] < time.time()
