"""Worker threads, one per snapshot connection, pulling units from a queue.

Each worker owns one connection (its transaction is its snapshot) for the
whole run.  The main thread only waits, in short steps, so a signal raised
there (SIGTERM, Ctrl-C) is handled at once: it sets ``cancel``, every
source stops its query and every upload aborts, and the workers are joined
before the error propagates.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

import pymysql

log = logging.getLogger(__name__)

Job = TypeVar("Job")
MAX_BACKOFF_SECS = 30.0


class StopScope(threading.Event):
    """One unit's stop flag that is also set whenever the run's is."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self._parent.is_set()


class Requeue(Exception):
    """The job did not fail, it was interrupted on purpose: run it again later, uncounted."""


@dataclass
class Outcome(Generic[Job]):
    job: Job
    result: object = None
    error: BaseException | None = None
    attempts: int = 0


@dataclass
class _Shared(Generic[Job]):
    jobs: "queue.Queue[Outcome[Job]]" = field(default_factory=queue.Queue)
    done: list[Outcome[Job]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_parallel(
    connections: list[pymysql.Connection],
    jobs: list[Job],
    work: Callable[[pymysql.Connection, Job], object],
    cancel: threading.Event,
    retries: int = 0,
) -> list[Outcome[Job]]:
    """Run ``work(conn, job)`` for every job.

    A job whose error is ``retryable`` is tried again, after a growing pause,
    up to ``retries`` more times.
    """
    shared: _Shared[Job] = _Shared()
    for job in jobs:
        shared.jobs.put(Outcome(job))

    finished = [threading.Event() for _ in connections]

    def worker(conn: pymysql.Connection, done: threading.Event) -> None:
        try:
            _work_loop(conn)
        finally:
            done.set()

    def _work_loop(conn: pymysql.Connection) -> None:
        while not cancel.is_set():
            try:
                outcome = shared.jobs.get_nowait()
            except queue.Empty:
                return
            outcome.attempts += 1
            try:
                outcome.result, outcome.error = work(conn, outcome.job), None
            except Requeue as why:
                log.info("event=requeued reason=%s", why)
                outcome.attempts -= 1
                shared.jobs.put(outcome)
                continue
            except Exception as exc:  # recorded; reported by the caller
                outcome.error = exc
                if getattr(exc, "retryable", False) and outcome.attempts <= retries and not cancel.is_set():
                    delay = min(2.0**outcome.attempts, MAX_BACKOFF_SECS)
                    log.warning("event=retry attempt=%d in_secs=%.0f error=%s", outcome.attempts, delay, exc)
                    if not cancel.wait(delay):  # back off: transient faults need time to pass
                        shared.jobs.put(outcome)
                        continue
            with shared.lock:
                shared.done.append(outcome)

    threads = [
        threading.Thread(target=worker, args=(conn, done), name=f"worker-{i}")
        for i, (conn, done) in enumerate(zip(connections, finished))
    ]
    for thread in threads:
        thread.start()
    # Wait on events, not Thread.join: on Python 3.11 a signal that
    # interrupts join() marks a still running thread as stopped, and the
    # main thread would then tear down connections under a working unit.
    try:
        for done in finished:
            while not done.wait(0.2):
                pass
    except BaseException:
        cancel.set()
        for done in finished:
            done.wait()
        raise
    finally:
        for thread in threads:
            if not thread.is_alive():
                thread.join()
    return shared.done
