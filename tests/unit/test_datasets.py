"""Pure parts of the dataset leases: where the lock schema is, and how a holder is named."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from tracker.config import Config, Destination, MySQLConfig, S3Config
from tracker.replicaset.datasets import Holder, lock_master
from tracker.replicaset.replica import parse_status

LOCAL = MySQLConfig(host="127.0.0.1", port=3307, user="tracker", password="pw")
CONFIGURED = MySQLConfig(host="db-master", port=3306, user="tracker", password="pw")
STATUS = parse_status({"Master_Host": "10.0.0.5", "Master_Port": 3310, "Slave_IO_Running": "Yes", "Slave_SQL_Running": "Yes"})


def config(master: MySQLConfig | None = None) -> Config:
    return Config(
        path="t.yaml",
        namespace="main",
        mysql=LOCAL,
        outfile_dir=Path("/tmp"),
        destination=Destination(url="file:///tmp/d", scheme="file", bucket="", prefix="/tmp/d"),
        s3=S3Config(),
        master=master,
    )


def test_replica_uses_its_source_unless_master_is_configured() -> None:
    found = lock_master(config(), STATUS)
    assert (found.host, found.port, found.user, found.password) == ("10.0.0.5", 3310, "tracker", "pw")
    assert lock_master(config(CONFIGURED), STATUS) == CONFIGURED


def test_not_a_replica_uses_itself_unless_master_is_configured() -> None:
    assert lock_master(config(), None) == LOCAL
    assert lock_master(config(CONFIGURED), None) == CONFIGURED


def test_holder_is_named_for_a_dba() -> None:
    holder = Holder("run", "db7", 3306, 4242, dt.datetime(2026, 11, 2, 0, 20, 5, 123456))
    assert holder.describe() == "db7:3306 pid 4242 (run, until 2026-11-02 00:20:05 master time)"
    assert replace(holder, kind="dump").describe().startswith("db7:3306 pid 4242 (dump,")
