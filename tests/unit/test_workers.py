"""The worker pool: every job once, bounded retries, requeue, stop."""

from __future__ import annotations

import threading

from tracker.dump import workers
from tracker.errors import DumpFailed, UploadFailed
from tracker.dump.workers import Requeue, StopScope, run_parallel


def test_every_job_runs_once_across_workers() -> None:
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(conn, job):
        with lock:
            seen.append((conn, job))
        return job * 2

    outcomes = run_parallel(["a", "b", "c"], list(range(20)), work, threading.Event())
    assert sorted(o.job for o in outcomes) == list(range(20))
    assert all(o.result == o.job * 2 and o.error is None and o.attempts == 1 for o in outcomes)
    assert sorted(job for _conn, job in seen) == list(range(20))


def test_retries_are_bounded_and_back_off(monkeypatch) -> None:
    monkeypatch.setattr(workers, "MAX_BACKOFF_SECS", 0.01)
    calls: dict[int, int] = {}

    def work(conn, job):
        calls[job] = calls.get(job, 0) + 1
        if job == 1 and calls[job] < 3:
            raise UploadFailed("S3 hiccup")  # retryable
        if job == 2:
            raise UploadFailed("S3 down")
        if job == 4:
            raise DumpFailed("dump query failed: (1317) Query execution was interrupted")
        if job == 5:
            raise DumpFailed("dump query failed: (1213) Deadlock", retryable=True)
        return "ok"

    outcomes = {o.job: o for o in run_parallel(["a"], [1, 2, 3, 4, 5], work, threading.Event(), retries=2)}
    assert outcomes[1].result == "ok" and outcomes[1].attempts == 3
    assert str(outcomes[2].error) == "S3 down" and outcomes[2].attempts == 3
    assert outcomes[3].result == "ok" and outcomes[3].attempts == 1
    assert outcomes[4].error is not None and outcomes[4].attempts == 1  # a killed query is final
    assert outcomes[5].error is not None and outcomes[5].attempts == 3


def test_requeue_does_not_count_as_an_attempt() -> None:
    interrupted = {"done": False}

    def work(conn, job):
        if not interrupted["done"]:
            interrupted["done"] = True
            raise Requeue("released a metadata lock")
        return "ok"

    (outcome,) = run_parallel(["a"], ["unit"], work, threading.Event(), retries=0)
    assert outcome.result == "ok" and outcome.attempts == 1


def test_stop_leaves_the_rest_undone() -> None:
    cancel = threading.Event()

    def work(conn, job):
        cancel.set()
        return job

    outcomes = run_parallel(["a"], [1, 2, 3], work, cancel)
    assert [o.job for o in outcomes] == [1]


def test_stop_scope_follows_its_parent() -> None:
    parent = threading.Event()
    scope = StopScope(parent)
    assert not scope.is_set()
    parent.set()
    assert scope.is_set()
    own = StopScope(threading.Event())
    own.set()
    assert own.is_set()
