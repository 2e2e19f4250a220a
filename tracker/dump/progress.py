"""A one-line progress bar for a person watching ``tracker`` in a terminal.

Under cron nobody watches: the bar is off unless the stream is a terminal,
and then it does nothing at all -- the ``event=progress`` log lines the
pipeline writes every 30 s are the progress.  Percent is by bytes against
an estimate (table sizes from the server's statistics), so it is capped at
99% until every unit is done: an estimate that was low must not show 100%
while work remains.
"""

from __future__ import annotations

import sys
import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 20
_UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


def _scale(total: float) -> tuple[float, str]:
    """One unit for both numbers of ``done/total``, chosen by the total."""
    for factor, name in _UNITS:
        if total >= factor:
            return factor, name
    return 1.0, "B"


def _rate(bytes_per_second: float) -> str:
    factor, name = _scale(bytes_per_second)
    return f"{bytes_per_second / factor:.0f} {name}/s"


def _clock_text(seconds: float) -> str:
    """``M:SS`` or ``H:MM:SS``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(done_units: int, total_units: int, done_bytes: int, total_bytes: int, elapsed: float) -> str:
    """The bar's text, e.g. ``[########------] 57%  6/10 units  1.2/2.1 GB  95 MB/s  ETA 0:10``."""
    finished = done_units >= total_units
    if finished:
        fraction = 1.0
    elif total_bytes > 0:
        fraction = min(done_bytes / total_bytes, 0.99)
    else:
        fraction = min(done_units / max(total_units, 1), 0.99)
    filled = int(fraction * BAR_WIDTH)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    factor, name = _scale(max(total_bytes, done_bytes))
    speed = done_bytes / elapsed if elapsed > 0 else 0.0
    if finished:
        eta = "0:00"
    elif speed > 0 and done_bytes < total_bytes:
        eta = _clock_text((total_bytes - done_bytes) / speed)
    else:
        eta = "-:--"  # nothing moved yet, or the estimate was too low
    return (
        f"[{bar}] {int(fraction * 100)}%  {done_units}/{total_units} units  "
        f"{done_bytes / factor:.1f}/{total_bytes / factor:.1f} {name}  {_rate(speed)}  ETA {eta}"
    )


class ProgressBar:
    """Repaints one line with ``\\r`` from a daemon thread while a run moves bytes.

    ``add`` and ``unit_done`` are called by every worker, hence the lock;
    painting happens in its own thread so a slow terminal never slows a
    worker.  Disabled (the default when ``stream`` is not a terminal), it
    starts no thread and writes nothing.
    """

    def __init__(
        self,
        total_units: int,
        total_bytes: int,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_units = total_units
        self.total_bytes = total_bytes
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._bytes = 0
        self._units = 0
        self._started = clock()
        self._width = 0  # of the last line painted, to blank what a shorter one leaves
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            # A log line written after the bar would start mid-line: clear the
            # bar's line before each record; the next paint brings it back.
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._clear_line)
            self._started = self._clock()
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._clear_line)
        self.paint()
        self.stream.write("\n")
        self.stream.flush()

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` raw bytes moved by any worker."""
        with self._lock:
            self._bytes += nbytes

    def unit_done(self) -> None:
        """Count one unit finished (committed, skipped or failed for good)."""
        with self._lock:
            self._units += 1

    def drop(self, nbytes: int) -> None:
        """Take one unit of ``nbytes`` estimated bytes out of the totals (another host has it)."""
        with self._lock:
            self.total_units = max(0, self.total_units - 1)
            self.total_bytes = max(0, self.total_bytes - nbytes)

    def meter(self) -> Callable[[int], None] | None:
        """What to pass to :func:`combine`: ``add`` when enabled, else nothing."""
        return self.add if self.enabled else None

    def text(self) -> str:
        """The line as it would be painted now."""
        with self._lock:
            units, nbytes, total_units, total_bytes = self._units, self._bytes, self.total_units, self.total_bytes
        return render(units, total_units, nbytes, total_bytes, self._clock() - self._started)

    def paint(self) -> None:
        """Write the line over the previous one."""
        line = self.text()
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + padding)
        self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.paint()

    def _clear_line(self, record: logging.LogRecord) -> bool:
        self.stream.write("\r\x1b[K")
        self._width = 0
        return True


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # closed or detached stream
        return False


def combine(*meters: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """One meter for ``run_unit`` that feeds every given one; None if none.

    ``run_unit`` takes a single meter, and a worker has two things to feed:
    its pacer and the progress bar.  Called in the order given, so put the
    progress bar first to count bytes before a pacer sleeps.
    """
    present = [meter for meter in meters if meter is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def both(nbytes: int) -> None:
        for meter in present:
            meter(nbytes)

    return both
