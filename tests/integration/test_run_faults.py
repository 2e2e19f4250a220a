"""Faults during ``tracker run``: a signal, and the master going away.

The unit is held mid-dump by the test (``held_table``: its query waits for
a metadata lock, running, tagged and claimed) while the fault lands, so
the tests do not depend on how fast this machine dumps a table.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.integration.helpers import (
    create_small_table,
    drop_unreplicated,
    held_dumps,
    held_table,
    start_tracker,
    tagged_queries,
    wait_for,
    write_config,
)


@pytest.fixture
def table(replica) -> Iterator[str]:
    """A small table on the replica alone."""
    name = create_small_table(replica)
    yield name
    drop_unreplicated(replica, name.split(".")[0])

def visible(dest) -> list[str]:
    return [str(p) for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".")]


def active_claims(master, namespace: str) -> list[tuple]:
    return master.sql(
        "SELECT db, tbl, unit, port FROM tracker.claims WHERE namespace = %s AND state = 'active'", (namespace,)
    )


def run_config(tmp_path, replica, big: str, namespace: str, **extra):
    db = big.split(".")[0]
    return write_config(
        tmp_path,
        replica,
        f"file://{tmp_path / 'dest'}",
        namespace=namespace,
        tables={"include": [rf"{db}\..*"]},
        replication={"wait_seconds": 30, "poll_seconds": 1},
        run_lock_dir=str(tmp_path),
        **extra,
    )


def test_sigterm_during_run(master, replica, tmp_path, table) -> None:
    namespace = f"sigterm{time.monotonic_ns()}"
    config = run_config(tmp_path, replica, table, namespace)
    with held_table(replica, table):
        proc = start_tracker(config, "run", "--date", "2026-11-01")
        try:
            assert wait_for(lambda: held_dumps(replica), 60), "the run never started dumping"
            assert active_claims(master, namespace), "the unit should be claimed while it is dumped"
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            _out, err = proc.communicate(timeout=30)
            assert time.monotonic() - started < 10
            assert proc.returncode == 1, err.decode()
            assert err.decode().splitlines()[-1].startswith("tracker: error: interrupted") and b"Traceback" not in err
        finally:
            if proc.poll() is None:
                proc.kill()
    assert replica.slave_status()["Slave_SQL_Running"] == "Yes"
    assert active_claims(master, namespace) == [], err.decode()
    assert wait_for(lambda: not tagged_queries(replica), 5)
    assert visible(tmp_path / "dest") == []
    assert list(replica.outfile_dir.iterdir()) == []


def _reconnect_replicas(replica_set) -> None:
    """Replicas retry a lost master only every 60 s; restart their threads now."""
    for server in replica_set.replicas:
        server.sql("STOP SLAVE")
        server.sql("START SLAVE")
    replica_set.sync()


def test_master_stopped_during_a_run(master, replica, replica_set, tmp_path, table) -> None:
    namespace = f"nomaster{time.monotonic_ns()}"
    config = run_config(tmp_path, replica, table, namespace, locks={"lease_seconds": 3}, retries=0)
    with held_table(replica, table):  # the unit stays mid-dump until its lease fails
        proc = start_tracker(config, "run", "--date", "2026-11-01")
        try:
            assert wait_for(lambda: held_dumps(replica), 60), "the run never started dumping"
            master.stop()
            stopped = time.monotonic()
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 1, err.decode()
            assert time.monotonic() - stopped < 10, "the unit should stop before its lease could be taken over"
            assert b"event=lease_lost" in err and b"Traceback" not in err, err.decode()
            # The unit's failure names the cause (the lease, lost with the
            # master), not the symptom of its killed query.
            last = err.decode().splitlines()[-1]
            assert last.startswith("tracker: error: ") and "lease lost" in last, err.decode()
            assert "master unreachable" in last and "InterfaceError" not in last, err.decode()
        finally:
            if proc.poll() is None:
                proc.kill()
            if not master.is_running():
                master.start()
            _reconnect_replicas(replica_set)
    assert visible(tmp_path / "dest") == []
    assert wait_for(lambda: not tagged_queries(replica), 5)
    assert list(replica.outfile_dir.iterdir()) == []
