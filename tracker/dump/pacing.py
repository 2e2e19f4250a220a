"""Load control: keep a dump within a byte rate and away from a lagging replica.

A nightly dump competes with the replica's own work: reading every table at
full speed can starve the SQL thread, and a replica that falls behind serves
stale reads to everyone else.  Three brakes, all optional:

* :class:`RateLimit` -- one byte budget (``max_mb_per_second``) shared by all
  workers of the host, so the limit holds whatever ``workers`` is.
* :class:`LagGuard` -- a thread polling the replica's lag on its own
  connection; workers pause while it exceeds ``replication.max_lag_seconds``.
* :class:`LoadGuard` -- the same for the server's ``Threads_running``
  (``replication.max_threads_running``), consulted before each unit.

A worker only talks to a :class:`Pacer`, which applies each where it can
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
from tracker.dump.ratelimit import BURST_SECONDS, MB, WAIT_STEP_SECONDS, RateLimit  # noqa: F401 (re-exported)
from tracker.errors import Cancelled

log = logging.getLogger(__name__)

FAILURES_BEFORE_UNKNOWN = 3  # failed polls in a row before a value counts as unknown
POLL_READ_TIMEOUT = 30  # a hung status query must not freeze the last measured value forever


# --- what the guards measure -------------------------------------------------------


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


def measure_threads_running(conn: pymysql.Connection) -> float | None:
    """The server's ``Threads_running``: statements executing right now, this one included."""
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_running'")
        row = cur.fetchone()
    return None if row is None else float(row[1])


class Probe(Protocol):
    """Measures one value; used by a guard's poller thread only."""

    def measure(self) -> float | None: ...
    def close(self) -> None: ...


LagProbe = Probe  # the name the lag guard's callers know


class ServerProbe:
    """Measures the local server over its own connection.

    Its own, because the workers' connections are busy in their snapshot
    transactions and dump queries.  After an error the connection is dropped
    and the next measurement reconnects: a restarted server or a killed
    connection heals by itself.
    """

    def __init__(self, mysql: MySQLConfig, measure: Callable[[pymysql.Connection], float | None], what: str) -> None:
        self._mysql = mysql
        self._measure = measure
        self._what = what
        self._conn: pymysql.Connection | None = None

    def measure(self) -> float | None:
        if self._conn is None:
            self._conn = db.connect(self._mysql, read_timeout=POLL_READ_TIMEOUT, what=self._what)
        try:
            return self._measure(self._conn)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class ReplicaLagProbe(ServerProbe):
    """The lag guard's probe."""

    def __init__(self, mysql: MySQLConfig, heartbeat: tuple[str, str] | None) -> None:
        super().__init__(mysql, lambda conn: measure_lag(conn, heartbeat), "replica (lag poll)")


def _shown(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f}"


# --- guards: pause workers while a measured value is above its limit -------------------


class PollingGuard:
    """Pauses workers while the last measured value is above ``limit`` or unknown.

    A daemon thread measures every ``poll_seconds``; :meth:`wait_ok` only
    reads the last value, so workers never query the server themselves.

    Unknown (the probe says None, or before the first successful
    measurement) pauses: a server that cannot say how it is doing is not
    being protected by dumping on.  A failed poll keeps the last value; only
    :data:`FAILURES_BEFORE_UNKNOWN` failures in a row make it unknown, so one
    network blip or a restarted connection does not stop every worker.

    Subclasses name the events: ``event=<kind>_pause <quantity>=... max=...``,
    ``<kind>_resume``, ``<kind>_poll_failed``, ``<kind>_poll_recovered``.
    """

    kind = "guard"
    quantity = "value"

    def __init__(self, limit: int, poll_seconds: float, probe: Probe) -> None:
        self.limit = limit
        self.poll_seconds = float(poll_seconds)
        self._probe = probe
        self._lock = threading.Lock()
        self._value: float | None = None
        self._failures = 0
        self._paused = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PollingGuard":
        # Measure once before any worker asks, so a healthy server starts at once.
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-guard", daemon=True)
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
    def value(self) -> float | None:
        """The last measured value; None when unknown."""
        with self._lock:
            return self._value

    def ok(self) -> bool:
        """True when the last measured value is known and within the limit."""
        value = self.value
        return value is not None and value <= self.limit

    def poll_once(self) -> None:
        """Measure once and record the value (or the failure)."""
        try:
            value = self._probe.measure()
        except Exception as exc:  # noqa: BLE001 -- any failure must leave the thread alive
            self._record_failure(exc)
            return
        with self._lock:
            recovered, self._failures = self._failures, 0
            self._value = value
        if recovered:
            log.info("event=%s_poll_recovered failures=%d %s=%s", self.kind, recovered, self.quantity, _shown(value))

    def _record_failure(self, exc: Exception) -> None:
        with self._lock:
            self._failures += 1
            failures = self._failures
            if failures >= FAILURES_BEFORE_UNKNOWN:
                self._value = None
        log.warning(
            "event=%s_poll_failed failures=%d %s_unknown=%s error=%s",
            self.kind,
            failures,
            self.quantity,
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
        """Block while the value is above the limit or unknown; return at once on cancel.

        Pause and resume are logged once per pause of the host, not once per
        worker: the first worker to block logs the pause, the first to go on
        logs the resume.
        """
        step = min(self.poll_seconds, WAIT_STEP_SECONDS)
        while not cancel.is_set():
            value = self.value
            if value is not None and value <= self.limit:
                self._set_paused(False, value)
                return
            self._set_paused(True, value)
            cancel.wait(step)

    def _set_paused(self, paused: bool, value: float | None) -> None:
        with self._lock:
            changed, self._paused = self._paused != paused, paused
        if not changed:
            return
        if paused:
            log.warning("event=%s_pause %s=%s max=%d", self.kind, self.quantity, _shown(value), self.limit)
        else:
            log.info("event=%s_resume %s=%s max=%d", self.kind, self.quantity, _shown(value), self.limit)


class LagGuard(PollingGuard):
    """Pauses workers while the local replica lags more than ``replication.max_lag_seconds``.

    Unknown lag (NULL ``Seconds_Behind_Master``, SQL thread stopped, no
    heartbeat row, no longer a replica) pauses: a replica that is not
    applying events is not being protected by dumping on.
    """

    kind = "lag"
    quantity = "lag"

    def __init__(
        self,
        mysql: MySQLConfig,
        replication: ReplicationConfig,
        *,
        poll_seconds: float | None = None,
        probe: Probe | None = None,
    ) -> None:
        if replication.max_lag_seconds is None:
            raise ValueError("LagGuard needs replication.max_lag_seconds")
        super().__init__(
            replication.max_lag_seconds,
            poll_seconds if poll_seconds is not None else replication.poll_seconds,
            probe or ReplicaLagProbe(mysql, replication.heartbeat_table),
        )
        self.max_lag_seconds = replication.max_lag_seconds

    @property
    def lag(self) -> float | None:
        """The last measured lag in seconds; None when unknown."""
        return self.value


class LoadGuard(PollingGuard):
    """Pauses workers while the server's ``Threads_running`` is above ``replication.max_threads_running``.

    Consulted only before a worker claims its next unit, never inside a
    stream: a dump query that is not read from still counts as running, so
    pausing it would not lower the load, and tracker's own running dump
    queries (and the poll itself) are part of ``Threads_running``.  Paused
    workers run nothing, so the guard cannot hold itself up: with every
    worker waiting, tracker adds one thread (the poll) to the count.
    """

    kind = "load"
    quantity = "threads_running"

    def __init__(
        self,
        mysql: MySQLConfig,
        replication: ReplicationConfig,
        *,
        poll_seconds: float | None = None,
        probe: Probe | None = None,
    ) -> None:
        if replication.max_threads_running is None:
            raise ValueError("LoadGuard needs replication.max_threads_running")
        super().__init__(
            replication.max_threads_running,
            poll_seconds if poll_seconds is not None else replication.poll_seconds,
            probe or ServerProbe(mysql, measure_threads_running, "server (load poll)"),
        )
        self.max_threads_running = replication.max_threads_running


# --- what a worker calls -----------------------------------------------------------


def _ignore(nbytes: int) -> None:
    """The meter of a pacer with nothing to do."""


class Pacer:
    """Applies the rate limit and the guards where the source lets them act.

    ``in_stream`` (the ``fifo`` source): not reading blocks the server, so
    the meter sleeps for the rate and waits for the lag inside the stream.
    Otherwise (``follow``) the meter only charges the bytes and
    :meth:`before_unit` pays the debt, so the limit holds on average.  The
    load guard acts only in :meth:`before_unit` (see :class:`LoadGuard`).
    """

    def __init__(self, rate: RateLimit | None, lag: LagGuard | None, in_stream: bool, load: LoadGuard | None = None) -> None:
        self.rate = rate
        self.lag = lag
        self.in_stream = in_stream
        self.load = load

    @classmethod
    def none(cls) -> Pacer:
        """A pacer that does nothing."""
        return cls(None, None, False)

    @property
    def active(self) -> bool:
        return self.rate is not None or self.lag is not None or self.load is not None

    def before_unit(self, cancel: threading.Event) -> None:
        """Wait for the replica to be within its lag and load, and for the rate debt to be paid."""
        if not self.active:
            return
        self._pause(cancel, self.load)

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
            self._pause(cancel, None)

        return meter

    def _pause(self, cancel: threading.Event, load: LoadGuard | None) -> None:
        # Cheap checks first: this runs for every chunk of a fifo stream.
        lag_ok = self.lag is None or self.lag.ok()
        load_ok = load is None or load.ok()
        rate_ok = self.rate is None or self.rate.delay() <= 0
        if lag_ok and load_ok and rate_ok:
            return
        if self.lag is not None:
            self.lag.wait_ok(cancel)
        if load is not None:
            load.wait_ok(cancel)
        if self.rate is not None:
            self.rate.wait(cancel)
        if cancel.is_set():
            raise Cancelled("stopped by request")


@contextlib.contextmanager
def open_pacing(config: Config, source_kind: str, replica: bool) -> Iterator[Pacer]:
    """The pacer a run's workers share, with its pollers running while in use.

    The lag guard exists only on a replica with ``max_lag_seconds`` set (a
    master has no lag to watch); the load guard wherever
    ``max_threads_running`` is set (a master dumped with --allow-master
    needs it most); the rate limit only with ``max_mb_per_second`` set.
    """
    rate = RateLimit(config.max_mb_per_second) if config.max_mb_per_second else None
    replication = config.replication
    want_lag = replica and replication.max_lag_seconds is not None
    in_stream = source_kind == "fifo"
    with contextlib.ExitStack() as stack:
        lag = stack.enter_context(LagGuard(config.mysql, replication)) if want_lag else None
        load = stack.enter_context(LoadGuard(config.mysql, replication)) if replication.max_threads_running is not None else None
        pacer = Pacer(rate, lag, in_stream, load)
        if pacer.active:
            log.info(
                "event=pacing mb_per_sec=%s max_lag=%s max_threads_running=%s in_stream=%s",
                config.max_mb_per_second if rate else "none",
                replication.max_lag_seconds if lag else "none",
                replication.max_threads_running if load else "none",
                "yes" if in_stream else "no",
            )
        yield pacer


def lag_now(conn: pymysql.Connection, heartbeat: tuple[str, str] | None) -> float | None:
    """The replica's lag measured once (``run`` records it at start); None when unknown or not measurable."""
    try:
        lag = measure_lag(conn, heartbeat)
    except Exception as exc:  # noqa: BLE001 -- a figure for the metrics must not fail the run
        log.warning("event=lag_unknown error=%s", db.error_text(exc))
        return None
    log.info("event=replica_lag lag=%s", _shown(lag))
    return lag
