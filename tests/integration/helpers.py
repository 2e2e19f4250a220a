"""Helpers for integration tests: configs, running the CLI, restoring parts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pymysql
import yaml

from sandbox import MariaDB

TRACKER_PASSWORD = "tracker-secret-pw"


def write_config(directory: Path, server: MariaDB, destination: str, **extra: Any) -> Path:
    """A config for ``server`` as the tracker user; ``extra`` keys override."""
    data: dict[str, Any] = {
        "namespace": "main",
        "mysql": {"host": "127.0.0.1", "port": server.port, "user": "tracker", "password": TRACKER_PASSWORD},
        "outfile_dir": str(server.outfile_dir),
        "destination": destination,
        "workers": 2,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = directory / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def tracker_argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tracker", "--config", str(config), *args]


def run_tracker(config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(tracker_argv(config, *args), env=env, capture_output=True, timeout=timeout)


def _as_from_a_terminal() -> None:
    """In the child: Ctrl-C's signal handled as on a terminal.

    A shell that starts the suite in the background (``cmd &`` without job
    control) hands its children SIGINT ignored, and Python keeps it ignored:
    the tests that send it would then test nothing but that.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_tracker(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        tracker_argv(config, *args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_from_a_terminal
    )


def s3_env(moto_server) -> dict[str, str]:
    return moto_server.subprocess_env()


def tagged_queries(server: MariaDB) -> list[tuple]:
    """Tracker's dump statements still running on ``server``."""
    return server.sql(
        "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE INFO LIKE '%%/* tracker %%' AND ID <> CONNECTION_ID()"
    )


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def outfile_bytes_on_disk(server: MariaDB, pids: list[int] | None = None) -> int:
    """Blocks held by files under outfile_dir, including unlinked ones still open.

    An unlinked file is invisible to ``du`` but still fills the disk, so open
    descriptors are counted too: of every process, or only of ``pids`` (the
    server and tracker), which costs far less CPU when sampled often.
    """
    prefix = str(server.outfile_dir)
    seen: set[tuple[int, int]] = set()
    total = 0
    paths = [str(p) for p in server.outfile_dir.iterdir()]
    procs = [Path(f"/proc/{pid}") for pid in pids] if pids is not None else list(Path("/proc").iterdir())
    for proc in procs:
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                try:
                    if os.readlink(fd).startswith(prefix):
                        paths.append(str(fd))
                except OSError:
                    continue
        except OSError:
            continue
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


@dataclass
class Sampler:
    """Samples a value in a thread; keeps the maximum."""

    fn: Any
    interval: float = 0.02
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "Sampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.fn())
            except Exception:
                pass
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


def peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def restore(
    server: MariaDB, db: str, schema_sql: str, manifest: dict, parts: Iterable[bytes], log_bin: bool = True
) -> None:
    """Create the table from ``schema.sql`` in ``db`` and load decompressed parts.

    ``log_bin=False`` keeps a large restore on a master out of its binlog.
    """
    from tracker.dump.columns import load_data_sql
    from tracker.db import quote_ident

    conn = server.connect(database=db, local_infile=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00', sql_mode = ''")
            if not log_bin:
                cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute(schema_sql)
            table_sql = quote_ident(manifest["table"])
            for data in parts:
                with tempfile.NamedTemporaryFile(suffix=".tsv") as f:
                    f.write(data)
                    f.flush()
                    cur.execute(load_data_sql(manifest["columns"], table_sql), (f.name,))
                    cur.execute("SHOW WARNINGS")
                    warnings = cur.fetchall()
                    assert not warnings, warnings[:5]
    finally:
        conn.close()


def lz4_cli_decompress(data: bytes) -> bytes:
    """Decompress with the standard ``lz4`` tool: proves the format is standard."""
    result = subprocess.run(["lz4", "-d", "-c"], input=data, capture_output=True, check=True)
    return result.stdout


def checksum(server: MariaDB, db: str, table: str) -> int:
    from tracker.db import qualified

    return server.sql(f"CHECKSUM TABLE {qualified(db, table)} EXTENDED")[0][1]


def send_signal_when(proc: subprocess.Popen, predicate, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    assert wait_for(predicate, timeout), "condition for the signal never came"
    proc.send_signal(sig)




def create_big_table(server: MariaDB, rows: int) -> str:
    """A large table of binary rows on ``server`` only (binlog off: not replicated); returns db.table."""
    import uuid

    db = f"big_{uuid.uuid4().hex[:8]}"
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute(f"CREATE DATABASE {db}")
            cur.execute(f"USE {db}")
            cur.execute("CREATE TABLE big (id INT PRIMARY KEY, a BIGINT, b VARBINARY(1100), c VARCHAR(40))")
            cur.execute(
                "INSERT INTO big SELECT seq, seq * 7, CONCAT(RANDOM_BYTES(500), x'005c0a09', RANDOM_BYTES(500)),"
                f" MD5(seq) FROM seq_1_to_{rows}"
            )
    finally:
        conn.close()
    return f"{db}.big"


def unreplicated(server: MariaDB, *statements: str) -> None:
    """Run ``statements`` on ``server`` with the binlog off: they stay on that server."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            for statement in statements:
                cur.execute(statement)
                cur.fetchall()
    finally:
        conn.close()


def drop_unreplicated(server: MariaDB, db: str) -> None:
    unreplicated(server, f"DROP DATABASE IF EXISTS {db}")


# --- holding a dump open, whatever the machine's speed ----------------------------
#
# A test that needs a dump "still running" must not hope the table is big
# enough: it holds the dump.  ``held_table`` stops the server's dump query
# before its first byte; the S3 fault proxy's hold (sandbox/faults.py)
# stops a dump between two parts of its upload.


def create_small_table(server: MariaDB, rows: int = 100, engine: str = "InnoDB") -> str:
    """A small table on ``server`` only (binlog off: not replicated); returns db.table.

    ``engine="MyISAM"`` for ``held_by_table_lock``.
    """
    import uuid

    db = f"held_{uuid.uuid4().hex[:8]}"
    unreplicated(
        server,
        f"CREATE DATABASE {db}",
        f"USE {db}",  # the seq_ tables need a current database
        f"CREATE TABLE {db}.t (id INT PRIMARY KEY, b VARBINARY(40)) ENGINE={engine}",
        f"INSERT INTO {db}.t SELECT seq, CONCAT(x'005c0a09', MD5(seq)) FROM seq_1_to_{rows}",
    )
    return f"{db}.t"


@contextlib.contextmanager
def held_table(server: MariaDB, table: str, *more: str) -> Iterator[Callable[[], None]]:
    """While inside, every dump query of ``table`` (``db.table``, plain names) waits; yields ``release``.

    ``more`` tables are held too, by the same session (released together).

    A root session holds ``LOCK TABLES ... WRITE``: a dump's SELECT needs a
    shared metadata lock on the table and waits for it in the process list
    (state "Waiting for table metadata lock") -- running, tagged, killable --
    until ``release()`` or the end of the block.  Its transaction, and the
    metadata locks it holds on tables it read before, stay open meanwhile.
    """
    conn = server.connect()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            with conn.cursor() as cur:
                cur.execute("UNLOCK TABLES")

    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLES " + ", ".join(f"{name} WRITE" for name in (table, *more)))
        yield release
    finally:
        try:
            release()
        finally:
            conn.close()


def held_dumps(server: MariaDB) -> list[tuple]:
    """Tracker's dump queries on ``server`` that wait for a table ``held_table`` or ``held_by_table_lock`` holds."""
    return server.sql(
        "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE INFO LIKE '%%/* tracker %%'"
        " AND INFO LIKE '%%OUTFILE%%' AND ID <> CONNECTION_ID()"
        " AND STATE IN ('Waiting for table metadata lock', 'Waiting for table level lock')"
    )


@contextlib.contextmanager
def held_by_table_lock(server: MariaDB, table: str) -> Iterator[Callable[[], None]]:
    """Like ``held_table``, but the wait outlives the dump's client; ``table`` must be MyISAM.

    For orphans (a query whose tracker is dead): MariaDB ends a metadata
    lock wait within a second once the client is gone, but not a wait for
    a *table-level* lock, which only KILL ends.  A root session's UPDATE
    of the MyISAM table sleeps (``SLEEP(3600)``) holding the table's write
    lock; it takes a shared metadata lock only, so a dump's SELECT gets its
    metadata lock and then waits in state "Waiting for table level lock"
    -- running, tagged, killable, before its first byte -- until
    ``release()`` (KILL QUERY of the UPDATE, which changes nothing) or the
    end of the block.
    """
    holder = server.connect()
    holder_id = holder.thread_id()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with holder.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute(f"UPDATE {table} SET b = b WHERE id = 1 AND SLEEP(3600) = 0")
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1317:  # "Query execution was interrupted": released
                failure.append(exc)

    thread = threading.Thread(target=hold, name="table-lock-holder", daemon=True)
    thread.start()
    sleeping = "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s AND STATE = 'User sleep'"
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            server.sql(f"KILL QUERY {int(holder_id)}")
            thread.join(30)
            assert not failure, failure

    try:
        assert wait_for(lambda: server.sql(sleeping, (holder_id,)) or not thread.is_alive(), 30), "no table lock"
        assert thread.is_alive(), f"the table lock holder ended: {failure}"
        yield release
    finally:
        try:
            release()
        finally:
            holder.close()

