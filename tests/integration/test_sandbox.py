"""Smoke tests for the harness itself: if these fail, no tracker test can be trusted."""

from __future__ import annotations

import uuid

import pymysql
import pytest
from botocore.exceptions import ClientError

from sandbox import TRACKER_PASSWORD, TRACKER_USER, MariaDB, ReplicaSet
from sandbox.s3 import S3Client

ER_FILE_EXISTS_ERROR = 1086
MIB = 1024 * 1024


def _make_table(master: MariaDB, db: str) -> None:
    master.sql(f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY, name VARCHAR(32)) ENGINE=InnoDB")
    master.sql(f"INSERT INTO `{db}`.t VALUES (1, 'one'), (2, 'tab\\there')")


def test_master_write_reaches_both_replicas(
    replica_set: ReplicaSet, master: MariaDB, replica: MariaDB, replica2: MariaDB, fresh_db: str
) -> None:
    _make_table(master, fresh_db)
    replica_set.sync()
    expected = [(1, "one"), (2, "tab\there")]
    for db in (replica, replica2):
        assert db.sql(f"SELECT id, name FROM `{fresh_db}`.t ORDER BY id") == expected


def test_replicas_use_gtid_and_are_read_only(replica_set: ReplicaSet) -> None:
    for db in replica_set.replicas:
        status = db.slave_status()
        assert status is not None
        assert status["Slave_IO_Running"] == "Yes"
        assert status["Slave_SQL_Running"] == "Yes"
        assert status["Using_Gtid"] == "Slave_Pos"
        assert db.sql("SELECT @@global.read_only") == [(1,)]
    assert replica_set.master.slave_status() is None


def test_tracker_account_replicated_with_grants(replica: MariaDB) -> None:
    rows = replica.sql("SELECT CURRENT_USER()", user=TRACKER_USER, password=TRACKER_PASSWORD)
    assert rows == [("tracker@127.0.0.1",)]  # the most specific host entry wins
    (grants,) = replica.sql("SHOW GRANTS FOR 'tracker'@'127.0.0.1'")[0]
    for privilege in ("FILE", "RELOAD", "BINLOG MONITOR", "SLAVE MONITOR", "LOCK TABLES"):
        assert privilege in grants


def test_outfile_on_replica_as_tracker(
    replica_set: ReplicaSet, master: MariaDB, replica: MariaDB, fresh_db: str
) -> None:
    _make_table(master, fresh_db)
    replica_set.sync()
    target = replica.outfile_dir / f"{uuid.uuid4().hex}.tsv"
    query = f"SELECT id, name FROM `{fresh_db}`.t ORDER BY id INTO OUTFILE %s"

    conn = replica.connect(user=TRACKER_USER, password=TRACKER_PASSWORD)
    try:
        with conn.cursor() as cur:
            cur.execute(query, (str(target),))
            assert target.read_bytes() == b"1\tone\n2\ttab\\\there\n"
            with pytest.raises(pymysql.err.MySQLError) as excinfo:
                cur.execute(query, (str(target),))
            assert excinfo.value.args[0] == ER_FILE_EXISTS_ERROR
    finally:
        conn.close()
        target.unlink(missing_ok=True)


def _upload_parts(s3: S3Client, bucket: str, key: str, parts: list[bytes]) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
        for n, body in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]},
    )


def test_moto_rejects_small_non_final_part(s3: S3Client, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        _upload_parts(s3, bucket, "small", [b"a" * 1024, b"b" * 1024])
    assert excinfo.value.response["Error"]["Code"] == "EntityTooSmall"


def test_moto_accepts_5mib_part_then_small_last(s3: S3Client, bucket: str) -> None:
    first, last = b"a" * (5 * MIB), b"tail"
    _upload_parts(s3, bucket, "big", [first, last])
    body = s3.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert body == first + last


@pytest.mark.slow
def test_replica_catches_up_after_stop_and_kill(
    replica_set: ReplicaSet, master: MariaDB, replica: MariaDB, fresh_db: str
) -> None:
    master.sql(f"CREATE TABLE `{fresh_db}`.t (id INT PRIMARY KEY)")
    replica_set.sync()
    for step, halt in enumerate((replica.stop, replica.kill), start=1):
        halt()
        assert not replica.is_running()
        master.sql(f"INSERT INTO `{fresh_db}`.t VALUES (%s)", (step,))
        replica_set.sync()  # a stopped replica is skipped, not waited for
        replica.start()
        replica_set.sync()
        assert replica.sql(f"SELECT COUNT(*) FROM `{fresh_db}`.t") == [(step,)]
        assert replica.slave_status()["Slave_SQL_Running"] == "Yes"
