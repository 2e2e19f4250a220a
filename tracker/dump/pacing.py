"""Load control: keep a dump within a byte rate and away from a lagging replica.

A nightly dump competes with the replica's own work: reading every table at
full speed can starve the SQL thread, and a replica that falls behind serves
stale reads to everyone else.  Two brakes, both optional:

* :class:`RateLimit` -- one byte budget (``max_mb_per_second``) shared by all
  workers of the host, so the limit holds whatever ``workers`` is.
* :class:`LagGuard` -- a thread polling the replica's lag on its own
  connection; workers pause while it exceeds ``replication.max_lag_seconds``.

A worker only talks to a :class:`Pacer`, which applies both where they can
act.  With the ``fifo`` source the server blocks when we stop reading, so the
pacer sleeps inside the stream.  With ``follow`` the server writes the file at
its own speed whatever we do, so sleeping mid-stream would only grow the file
on disk; there the pacer pays the rate debt and waits for the lag between
units, which keeps the limit on average.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import pymysql

from tracker import db
from tracker.config import Config, MySQLConfig, ReplicationConfig
from tracker.replicaset.replica import (
    newest_heartbeat,
    progress_from_heartbeat,
    progress_from_lag,
    read_status,
    server_utc_now,
)
from tracker.errors import Cancelled

log = logging.getLogger(__name__)

MB = 1_000_000
BURST_SECONDS = 1.0  # an idle budget lets this much through at once
WAIT_STEP_SECONDS = 0.5  # longest sleep between looks at cancel and at the lag
FAILURES_BEFORE_UNKNOWN = 3  # failed polls in a row before the lag counts as unknown
POLL_READ_TIMEOUT = 30  # a hung status query must not freeze the last measured lag forever


class RateLimit:
    """A byte budget of ``mb_per_second`` shared by all workers of a host.

    Bytes are charged after they moved (the meter sees a chunk once it went
    through), so :meth:`delay` says how long to rest until the total fits.
    It is a virtual-time bucket: every charge pushes ``_paid_until`` forward
    by its cost in seconds, never starting before now, so idle time earns at
    most :data:`BURST_SECONDS` of credit.
    """

    def __init__(self, mb_per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if mb_per_second <= 0:
            raise ValueError(f"mb_per_second must be positive, got {mb_per_second}")
        self.bytes_per_second = mb_per_second * MB
        self._clock = clock
        self._lock = threading.Lock()
        self._paid_until = clock()

    def charge(self, nbytes: int) -> None:
        """Record ``nbytes`` moved by any worker."""
        with self._lock:
            now = self._clock()
            self._paid_until = max(self._paid_until, now) + nbytes / self.bytes_per_second

    def delay(self) -> float:
        """Seconds until the bytes charged so far fit the budget; 0 if they do."""
        with self._lock:
            return max(0.0, self._paid_until - self._clock() - BURST_SECONDS)

    def wait(self, cancel: threading.Event) -> None:
        """Sleep until :meth:`delay` is 0, in steps so that ``cancel`` cuts it short."""
        while not cancel.is_set():
            pause = self.delay()
            if pause <= 0:
                return
            cancel.wait(min(pause, WAIT_STEP_SECONDS))


# --- replica lag ----------------------------------------------------------------


def measure_lag(conn: pymysql.Connection, heartbeat: tuple[str, str] | None) -> float | None:
    """The replica's lag in seconds, or None when it is unknown.

    With pt-heartbeat: the server's UTC now minus the newest ``ts`` applied,
    which keeps growing while replication is stopped.  Without:
    ``Seconds_Behind_Master``, which is NULL -- unknown -- when either
    replication thread is stopped; so is a server that is no longer a replica.
    """
    now = server_utc_now(conn)
    if heartbeat is not None:
        progress = progress_from_heartbeat(newest_heartbeat(conn, heartbeat))
    else:
        status = read_status(conn)
        if status is None:
            return None
        progress = progress_from_lag(status, now)
    if progress.applied_until is None:
        return None
    return max(0.0, (now - progress.applied_until).total_seconds())


class LagProbe(Protocol):
    """Measures the lag; used by the poller thread only."""

    def measure(self) -> float | None: ...
    def close(self) -> None: ...


class ReplicaLagProbe:
    """Measures the local replica's lag over its own connection.

    Its own, because the workers' connections are busy in their snapshot
    transactions and dump queries.  After an error the connection is dropped
    and the next measurement reconnects: a restarted server or a killed
    connection heals by itself.
    """

    def __init__(self, mysql: MySQLConfig, heartbeat: tuple[str, str] | None) -> None:
        self._mysql = mysql
        self._heartbeat = heartbeat
        self._conn: pymysql.Connection | None = None

    def measure(self) -> float | None:
        if self._conn is None:
            self._conn = db.connect(self._mysql, read_timeout=POLL_READ_TIMEOUT, what="replica (lag poll)")
        try:
            return measure_lag(self._conn, self._heartbeat)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def _shown(lag: float | None) -> str:
    return "unknown" if lag is None else f"{lag:.0f}"


class LagGuard:
    """Pauses workers while the local replica lags more than ``max_lag_seconds``.

    A daemon thread measures the lag every ``poll_seconds``; :meth:`wait_ok`
    only reads the last value, so workers never query the server themselves.

    Unknown lag (NULL ``Seconds_Behind_Master``, SQL thread stopped, no
    heartbeat row, no longer a replica) pauses: a replica that is not
    applying events is not being protected by dumping on.  Before the first
    successful measurement the lag is unknown too.  A failed poll keeps the
    last value; only :data:`FAILURES_BEFORE_UNKNOWN` failures in a row make it
    unknown, so one network blip or a restarted connection does not stop
    every worker.
    """

    def __init__(
        self,
        mysql: MySQLConfig,
        replication: ReplicationConfig,
        *,
        poll_seconds: float | None = None,
        probe: LagProbe | None = None,
    ) -> None:
        if replication.max_lag_seconds is None:
            raise ValueError("LagGuard needs replication.max_lag_seconds")
        self.max_lag_seconds = replication.max_lag_seconds
        self.poll_seconds = float(poll_seconds if poll_seconds is not None else replication.poll_seconds)
        self._probe: LagProbe = probe or ReplicaLagProbe(mysql, replication.heartbeat_table)
        self._lock = threading.Lock()
        self._lag: float | None = None
        self._failures = 0
        self._paused = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LagGuard:
        # Measure once before any worker asks, so a healthy replica starts at once.
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="lag-guard", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL_READ_TIMEOUT + 5)
            self._thread = None
        else:
            self._probe.close()

    @property
    def lag(self) -> float | None:
        """The last measured lag in seconds; None when unknown."""
        with self._lock:
            return self._lag

    def ok(self) -> bool:
        """True when the last measured lag is known and within the limit."""
        lag = self.lag
        return lag is not None and lag <= self.max_lag_seconds

    def poll_once(self) -> None:
        """Measure the lag once and record it (or the failure)."""
        try:
            lag = self._probe.measure()
        except Exception as exc:  # noqa: BLE001 -- any failure must leave the thread alive
            self._record_failure(exc)
            return
        with self._lock:
            recovered, self._failures = self._failures, 0
            self._lag = lag
        if recovered:
            log.info("event=lag_poll_recovered failures=%d lag=%s", recovered, _shown(lag))

    def _record_failure(self, exc: Exception) -> None:
        with self._lock:
            self._failures += 1
            failures = self._failures
            if failures >= FAILURES_BEFORE_UNKNOWN:
                self._lag = None
        log.warning(
            "event=lag_poll_failed failures=%d lag_unknown=%s error=%s",
            failures,
            "yes" if failures >= FAILURES_BEFORE_UNKNOWN else "no",
            db.error_text(exc),
        )

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll_seconds):
                self.poll_once()
        finally:
            # Closed here, not in __exit__: the connection belongs to this thread.
            self._probe.close()

    def wait_ok(self, cancel: threading.Event) -> None:
        """Block while the lag is above the limit or unknown; return at once on cancel.

        Pause and resume are logged once per pause of the host, not once per
        worker: the first worker to block logs the pause, the first to go on
        logs the resume.
        """
        step = min(self.poll_seconds, WAIT_STEP_SECONDS)
        while not cancel.is_set():
            lag = self.lag
            if lag is not None and lag <= self.max_lag_seconds:
                self._set_paused(False, lag)
                return
            self._set_paused(True, lag)
            cancel.wait(step)

    def _set_paused(self, paused: bool, lag: float | None) -> None:
        with self._lock:
            changed, self._paused = self._paused != paused, paused
        if not changed:
            return
        if paused:
            log.warning("event=lag_pause lag=%s max=%d", _shown(lag), self.max_lag_seconds)
        else:
            log.info("event=lag_resume lag=%s max=%d", _shown(lag), self.max_lag_seconds)


# --- what a worker calls -----------------------------------------------------------


def _ignore(nbytes: int) -> None:
    """The meter of a pacer with nothing to do."""


class Pacer:
    """Applies the rate limit and the lag guard where the source lets them act.

    ``in_stream`` (the ``fifo`` source): not reading blocks the server, so
    the meter sleeps for the rate and waits for the lag inside the stream.
    Otherwise (``follow``) the meter only charges the bytes and
    :meth:`before_unit` pays the debt, so the limit holds on average.
    """

    def __init__(self, rate: RateLimit | None, lag: LagGuard | None, in_stream: bool) -> None:
        self.rate = rate
        self.lag = lag
        self.in_stream = in_stream

    @classmethod
    def none(cls) -> Pacer:
        """A pacer that does nothing."""
        return cls(None, None, False)

    @property
    def active(self) -> bool:
        return self.rate is not None or self.lag is not None

    def before_unit(self, cancel: threading.Event) -> None:
        """Wait for the replica to be within its lag and for the rate debt to be paid."""
        if not self.active:
            return
        self._pause(cancel)

    def meter(self, cancel: threading.Event) -> Callable[[int], None]:
        """The per-chunk callback for ``run_unit``; raises ``Cancelled`` if a wait is cut short."""
        rate = self.rate
        if rate is None and (self.lag is None or not self.in_stream):
            return _ignore
        if not self.in_stream:
            assert rate is not None
            return rate.charge

        def meter(nbytes: int) -> None:
            if rate is not None:
                rate.charge(nbytes)
            self._pause(cancel)

        return meter

    def _pause(self, cancel: threading.Event) -> None:
        # Cheap checks first: this runs for every chunk of a fifo stream.
        lag_ok = self.lag is None or self.lag.ok()
        rate_ok = self.rate is None or self.rate.delay() <= 0
        if lag_ok and rate_ok:
            return
        if self.lag is not None:
            self.lag.wait_ok(cancel)
        if self.rate is not None:
            self.rate.wait(cancel)
        if cancel.is_set():
            raise Cancelled("stopped by request")


@contextlib.contextmanager
def open_pacing(config: Config, source_kind: str, replica: bool) -> Iterator[Pacer]:
    """The pacer a run's workers share, with its lag poller running while in use.

    The lag guard exists only on a replica with ``max_lag_seconds`` set (a
    master has no lag to watch); the rate limit only with
    ``max_mb_per_second`` set.
    """
    rate = RateLimit(config.max_mb_per_second) if config.max_mb_per_second else None
    want_lag = replica and config.replication.max_lag_seconds is not None
    in_stream = source_kind == "fifo"
    with contextlib.ExitStack() as stack:
        lag = stack.enter_context(LagGuard(config.mysql, config.replication)) if want_lag else None
        pacer = Pacer(rate, lag, in_stream)
        if pacer.active:
            log.info(
                "event=pacing mb_per_sec=%s max_lag=%s in_stream=%s",
                config.max_mb_per_second if rate else "none",
                config.replication.max_lag_seconds if lag else "none",
                "yes" if in_stream else "no",
            )
        yield pacer

