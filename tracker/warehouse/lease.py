"""A converter's lease on one output dataset, kept in the store itself.

``tracker convert`` runs on any host and has no MySQL, so the lease that
keeps two converters of one dataset from publishing a mix lives next to the
files: numbered objects ``dt=D/_lease-00000001.json``, ``_lease-00000002.json``
... each created with the store's no-clobber commit (``If-None-Match: *`` on
S3, a rename that never replaces on ``file://``).  The highest number is the lease.  Taking it
(or renewing it) means creating the next number, which exactly one writer
can do: a compare-and-set that needs no conditional delete.

* The holder renews every third of ``seconds`` (a new number with a new
  expiry) from a background thread, and checks right before committing each
  file and ``_SUCCESS`` that the highest number is still its own with at
  least a third of the lease left.
* Another converter may take the lease only when the highest one has
  expired, or when it names this host and a pid that no longer runs (a
  killed converter: taken over at once).
* Expiry is wall-clock time of the writing host: hosts' clocks must agree
  within a third of the lease (NTP).

Names start with ``_`` so readers (Spark, Hive, pyarrow, DuckDB globs of
``*.parquet``) skip them; the holder deletes its numbers when it is done.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from tracker.errors import LeaseLost, UploadFailed
from tracker.store.sinks import Store

log = logging.getLogger(__name__)

_NAME = re.compile(r"_lease-(\d{8})\.json$")
_ATTEMPTS = 5


@dataclass(frozen=True)
class Holder:
    """What one lease object says."""

    seq: int
    token: str
    host: str
    pid: int
    expires: float  # seconds since the epoch, the writer's clock

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid} until {time.strftime('%H:%M:%S', time.gmtime(self.expires))} UTC"

    def lapsed(self, now: float) -> bool:
        """Expired, or held by a process of this host that is gone."""
        if self.expires <= now:
            return True
        return self.host == socket.gethostname() and not _alive(self.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def lease_key(prefix: str, seq: int) -> str:
    return f"{prefix}/_lease-{seq:08d}.json"


def _numbers(store: Store, prefix: str) -> list[int]:
    numbers = []
    for key in store.list(f"{prefix}/"):  # file:// lists folders only, not name prefixes
        match = _NAME.search(key)
        if match and key.rsplit("/", 1)[0] == prefix:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def current(store: Store, prefix: str) -> Holder | None:
    """The highest lease object under ``prefix``, or None."""
    numbers = _numbers(store, prefix)
    if not numbers:
        return None
    data = store.get(lease_key(prefix, numbers[-1]))
    if data is None:  # deleted by its holder since the listing: treat as free
        return None
    doc = json.loads(data)
    return Holder(numbers[-1], doc["token"], doc["host"], int(doc["pid"]), float(doc["expires"]))


def _create(store: Store, prefix: str, seq: int, token: str, seconds: float) -> bool:
    """Create lease number ``seq``; False when another writer created it first."""
    doc = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + seconds}
    key = lease_key(prefix, seq)
    try:
        with store.upload(key, lambda: None, overwrite=False) as upload:
            upload.write(json.dumps(doc).encode())
    except UploadFailed:
        if store.exists(key):
            return False  # lost the race for this number
        raise
    return True


def check_lease(store: Store, prefix: str, token: str, margin: float) -> None:
    """Raise ``LeaseLost`` unless ``token`` holds the lease for ``margin`` more seconds.

    A plain function so a Spark executor can call it before it commits a file.
    """
    holder = current(store, prefix)
    if holder is None or holder.token != token:
        who = holder.describe() if holder else "nobody"
        raise LeaseLost(f"{store.url(prefix)}: the converter's lease was lost (now held by {who}); nothing committed")
    left = holder.expires - time.time()
    if left < margin:
        raise LeaseLost(f"{store.url(prefix)}: the converter's lease has only {left:.0f} s left; nothing committed")


class StoreLease:
    """Hold the lease on one dataset folder while converting it.

    ``acquire`` returns None when taken, else the live holder that has it.
    Use as a context manager after a successful ``acquire``: renews in a
    thread, releases (deletes its lease objects) on exit.
    """

    def __init__(self, store: Store, prefix: str, seconds: float) -> None:
        self.store = store
        self.prefix = prefix
        self.seconds = seconds
        self.token = secrets.token_hex(16)
        self.margin = seconds / 3
        self._seq = 0
        self._lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Holder | None:
        for _ in range(_ATTEMPTS):
            holder = current(self.store, self.prefix)
            if holder is not None and not holder.lapsed(time.time()):
                return holder
            seq = (holder.seq if holder else max(_numbers(self.store, self.prefix), default=0)) + 1
            if _create(self.store, self.prefix, seq, self.token, self.seconds):
                self._seq = seq
                if holder is not None:
                    log.info("event=convert_lease_taken_over prefix=%s from=%s", self.prefix, holder.describe())
                return None
        holder = current(self.store, self.prefix)
        assert holder is not None  # somebody kept winning the race: they hold it
        return holder

    def __enter__(self) -> "StoreLease":
        self._thread = threading.Thread(target=self._renew_loop, name="convert-lease", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.renew()
            except LeaseLost as exc:
                self._lost = exc
                return
            except Exception as exc:  # a store hiccup: the next check decides
                log.warning("event=convert_lease_renew_failed prefix=%s error=%s", self.prefix, exc)

    def renew(self) -> None:
        """Create the next number, but only over our own: a lease released or taken meanwhile stays lost."""
        holder = current(self.store, self.prefix)
        if holder is None or holder.token != self.token or holder.seq != self._seq:
            raise LeaseLost(f"{self.store.url(self.prefix)}: another converter took the lease")
        if not _create(self.store, self.prefix, self._seq + 1, self.token, self.seconds):
            raise LeaseLost(f"{self.store.url(self.prefix)}: another converter took the lease")
        self._seq += 1

    def check(self) -> None:
        """Right before a commit: still ours, with a margin left."""
        if self._lost is not None:
            raise self._lost
        check_lease(self.store, self.prefix, self.token, self.margin)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release()

    def release(self) -> None:
        """Delete our lease objects, lowest first: the highest (ours) goes last.

        Deleting the top last keeps anyone who lists meanwhile seeing a
        live lease; once it is gone the next converter starts at 1 again.
        """
        try:
            holder = current(self.store, self.prefix)
            if holder is None or holder.token != self.token:
                return  # taken over: the objects are no longer ours to delete
            for seq in _numbers(self.store, self.prefix):
                if seq <= holder.seq:
                    self.store.delete(lease_key(self.prefix, seq))
        except Exception as exc:  # leftovers expire on their own
            log.warning("event=convert_lease_release_failed prefix=%s error=%s", self.prefix, exc)
