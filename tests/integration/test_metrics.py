"""``metrics_file``: what the commands leave for node_exporter, after a success and after a failure.

Real commands (subprocesses) against the real replica; the file is read
with the Prometheus client library's own parser.  ``run``'s series are
checked in test_load_guard.py.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import run_tracker, unreplicated, write_config
from tracker.db import qualified
from tracker.store.layout import encode_segment

DATE = "2026-11-06"
ROWS = 25


@pytest.fixture
def db(master, replica_set) -> Iterator[str]:
    name = f"mx_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {name}")
    master.sql(f"CREATE TABLE {qualified(name, 't')} (id INT PRIMARY KEY, v VARCHAR(20))")
    conn = master.connect(database=name)
    try:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, f"v{i}") for i in range(ROWS)])
    finally:
        conn.close()
    replica_set.sync()
    yield name
    master.sql(f"DROP DATABASE {name}")
    replica_set.sync()


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def labels(command: str, namespace: str = "main", **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"command": command, "namespace": namespace, **extra}.items()))


def test_dump_and_verify_metrics_after_success_and_failure(replica, db, tmp_path) -> None:
    dest = tmp_path / "dest"
    metrics_file = tmp_path / "textfile" / "tracker.prom"
    metrics_file.parent.mkdir()
    config = write_config(tmp_path, replica, f"file://{dest}", metrics_file=str(metrics_file), tables={"include": [rf"{db}\..*"]})

    started = time.time()
    ok = run_tracker(config, "dump", f"{db}.t", "--date", DATE)
    assert ok.returncode == 0, ok.stderr.decode()
    manifest = json.loads((dest / "main" / encode_segment(db) / "t" / f"dt={DATE}" / "manifest.json").read_text())
    first = samples(metrics_file)
    dump = labels("dump")
    success = first[("tracker_last_success_timestamp_seconds", dump)]
    assert started <= success <= time.time()
    assert first[("tracker_last_run_timestamp_seconds", dump)] == success
    assert first[("tracker_last_exit_status", dump)] == 0
    assert first[("tracker_units_total", labels("dump", result="done"))] == 1  # dump counts tables
    assert first[("tracker_units_total", labels("dump", result="failed"))] == 0
    assert first[("tracker_rows_total", dump)] == ROWS == manifest["rows"]
    assert first[("tracker_bytes_total", dump)] == manifest["bytes"] > 0

    bad = run_tracker(config, "dump", f"{db}.no_such_table", "--date", DATE)
    assert bad.returncode == 1, bad.stderr.decode()
    second = samples(metrics_file)
    assert second[("tracker_last_success_timestamp_seconds", dump)] == success  # not advanced
    assert second[("tracker_last_run_timestamp_seconds", dump)] > success
    assert second[("tracker_last_exit_status", dump)] == 1
    assert second[("tracker_units_total", labels("dump", result="failed"))] == 1
    assert second[("tracker_units_total", labels("dump", result="done"))] == 1
    assert second[("tracker_rows_total", dump)] == ROWS

    # verify: one table complete, then one more that is missing
    good = run_tracker(config, "verify", "--date", DATE)
    assert good.returncode == 0, good.stderr.decode()
    unreplicated(replica, f"CREATE TABLE {qualified(db, 'later')} (id INT)")  # on the replica only: never dumped
    try:
        missing = run_tracker(config, "verify", "--date", DATE)
    finally:
        unreplicated(replica, f"DROP TABLE {qualified(db, 'later')}")
    assert missing.returncode == 1
    third = samples(metrics_file)
    verify = labels("verify")
    assert third[("tracker_tables_incomplete", verify)] == 1
    assert third[("tracker_last_success_timestamp_seconds", verify)] < third[("tracker_last_run_timestamp_seconds", verify)]
    assert third[("tracker_last_exit_status", verify)] == 1
    # The dump's series are still there, untouched by verify.
    assert {k: v for k, v in third.items() if ("command", "dump") in k[1]} == {k: v for k, v in second.items() if ("command", "dump") in k[1]}


def test_a_config_without_metrics_file_writes_nothing(replica, db, tmp_path) -> None:
    config = write_config(tmp_path, replica, f"file://{tmp_path / 'dest'}", tables={"include": [rf"{db}\..*"]})
    result = run_tracker(config, "verify", "--date", DATE)
    assert result.returncode == 1  # nothing dumped yet
    assert not list(tmp_path.rglob("*.prom"))
