"""Load control with a fake clock: the byte budget, the lag pause, where each applies."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.fakes import FakeClock, hammer
from tracker.config import (
    Config,
    MySQLConfig,
    ReplicationConfig,
    S3Config,
    parse_destination,
)
from tracker.dump.pacing import (
    FAILURES_BEFORE_UNKNOWN,
    MB,
    LagGuard,
    LoadGuard,
    Pacer,
    RateLimit,
    open_pacing,
)
from tracker.errors import Cancelled


class FakeCancel(threading.Event):
    """An event whose ``wait`` advances the fake clock instead of sleeping.

    ``on_wait`` runs at every wait and may change the world (set the event,
    change the lag); ``waits`` records each timeout asked for.
    """

    def __init__(self, clock: FakeClock, on_wait: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.on_wait = on_wait
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None and timeout > 0, timeout
        assert len(self.waits) < 10_000, "wait loop does not end"
        self.waits.append(timeout)
        self.clock.now += timeout
        if self.on_wait is not None:
            self.on_wait(len(self.waits))
        return self.is_set()


class FakeProbe:
    def __init__(self, lag: float | None) -> None:
        self.lag: float | None | Exception = lag
        self.closed = False

    def measure(self) -> float | None:
        if isinstance(self.lag, Exception):
            raise self.lag
        return self.lag

    def close(self) -> None:
        self.closed = True


def guard(probe: FakeProbe, max_lag: int = 30) -> LagGuard:
    """A guard measured once, without its poller thread."""
    lag = LagGuard(MySQLConfig(), ReplicationConfig(max_lag_seconds=max_lag), poll_seconds=0.2, probe=probe)
    lag.poll_once()
    return lag


# --- RateLimit ------------------------------------------------------------------


def test_rate_allows_a_one_second_burst_then_owes_time() -> None:
    clock = FakeClock()
    rate = RateLimit(10, clock=clock)
    rate.charge(10 * MB)  # one second's worth: the burst
    assert rate.delay() == 0
    rate.charge(5 * MB)
    assert rate.delay() == pytest.approx(0.5)
    clock.now += 0.2
    assert rate.delay() == pytest.approx(0.3)
    clock.now += 0.3
    assert rate.delay() == 0


def test_rate_idle_time_earns_at_most_the_burst() -> None:
    clock = FakeClock()
    rate = RateLimit(2, clock=clock)
    clock.now += 3600  # an hour idle must not allow an hour's worth at once
    rate.charge(6 * MB)  # 3 s worth
    assert rate.delay() == pytest.approx(2.0)


def test_rate_is_shared_by_threads() -> None:
    clock = FakeClock()
    rate = RateLimit(1, clock=clock)

    hammer(lambda: rate.charge(1000))
    assert rate.delay() == pytest.approx(8.0 - 1.0)  # 8 MB at 1 MB/s, less the burst


def test_rate_wait_sleeps_the_delay_in_steps() -> None:
    clock = FakeClock()
    rate = RateLimit(1, clock=clock)
    rate.charge(3 * MB)
    cancel = FakeCancel(clock)
    rate.wait(cancel)
    assert sum(cancel.waits) == pytest.approx(2.0)
    assert max(cancel.waits) <= 0.5
    assert rate.delay() == 0


def test_rate_wait_returns_on_cancel() -> None:
    clock = FakeClock()
    rate = RateLimit(1, clock=clock)
    rate.charge(100 * MB)
    cancel = FakeCancel(clock, on_wait=lambda n: cancel.set())
    rate.wait(cancel)
    assert len(cancel.waits) == 1 and rate.delay() > 90


def test_rate_rejects_non_positive() -> None:
    with pytest.raises(ValueError):
        RateLimit(0)


# --- LagGuard (fake probe, no thread) ----------------------------------------------


def test_lag_within_limit_does_not_wait() -> None:
    clock = FakeClock()
    cancel = FakeCancel(clock)
    guard(FakeProbe(30)).wait_ok(cancel)
    assert cancel.waits == []


@pytest.mark.parametrize("lag", [31.0, None], ids=["too-far", "unknown"])
def test_lag_pauses_until_back_within_limit(lag: float | None, caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe(lag)
    lag_guard = guard(probe)
    clock = FakeClock()

    def on_wait(n: int) -> None:
        if n == 5:
            probe.lag = 2.0
            lag_guard.poll_once()

    cancel = FakeCancel(clock, on_wait)
    with caplog.at_level(logging.INFO, logger="tracker.dump.pacing"):
        lag_guard.wait_ok(cancel)
    assert len(cancel.waits) == 5
    events = [r.getMessage() for r in caplog.records]
    shown = "unknown" if lag is None else "31"
    assert events == [f"event=lag_pause lag={shown} max=30", "event=lag_resume lag=2 max=30"]


def test_lag_pause_is_logged_once_for_all_workers(caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe(100)
    lag_guard = guard(probe)
    clock = FakeClock()
    first = FakeCancel(clock, on_wait=lambda n: first.set())
    second = FakeCancel(clock, on_wait=lambda n: second.set())
    with caplog.at_level(logging.INFO, logger="tracker.dump.pacing"):
        lag_guard.wait_ok(first)
        lag_guard.wait_ok(second)  # a second worker while the host is still paused
    assert [r.getMessage() for r in caplog.records] == ["event=lag_pause lag=100 max=30"]


def test_lag_wait_returns_at_once_when_cancelled() -> None:
    clock = FakeClock()
    cancel = FakeCancel(clock)
    cancel.set()
    guard(FakeProbe(None)).wait_ok(cancel)
    assert cancel.waits == []


def test_one_failed_poll_keeps_the_last_lag_repeated_failures_make_it_unknown(caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe(5)
    lag_guard = guard(probe)
    probe.lag = ConnectionError("blip")
    with caplog.at_level(logging.INFO, logger="tracker.dump.pacing"):
        for _ in range(FAILURES_BEFORE_UNKNOWN - 1):
            lag_guard.poll_once()
            assert lag_guard.lag == 5 and lag_guard.ok()
        lag_guard.poll_once()
        assert lag_guard.lag is None and not lag_guard.ok()
        probe.lag = 1
        lag_guard.poll_once()
    assert lag_guard.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("event=lag_poll_failed" in m for m in messages) == FAILURES_BEFORE_UNKNOWN
    assert "lag_unknown=yes" in messages[FAILURES_BEFORE_UNKNOWN - 1]
    assert messages[-1] == f"event=lag_poll_recovered failures={FAILURES_BEFORE_UNKNOWN} lag=1"


def test_lag_guard_thread_polls_and_closes_its_probe() -> None:
    probe = FakeProbe(100)
    lag_guard = LagGuard(MySQLConfig(), ReplicationConfig(max_lag_seconds=30), poll_seconds=0.01, probe=probe)
    with lag_guard:
        assert not lag_guard.ok()
        probe.lag = 0
        lag_guard.wait_ok(threading.Event())  # real waits: the thread must see the change
        assert lag_guard.ok()
    assert probe.closed


def test_lag_guard_needs_a_limit() -> None:
    with pytest.raises(ValueError):
        LagGuard(MySQLConfig(), ReplicationConfig(max_lag_seconds=None))


# --- Pacer -------------------------------------------------------------------------


def test_no_pacer_is_a_no_op() -> None:
    clock = FakeClock()
    cancel = FakeCancel(clock)
    cancel.set()  # even a stopping run: the pacer has nothing to say
    pacer = Pacer.none()
    assert not pacer.active
    pacer.before_unit(cancel)
    meter = pacer.meter(cancel)
    for _ in range(3):
        meter(1 << 30)
    assert cancel.waits == []


def test_follow_meter_only_charges_and_before_unit_pays() -> None:
    clock = FakeClock()
    rate = RateLimit(1, clock=clock)
    pacer = Pacer(rate, guard(FakeProbe(1000)), in_stream=False)
    cancel = FakeCancel(clock)
    meter = pacer.meter(cancel)
    for _ in range(4):
        meter(MB)
    assert cancel.waits == []  # the server writes anyway: never sleep mid-stream, nor for the lag
    assert rate.delay() == pytest.approx(3.0)

    pacer = Pacer(rate, guard(FakeProbe(0)), in_stream=False)
    pacer.before_unit(cancel)
    assert sum(cancel.waits) == pytest.approx(3.0)
    assert rate.delay() == 0


def test_fifo_meter_sleeps_inside_the_stream() -> None:
    clock = FakeClock()
    rate = RateLimit(1, clock=clock)
    pacer = Pacer(rate, None, in_stream=True)
    cancel = FakeCancel(clock)
    meter = pacer.meter(cancel)
    meter(MB)  # within the burst
    assert cancel.waits == []
    meter(2 * MB)
    assert sum(cancel.waits) == pytest.approx(2.0)


def test_fifo_meter_waits_for_the_lag() -> None:
    clock = FakeClock()
    probe = FakeProbe(100)
    lag_guard = guard(probe)

    def on_wait(n: int) -> None:
        probe.lag = 0
        lag_guard.poll_once()

    cancel = FakeCancel(clock, on_wait)
    Pacer(None, lag_guard, in_stream=True).meter(cancel)(MB)
    assert len(cancel.waits) == 1


@pytest.mark.parametrize("in_stream", [True, False])
def test_cancel_during_a_wait_raises_cancelled(in_stream: bool) -> None:
    clock = FakeClock()
    rate = RateLimit(1, clock=clock)
    pacer = Pacer(rate, None, in_stream=in_stream)
    cancel = FakeCancel(clock, on_wait=lambda n: cancel.set())
    meter = pacer.meter(cancel)
    if in_stream:
        with pytest.raises(Cancelled, match="stopped by request"):
            meter(10 * MB)
    else:
        meter(10 * MB)  # follow: no wait inside the stream, so nothing to cut short
        with pytest.raises(Cancelled, match="stopped by request"):
            pacer.before_unit(cancel)
    assert len(cancel.waits) == 1


def test_cancel_while_paused_for_lag_raises_cancelled() -> None:
    clock = FakeClock()
    cancel = FakeCancel(clock, on_wait=lambda n: cancel.set())
    pacer = Pacer(None, guard(FakeProbe(None)), in_stream=False)
    with pytest.raises(Cancelled):
        pacer.before_unit(cancel)


# --- open_pacing ----------------------------------------------------------------------


def make_config(**kw) -> Config:
    return Config(
        path="test.yaml",
        namespace="main",
        mysql=kw.pop("mysql", MySQLConfig()),
        outfile_dir=Path("/tmp"),
        destination=parse_destination("file:///tmp/dest"),
        s3=S3Config(),
        **kw,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_open_pacing_builds_only_what_is_configured() -> None:
    with open_pacing(make_config(), "follow", replica=True) as pacer:
        assert not pacer.active
    limited = make_config(max_mb_per_second=5.0, replication=ReplicationConfig(max_lag_seconds=60))
    with open_pacing(limited, "fifo", replica=False) as pacer:
        assert pacer.rate is not None and pacer.rate.bytes_per_second == 5e6
        assert pacer.lag is None  # not a replica: no lag to watch
        assert pacer.in_stream


def test_open_pacing_on_a_replica_starts_a_guard_that_pauses_when_unreachable() -> None:
    config = make_config(
        mysql=MySQLConfig(port=closed_port(), connect_timeout=1),
        replication=ReplicationConfig(max_lag_seconds=60, poll_seconds=1),
    )
    with open_pacing(config, "follow", replica=True) as pacer:
        assert pacer.rate is None and pacer.lag is not None and not pacer.in_stream
        assert pacer.lag.lag is None and not pacer.lag.ok()  # never measured: unknown


# --- LoadGuard (Threads_running) ----------------------------------------------------


def load_guard(probe: FakeProbe, max_running: int = 8) -> LoadGuard:
    """A load guard measured once, without its poller thread."""
    load = LoadGuard(MySQLConfig(), ReplicationConfig(max_threads_running=max_running), poll_seconds=0.2, probe=probe)
    load.poll_once()
    return load


def test_load_guard_pauses_before_a_unit_until_threads_running_drops(caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe(40)
    load = load_guard(probe)
    clock = FakeClock()

    def on_wait(n: int) -> None:
        if n == 3:
            probe.lag = 8  # at the limit: not above it
            load.poll_once()

    cancel = FakeCancel(clock, on_wait)
    pacer = Pacer(None, None, in_stream=False, load=load)
    assert pacer.active
    with caplog.at_level(logging.INFO, logger="tracker.dump.pacing"):
        pacer.before_unit(cancel)
    assert len(cancel.waits) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "event=load_pause threads_running=40 max=8",
        "event=load_resume threads_running=8 max=8",
    ]


def test_load_guard_never_pauses_inside_a_stream() -> None:
    """A dump query we stop reading still counts as running: pausing mid-stream would not lower the load."""
    clock = FakeClock()
    cancel = FakeCancel(clock)
    load = load_guard(FakeProbe(1000))
    for in_stream in (True, False):
        meter = Pacer(None, None, in_stream=in_stream, load=load).meter(cancel)
        meter(MB)
        rated = Pacer(RateLimit(1000, clock=clock), None, in_stream=in_stream, load=load).meter(cancel)
        rated(MB)
    assert cancel.waits == []


def test_load_and_lag_are_both_waited_for_before_a_unit() -> None:
    lag_probe, load_probe = FakeProbe(100), FakeProbe(100)
    lag, load = guard(lag_probe), load_guard(load_probe)
    clock = FakeClock()

    def on_wait(n: int) -> None:
        if n == 2:
            lag_probe.lag = 0
            lag.poll_once()
        if n == 4:
            load_probe.lag = 1
            load.poll_once()

    cancel = FakeCancel(clock, on_wait)
    Pacer(None, lag, in_stream=False, load=load).before_unit(cancel)
    assert len(cancel.waits) == 4 and lag.ok() and load.ok()


def test_load_unknown_after_repeated_failures_pauses(caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe(2)
    load = load_guard(probe)
    probe.lag = ConnectionError("gone")
    with caplog.at_level(logging.INFO, logger="tracker.dump.pacing"):
        for _ in range(FAILURES_BEFORE_UNKNOWN):
            load.poll_once()
    assert load.value is None and not load.ok()
    assert "event=load_poll_failed failures=3 threads_running_unknown=yes error=" in caplog.records[-1].getMessage()
    clock = FakeClock()
    cancel = FakeCancel(clock, on_wait=lambda n: cancel.set())
    with pytest.raises(Cancelled):
        Pacer(None, None, in_stream=False, load=load).before_unit(cancel)


def test_load_guard_needs_a_limit() -> None:
    with pytest.raises(ValueError):
        LoadGuard(MySQLConfig(), ReplicationConfig(max_threads_running=None))


def test_open_pacing_starts_the_load_guard_on_any_server_when_configured() -> None:
    config = make_config(
        mysql=MySQLConfig(port=closed_port(), connect_timeout=1),
        replication=ReplicationConfig(max_threads_running=16, poll_seconds=1),
    )
    for replica in (True, False):  # a master dumped with --allow-master is protected too
        with open_pacing(config, "fifo", replica=replica) as pacer:
            assert pacer.active and pacer.lag is None and pacer.load is not None
            assert pacer.load.max_threads_running == 16
            assert pacer.load.value is None and not pacer.load.ok()  # unreachable: unknown, pauses
