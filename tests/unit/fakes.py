"""Test doubles shared by the unit tests."""

from __future__ import annotations

import threading
from typing import Callable


class FakeClock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hammer(action: Callable[[], None], threads: int = 8, times: int = 1000) -> None:
    """Call ``action`` ``times`` times from each of ``threads`` threads at once."""

    def repeat() -> None:
        for _ in range(times):
            action()

    workers = [threading.Thread(target=repeat) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
