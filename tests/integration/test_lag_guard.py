"""LagGuard against a real GTID replica: it blocks while the replica lags, and lets go.

Two ways to lag: a pt-heartbeat row whose ``ts`` is old (set on the master,
replicated), and a stopped SQL thread with no heartbeat table, whose NULL
``Seconds_Behind_Master`` means unknown lag, which pauses too.  Both restore
the replica before they end: the servers are shared by the whole session.
"""

from __future__ import annotations

import logging
import threading

import pytest

from sandbox import MariaDB, ReplicaSet
from tests.integration.helpers import TRACKER_PASSWORD
from tracker.config import MySQLConfig, ReplicationConfig
from tracker.dump.pacing import LagGuard

POLL = 0.1
MAX_LAG = 30


def tracker_mysql(server: MariaDB) -> MySQLConfig:
    return MySQLConfig(host="127.0.0.1", port=server.port, user="tracker", password=TRACKER_PASSWORD)


class Waiter:
    """Runs ``wait_ok`` in a thread, as a worker would, and says when it returned."""

    def __init__(self, guard: LagGuard) -> None:
        self.cancel = threading.Event()
        self.returned = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(guard,), daemon=True)

    def _run(self, guard: LagGuard) -> None:
        guard.wait_ok(self.cancel)
        self.returned.set()

    def __enter__(self) -> Waiter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel.set()  # never leave the thread blocked, whatever the test did
        self._thread.join(timeout=10)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tracker.dump.pacing"]


def stale_heartbeat(master: MariaDB, replica_set: ReplicaSet, db: str) -> ReplicationConfig:
    """A pt-heartbeat table whose only row is 600 s old, replicated; its replication config."""
    master.sql(f"CREATE TABLE `{db}`.heartbeat (server_id INT PRIMARY KEY, ts DATETIME(6) NOT NULL)")
    master.sql(f"INSERT INTO `{db}`.heartbeat VALUES (1, UTC_TIMESTAMP(6) - INTERVAL 600 SECOND)")
    replica_set.sync()
    return ReplicationConfig(heartbeat_table=(db, "heartbeat"), max_lag_seconds=MAX_LAG)


def test_heartbeat_lag_blocks_until_the_replica_catches_up(
    master: MariaDB, replica: MariaDB, replica_set: ReplicaSet, fresh_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    replication = stale_heartbeat(master, replica_set, fresh_db)
    caplog.set_level(logging.INFO, logger="tracker.dump.pacing")
    with LagGuard(tracker_mysql(replica), replication, poll_seconds=POLL) as guard:
        lag = guard.lag
        assert lag is not None and 590 <= lag <= 700, lag
        with Waiter(guard) as waiter:
            assert not waiter.returned.wait(1.0), "wait_ok returned while the replica lagged 600 s"
            master.sql(f"UPDATE `{fresh_db}`.heartbeat SET ts = UTC_TIMESTAMP(6) WHERE server_id = 1")
            replica_set.sync()
            assert waiter.returned.wait(60.0), f"wait_ok still blocked; lag={guard.lag}"  # generous: a loaded host
        lag = guard.lag
        assert lag is not None and lag < MAX_LAG, lag
    log = messages(caplog)
    assert [m.split(" lag=")[0] for m in log] == ["event=lag_pause", "event=lag_resume"], log
    assert log[0].endswith(f"max={MAX_LAG}")


def test_cancel_ends_a_lag_pause_at_once(
    master: MariaDB, replica: MariaDB, replica_set: ReplicaSet, fresh_db: str
) -> None:
    replication = stale_heartbeat(master, replica_set, fresh_db)
    guard = LagGuard(tracker_mysql(replica), replication, poll_seconds=POLL)
    with guard, Waiter(guard) as waiter:
        assert not waiter.returned.wait(0.5)
        # The lag stays at 600 s: only the cancel can end the wait (the bound is generous: a loaded host).
        waiter.cancel.set()
        assert waiter.returned.wait(30.0), "wait_ok ignored the cancel"


def test_stopped_sql_thread_is_unknown_lag_and_pauses(
    replica2: MariaDB, replica_set: ReplicaSet, caplog: pytest.LogCaptureFixture
) -> None:
    replication = ReplicationConfig(max_lag_seconds=MAX_LAG)  # no heartbeat: Seconds_Behind_Master
    caplog.set_level(logging.INFO, logger="tracker.dump.pacing")
    replica2.sql("STOP SLAVE SQL_THREAD")
    try:
        with LagGuard(tracker_mysql(replica2), replication, poll_seconds=POLL) as guard:
            assert guard.lag is None  # NULL Seconds_Behind_Master
            with Waiter(guard) as waiter:
                assert not waiter.returned.wait(1.0), "wait_ok returned with the SQL thread stopped"
                replica2.sql("START SLAVE SQL_THREAD")
                assert waiter.returned.wait(60.0), f"wait_ok still blocked; lag={guard.lag}"  # generous: a loaded host
            lag = guard.lag
            assert lag is not None and lag < MAX_LAG, lag
    finally:
        replica2.sql("START SLAVE SQL_THREAD")  # a no-op (a note) if it runs already
        replica_set.sync()
    assert messages(caplog) == [f"event=lag_pause lag=unknown max={MAX_LAG}", f"event=lag_resume lag=0 max={MAX_LAG}"]
