"""``tracker kill``: stop dumps that must not go on, from cron every minute.

After a failover the local server is no longer a replica (or read_only was
turned off); dumps must stop at once so the new master is not loaded, and
nobody should have to drop a user at 3 a.m.  So when the server is not a
replica, or with ``force``, every tracker dump query on it is killed and
every local tracker process for it is told to stop (SIGTERM).  On a healthy
replica only orphans are killed: tagged queries whose tracker process is
gone (a ``kill -9`` of tracker leaves the server writing an OUTFILE nobody
reads, in follow mode into an unlinked file that keeps growing).

Dump queries are found by the tag every one carries (``/* tracker pid=N``).
No MySQL user is ever dropped or changed.  Once the orphans are killed,
their OUTFILEs left in outfile_dir (a tracker stopped between the server
creating the file and tracker unlinking it) are removed too.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from tracker.config import DEFAULT_PATH, Config
from tracker.db import connect, error_text, kill_query, query_all, query_one
from tracker.errors import KillFailed
from tracker.db import TAG_PREFIX
from tracker.replicaset.dialect import Dialect, dialect_of, read_only_is_on
from tracker.replicaset.replica import read_status

log = logging.getLogger(__name__)

_TAG = re.compile(re.escape(TAG_PREFIX) + r"pid=(\d+) ")
_COMMANDS = ("run", "dump")


@dataclass(frozen=True)
class TaggedQuery:
    connection_id: int
    pid: int


@dataclass
class KillReport:
    reason: str = ""
    queries: list[TaggedQuery] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # stale OUTFILEs (and FIFOs) removed


# The names tracker gives its OUTFILEs and FIFOs (tracker/dump/units.py).
_OUTFILE = re.compile(r"tracker-(\d+)-\d+-[0-9a-f]+\.tsv")


def remove_stale_outfiles(directory: Path | None) -> list[Path]:
    """Remove OUTFILEs of tracker processes that are gone; the removed paths.

    A tracker killed after the server created its OUTFILE but before it
    opened and unlinked it leaves the file behind, and the orphaned query
    goes on filling it: on a DBA's disk that is a table's worth of text
    nobody will read.  Files of live tracker processes are left alone.
    """
    removed: list[Path] = []
    if directory is None or not directory.is_dir():
        return removed
    for path in directory.iterdir():
        match = _OUTFILE.fullmatch(path.name)
        if match is None or is_tracker_process(int(match.group(1))):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours to remove (permissions): say so, go on
            log.warning("event=stale_outfile_not_removed path=%s error=%s", path, exc.strerror)
            continue
        removed.append(path)
        log.warning("event=stale_outfile_removed path=%s pid=%s", path, match.group(1))
    return removed


def tagged_queries(conn: pymysql.Connection, dialect: Dialect | None = None) -> list[TaggedQuery]:
    """Tracker's dump statements running on the server, with the pid in their tag.

    The process list is the dialect's: ``performance_schema.processlist``
    on MySQL 8.0.22+ (the information_schema one is deprecated there),
    ``information_schema.PROCESSLIST`` on MariaDB; both have ID and INFO,
    and ID is what CONNECTION_ID() and KILL QUERY use.
    """
    processlist = (dialect or dialect_of(conn)).processlist
    rows = query_all(
        conn,
        f"SELECT ID, INFO FROM {processlist} WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
        ("%" + TAG_PREFIX + "pid=%",),
    )
    found = []
    for connection_id, info in rows:
        match = _TAG.search(info.decode() if isinstance(info, bytes) else str(info))
        if match:
            found.append(TaggedQuery(int(connection_id), int(match.group(1))))
    return found


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_tracker_process(pid: int) -> bool:
    """A live local process running ``tracker run`` or ``tracker dump``."""
    words = _argv(pid)
    runs_tracker = any(w == "tracker" or w.endswith("/tracker") for w in words)
    return runs_tracker and any(w in _COMMANDS for w in words)


def config_of(pid: int) -> str:
    """The config file a tracker process uses: --config, $TRACKER_CONFIG, or the default."""
    words = _argv(pid)
    for i, word in enumerate(words):
        if word == "--config" and i + 1 < len(words):
            return os.path.realpath(words[i + 1])
        if word.startswith("--config="):
            return os.path.realpath(word.split("=", 1)[1])
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        environ = []
    for item in environ:
        if item.startswith(b"TRACKER_CONFIG="):
            return os.path.realpath(item.split(b"=", 1)[1].decode(errors="replace"))
    return os.path.realpath(DEFAULT_PATH)


def tracker_processes(config_path: str) -> list[int]:
    """Local ``tracker run``/``dump`` processes using this config (this server), not this one."""
    me, mine = os.getpid(), os.path.realpath(config_path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        if is_tracker_process(pid) and config_of(pid) == mine:
            pids.append(pid)
    return sorted(pids)


def failover_reason(conn: pymysql.Connection, dialect: Dialect | None = None) -> str:
    """Why dumps must stop on this server, or "" on a healthy replica.

    ``read_only`` alone decides, on every flavor: MySQL's super_read_only
    can only be ON while read_only is ON (setting it sets read_only, turning
    read_only off turns it off), so a promoted MySQL server shows read_only
    off either way, and a replica with super_read_only off but read_only on
    is still a replica.  MariaDB 12's enum values other than OFF count as on.
    """
    dialect = dialect or dialect_of(conn)
    if read_status(conn, dialect) is None:
        return "the local server is not a replica"
    row = query_one(conn, dialect.read_only)
    if row is not None and not read_only_is_on(row[0]):
        return "read_only is off on the local server"
    return ""


def kill(config: Config, *, force: bool = False, orphans_only: bool = False) -> KillReport:
    """Kill what must stop; see the module doc.  ``orphans_only``: never failover mode."""
    conn = connect(config.mysql)
    try:
        reason = "forced" if force else ("" if orphans_only else failover_reason(conn))
        report = KillReport(reason=reason)
        for query in tagged_queries(conn):
            if (reason or not is_tracker_process(query.pid)) and kill_query(conn, query.connection_id):
                report.queries.append(query)
                log.warning(
                    "event=killed_query connection=%d pid=%d why=%s",
                    query.connection_id,
                    query.pid,
                    reason or "orphan (its tracker process is gone)",
                )
        if reason:
            for pid in sorted(set(tracker_processes(config.path)) | {q.pid for q in report.queries if is_tracker_process(q.pid)}):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                report.processes.append(pid)
                log.warning("event=stopped_process pid=%d why=%s", pid, reason)
        report.files = remove_stale_outfiles(config.outfile_dir)
        return report
    except pymysql.MySQLError as exc:
        raise KillFailed(f"kill on {config.mysql.host}:{config.mysql.port} failed: {error_text(exc)}") from None
    finally:
        conn.close()
