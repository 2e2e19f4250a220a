"""A byte budget shared by every worker of a host (``max_mb_per_second``).

Apart from the guards in :mod:`tracker.dump.pacing` because it needs no
server: a virtual clock and a lock, nothing else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MB = 1_000_000
BURST_SECONDS = 1.0  # an idle budget lets this much through at once
WAIT_STEP_SECONDS = 0.5  # longest sleep between looks at cancel (and, in the guards, at the value)


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
