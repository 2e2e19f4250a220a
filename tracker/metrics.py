"""Prometheus metrics in a textfile (``metrics_file``) for node_exporter's textfile collector.

Every command that does work (run, dump, verify, convert, kill) records its
outcome in one file shared by all commands and namespaces of the host.
Series (names and labels are a contract)::

    tracker_last_success_timestamp_seconds{namespace,command}  end of the last run with status 0
    tracker_last_run_timestamp_seconds{namespace,command}      end of the last run, any status
    tracker_last_exit_status{namespace,command}                its exit status
    tracker_run_duration_seconds{namespace,command}            its duration
    tracker_units_total{namespace,command,result}              done|failed|skipped (counter)
    tracker_rows_total{namespace,command}                      rows written (counter)
    tracker_bytes_total{namespace,command}                     bytes stored (counter)
    tracker_tables_incomplete{namespace,command="verify"}      tables without _SUCCESS
    tracker_objects_bad{namespace,command="verify"}            bad objects found by --deep
    tracker_replica_lag_seconds{namespace,command="run"}       the replica's lag when run started

Why these rules:

* The last success only moves on success: a failed run keeps the previous
  value (``0`` when there never was one), so "no success in 26 h" fires
  whatever the failures look like, including a first run that never
  succeeds.
* The ``_total`` series are real counters (each run adds to the value in
  the file), so ``increase(...[1d])`` works and a deleted file is just a
  counter reset.  A run that fails before it counted anything carries them
  on unchanged.
* Writers are serialised by an exclusive ``flock`` on ``<file>.lock`` next
  to the file (two commands, or two namespaces' crons, end at the same
  time): each reads the file, replaces its own series and writes a
  temporary file in the same directory that it renames over the file.  The
  collector therefore sees the old or the new file, never half of one, and
  no writer loses another's series.  The lock file does not end in
  ``.prom``, so the collector ignores it.
* Writing metrics never changes a command's status: a failure is logged
  (``event=metrics_write_failed``) and the stale file then trips the
  staleness alert.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

METERED = ("run", "dump", "verify", "convert", "kill")
RESULTS = ("done", "failed", "skipped")

# name -> (type, help); the order is the order in the file.
METRICS: dict[str, tuple[str, str]] = {
    "tracker_last_success_timestamp_seconds": ("gauge", "End of the last run that exited 0 (0: never)."),
    "tracker_last_run_timestamp_seconds": ("gauge", "End of the last run, whatever its status."),
    "tracker_last_exit_status": ("gauge", "Exit status of the last run (0 ok, 1 failed, 2 usage/config, 3 refused)."),
    "tracker_run_duration_seconds": ("gauge", "Duration of the last run."),
    "tracker_units_total": ("counter", "Units (run) or tables (dump, convert) by result."),
    "tracker_rows_total": ("counter", "Rows written."),
    "tracker_bytes_total": ("counter", "Bytes stored."),
    "tracker_tables_incomplete": ("gauge", "Tables whose dataset is missing or incomplete (last verify)."),
    "tracker_objects_bad": ("gauge", "Objects found missing or corrupt by the last verify --deep."),
    "tracker_replica_lag_seconds": ("gauge", "Replica lag when the last run started."),
}

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Series = dict[tuple[str, Labels], float]


@dataclass
class Observed:
    """What a command body counted; None: not known (the series is carried on or left out)."""

    units: dict[str, int] = field(default_factory=dict)
    rows: int | None = None
    bytes: int | None = None
    tables_incomplete: int | None = None
    objects_bad: int | None = None
    replica_lag_seconds: float | None = None


class CommandMeter:
    """One command's metrics: started by the CLI, filled by the command body, written at the end."""

    def __init__(self, command: str, clock=time.time, monotonic=time.monotonic) -> None:
        self.command = command
        self.observed = Observed()
        self._clock = clock
        self._monotonic = monotonic
        self._started = monotonic()
        self._path: Path | None = None
        self._namespace = ""
        self._enabled = command in METERED
        self._finished = False

    def bind(self, path: Path | None, namespace: str) -> None:
        """The config is loaded: where to write, and the namespace label."""
        self._path, self._namespace = path, namespace

    def disable(self) -> None:
        """Nothing to record (``run --dry-run``: it did nothing and must not count as a run)."""
        self._enabled = False

    def count(self, *, done: int = 0, failed: int = 0, skipped: int = 0, rows: int | None = None, nbytes: int | None = None) -> None:
        units = self.observed.units
        for result, n in (("done", done), ("failed", failed), ("skipped", skipped)):
            units[result] = units.get(result, 0) + n
        if rows is not None:
            self.observed.rows = (self.observed.rows or 0) + rows
        if nbytes is not None:
            self.observed.bytes = (self.observed.bytes or 0) + nbytes

    def finish(self, status: int | None) -> None:
        """Write this command's series (once); a failure to write is logged, never raised."""
        if self._finished or not self._enabled or self._path is None:
            return
        self._finished = True
        status = 0 if status is None else status
        try:
            record(
                self._path,
                self._namespace,
                self.command,
                status=status,
                finished_at=self._clock(),
                duration=self._monotonic() - self._started,
                observed=self.observed,
            )
        except OSError as exc:
            log.warning("event=metrics_write_failed path=%s error=%s", self._path, exc.strerror or exc)


# --- the file --------------------------------------------------------------------


def record(path: Path, namespace: str, command: str, *, status: int, finished_at: float, duration: float, observed: Observed) -> None:
    """Replace ``command``'s series for ``namespace`` in ``path``, under the file's lock."""
    with _locked(path):
        try:
            previous = parse(path.read_text())
        except FileNotFoundError:
            previous = {}
        merged = merge(previous, namespace, command, status=status, finished_at=finished_at, duration=duration, observed=observed)
        _replace(path, render(merged))
    log.info("event=metrics_written path=%s command=%s status=%s", path, command, status)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
        yield


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # the collector runs as another user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def merge(
    previous: Series, namespace: str, command: str, *, status: int, finished_at: float, duration: float, observed: Observed
) -> Series:
    """``previous`` with ``command``'s series for ``namespace`` replaced (see the module docstring)."""
    mine = (("command", command), ("namespace", namespace))
    old = {key: value for key, value in previous.items() if _owned(key[1], namespace, command)}
    series = {key: value for key, value in previous.items() if key not in old}

    def key(name: str, extra: dict[str, str]) -> tuple[str, Labels]:
        return name, tuple(sorted(mine + tuple(extra.items())))

    def put(name: str, value: float, **extra: str) -> None:
        series[key(name, extra)] = float(value)

    def before(name: str, **extra: str) -> float | None:
        return old.get(key(name, extra))

    success = before("tracker_last_success_timestamp_seconds")
    put("tracker_last_success_timestamp_seconds", finished_at if status == 0 else (success or 0.0))
    put("tracker_last_run_timestamp_seconds", finished_at)
    put("tracker_last_exit_status", status)
    put("tracker_run_duration_seconds", max(0.0, duration))
    counted = bool(observed.units)
    for result in RESULTS:
        prev = before("tracker_units_total", result=result)
        if counted or prev is not None:
            put("tracker_units_total", (prev or 0) + observed.units.get(result, 0), result=result)
    for name, delta in (("tracker_rows_total", observed.rows), ("tracker_bytes_total", observed.bytes)):
        prev = before(name)
        if delta is not None or prev is not None:
            put(name, (prev or 0) + (delta or 0))
    for name, value in (
        ("tracker_tables_incomplete", observed.tables_incomplete),
        ("tracker_objects_bad", observed.objects_bad),
        ("tracker_replica_lag_seconds", observed.replica_lag_seconds),
    ):
        if value is not None:  # unknown this time: left out rather than stale
            put(name, value)
    return series


def _owned(labels: Labels, namespace: str, command: str) -> bool:
    found = dict(labels)
    return found.get("namespace") == namespace and found.get("command") == command


# --- the text exposition format -------------------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse(text: str) -> Series:
    """The samples of a file this module wrote; lines it cannot read are dropped with a warning."""
    series: Series = {}
    for line in text.split("\n"):  # not splitlines: U+0085, U+2028 ... may be in label values
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        labels = _labels(match.group(2) or "") if match else None
        try:
            value = float(match.group(3)) if match else None
        except ValueError:
            value = None
        if match is None or labels is None or value is None:
            log.warning("event=metrics_line_dropped line=%r", line[:200])
            continue
        series[(match.group(1), labels)] = value
    return series


def _labels(text: str) -> Labels | None:
    pairs = []
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None:
            return None
        pairs.append((match.group(1), _unescape(match.group(2))))
        pos = match.end()
    return tuple(sorted(pairs))


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render(series: Series) -> str:
    """The exposition text: known metrics in their order with HELP and TYPE, then any others."""
    names = list(METRICS) + sorted({name for name, _ in series} - set(METRICS))
    lines: list[str] = []
    for name in names:
        samples = sorted((labels, value) for (n, labels), value in series.items() if n == name)
        if not samples:
            continue
        if name in METRICS:
            kind, text = METRICS[name]
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{shown}}} {_value(value)}" if shown else f"{name} {_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""
