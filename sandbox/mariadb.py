"""Real MariaDB servers for tests: single instances and a GTID replica set.

The tracker dumps tables from replicas with ``SELECT ... INTO OUTFILE``, so
its tests need genuine servers with binlogs, GTID replication, and a
``secure_file_priv`` directory.  Nothing here is mocked: each ``MariaDB`` is a
``mariadbd`` process with its own datadir, listening on 127.0.0.1.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from sandbox import _process

log = logging.getLogger(__name__)

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"

START_TIMEOUT_S = 60.0

TRACKER_USER = "tracker"
TRACKER_PASSWORD = "tracker-secret-pw"
# The hosts the tracker account exists for.  '%' alone would do over TCP, but
# the explicit 127.0.0.1 and localhost entries match what operators create.
TRACKER_HOSTS = ("%", "127.0.0.1", "localhost")
# Every name checked against SHOW PRIVILEGES on MariaDB 10.11.  REPLICATION
# CLIENT is an alias of BINLOG MONITOR there; SHOW GRANTS prints it as such.
TRACKER_PRIVILEGES = (
    "SELECT",
    "RELOAD",
    "PROCESS",
    "FILE",
    "SHOW VIEW",
    "REPLICATION CLIENT",
    "REPLICATION SLAVE ADMIN",
    "SLAVE MONITOR",
    "BINLOG MONITOR",
    "CONNECTION ADMIN",
    "CREATE",
    "INSERT",
    "UPDATE",
    "DELETE",
    "DROP",
    "INDEX",
    "ALTER",
    "LOCK TABLES",
)

REPL_USER = "repl"
REPL_PASSWORD = "repl-pw"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing was bound to a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (the kernel may hand one out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def install_datadir(datadir: Path) -> None:
    """Create a fresh system datadir with ``mariadb-install-db``.

    ``root`` gets an empty password usable over TCP (``normal`` auth) because
    tests connect over 127.0.0.1, never as the unix user.  The install runs
    without a binlog, so the datadir starts with an empty GTID history.
    """
    datadir.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        INSTALL_DB,
        "--no-defaults",
        f"--datadir={datadir}",
        "--user=root" if _process.is_root() else "",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]
    result = subprocess.run(  # noqa: S603 - fixed argv
        [arg for arg in argv if arg],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"mariadb-install-db failed ({result.returncode}) for {datadir}:\n{result.stdout}\n{result.stderr}"
        )


def _is_installed(datadir: Path) -> bool:
    return (datadir / "mysql").is_dir()


@dataclass
class MariaDB:
    """One ``mariadbd`` process rooted at ``basedir``.

    All of its files (datadir, socket, logs, OUTFILE directory) live under
    ``basedir`` so instances never share state and one ``rmtree`` cleans up.
    """

    name: str
    basedir: Path
    port: int
    server_id: int
    buffer_pool_mb: int = 256
    # Extra mariadbd options, after the defaults (so they win), e.g.
    # ["--performance-schema=ON"]; take effect at the next start/restart.
    options: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def datadir(self) -> Path:
        return self.basedir / "data"

    @property
    def socket(self) -> Path:
        # Unix socket paths are capped at 107 bytes, hence a short basedir.
        return self.basedir / "mysqld.sock"

    @property
    def secure_file_priv(self) -> Path:
        return self.basedir / "files"

    @property
    def outfile_dir(self) -> Path:
        """Where the tracker is expected to write its OUTFILEs on this host."""
        return self.secure_file_priv / "tracker"

    @property
    def error_log(self) -> Path:
        return self.basedir / "error.log"

    @property
    def stdout_log(self) -> Path:
        return self.basedir / "mariadbd.out"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Install the datadir if needed, launch mariadbd and wait until it serves."""
        self._launch()
        self._wait_until_ready()

    def stop(self, timeout: float = 30) -> None:
        """Shut down cleanly (SIGTERM) and reap the process.  No-op if not running."""
        if self._proc is None:
            return
        code = _process.terminate(self._proc, timeout)
        log.info("%s stopped (exit %s)", self.name, code)

    def kill(self) -> None:
        """SIGKILL the server, simulating a crash; the datadir is kept for restart."""
        if self._proc is None:
            return
        _process.kill(self._proc)
        log.info("%s killed", self.name)

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(
        self,
        user: str = "root",
        password: str = "",
        database: str | None = None,
        **kw: Any,
    ) -> pymysql.connections.Connection:
        """Open a TCP connection (autocommit on); ``kw`` overrides any default."""
        params: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": user,
            "password": password,
            "database": database,
            "autocommit": True,
            "charset": "utf8mb4",
            "connect_timeout": 10,
        }
        params.update(kw)
        return pymysql.connect(**params)

    def sql(
        self,
        statement: str,
        args: Any = None,
        user: str = "root",
        password: str = "",
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a throw-away connection and return all rows."""
        conn = self.connect(user=user, password=password)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def flush_dirty_pages(self, timeout: float = 300.0, io_capacity: int = 20_000) -> float:
        """Flush InnoDB's dirty pages now; the seconds it took.

        For benchmarks: background flushing after the set-up must not bill
        the timed runs.  The flush rate is raised for the while (at the
        default io_capacity of 200 pages/s a few hundred MB take minutes).
        """
        names = ("innodb_io_capacity_max", "innodb_io_capacity", "innodb_max_dirty_pages_pct")
        saved = {name: self.sql(f"SELECT @@GLOBAL.{name}")[0][0] for name in names}
        for name, value in zip(names, (io_capacity, io_capacity, 0)):
            self.sql(f"SET GLOBAL {name} = {value}")
        started = time.monotonic()
        try:
            while (dirty := int(self.sql("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")[0][1])) > 0:
                if time.monotonic() - started > timeout:
                    log.warning("%d dirty pages still unflushed after %.0fs", dirty, timeout)
                    break
                time.sleep(0.2)
        finally:
            for name in reversed(names):  # io_capacity before io_capacity_max: max >= capacity
                self.sql(f"SET GLOBAL {name} = {saved[name]}")
        return time.monotonic() - started

    def slave_status(self) -> dict[str, Any] | None:
        """``SHOW SLAVE STATUS`` as a dict, or None when replication is not set up."""
        conn = self.connect(cursorclass=pymysql.cursors.DictCursor)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW SLAVE STATUS")
                row = cur.fetchone()
                return dict(row) if row else None
        finally:
            conn.close()

    # -- internals -------------------------------------------------------

    def _launch(self) -> None:
        """Start mariadbd without waiting; lets a replica set boot in parallel."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if not _is_installed(self.datadir):
            install_datadir(self.datadir)
        self.outfile_dir.mkdir(parents=True, exist_ok=True)
        (self.basedir / "tmp").mkdir(exist_ok=True)
        self._proc = _process.spawn(self._argv(), self.stdout_log)
        log.info("%s starting: pid %d, port %d", self.name, self._proc.pid, self.port)

    def _argv(self) -> list[str]:
        argv = [MARIADBD, "--no-defaults"]  # --no-defaults must come first
        if _process.is_root():
            argv.append("--user=root")
        argv += [
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={self.basedir / 'mysqld.pid'}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.basedir / 'tmp'}",
            "--bind-address=127.0.0.1",
            f"--port={self.port}",
            f"--secure-file-priv={self.secure_file_priv}",
            f"--server-id={self.server_id}",
            # Explicit names: the defaults derive from the pid-file/host name.
            "--log-bin=mysql-bin",
            "--relay-log=relay-bin",
            "--log-slave-updates",
            "--binlog-format=ROW",
            "--gtid-strict-mode=ON",
            f"--innodb-buffer-pool-size={self.buffer_pool_mb}M",
            "--performance-schema=OFF",
            "--skip-name-resolve",
            "--max-connections=200",
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            "--character-set-server=utf8mb4",
            "--report-host=127.0.0.1",
            f"--report-port={self.port}",
        ]
        return argv + self.options

    def _check_identity(self) -> None:
        """Log in and make sure the server on our port is ours.

        ``free_port`` is racy: another process may grab the port before
        mariadbd binds it, and then our server exits while a probe would
        happily talk to the stranger.  Short read/write timeouts keep a
        non-MySQL listener on the port from hanging the probe.
        """
        conn = self.connect(connect_timeout=1, read_timeout=2, write_timeout=2)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@datadir")
                (datadir,) = cur.fetchone()
        finally:
            conn.close()
        if Path(datadir).resolve() != self.datadir.resolve():
            raise RuntimeError(f"{self.name}: port {self.port} is served by another server (datadir {datadir})")

    def _wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll until our server serves; on any failure kill it so nothing leaks."""
        assert self._proc is not None
        try:
            self._poll_until_ready(self._proc, timeout)
        except BaseException:
            _process.kill(self._proc)
            raise
        log.info("%s ready on port %d", self.name, self.port)

    def _poll_until_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: mariadbd exited with {proc.returncode} during startup; "
                    f"error log tail:\n{_process.tail(self.error_log)}"
                )
            try:
                self._check_identity()
            except pymysql.err.OperationalError as exc:
                last_error = exc
                time.sleep(0.05)
                continue
            return
        raise RuntimeError(
            f"{self.name}: not serving after {timeout:.0f}s ({last_error}); "
            f"error log tail:\n{_process.tail(self.error_log)}"
        )


@dataclass
class ReplicaSet:
    """A master and its GTID replicas, as the tracker sees a production cluster."""

    master: MariaDB
    replicas: list[MariaDB]

    @property
    def instances(self) -> list[MariaDB]:
        return [self.master, *self.replicas]

    def sync(self, timeout: float = 60) -> None:
        """Block until every running replica has applied all of the master's binlog.

        Waits in short ``MASTER_GTID_WAIT`` slices so that a replica whose SQL
        thread has stopped on an error fails the test at once, with the error,
        instead of after the full timeout.
        """
        (pos,) = self.master.sql("SELECT @@gtid_binlog_pos")[0]
        if not pos:
            return
        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            if replica.is_running():
                _wait_for_gtid(replica, pos, deadline)

    def stop(self) -> None:
        """Stop replicas first (so they don't log reconnect noise), then the master.

        Tries every instance even if one fails, then re-raises the first error.
        """
        errors: list[Exception] = []
        for db in [*self.replicas, self.master]:
            try:
                db.stop()
            except (TimeoutError, OSError) as exc:
                log.error("stopping %s failed: %s", db.name, exc)
                errors.append(exc)
        if errors:
            raise errors[0]


def _wait_for_gtid(replica: MariaDB, pos: str, deadline: float) -> None:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"{replica.name} did not reach GTID {pos}; slave status: {_status_summary(replica)}"
            )
        (result,) = replica.sql("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, min(1.0, remaining)))[0]
        if result == 0:
            return
        status = replica.slave_status()
        if status and status["Slave_SQL_Running"] != "Yes" and status["Last_SQL_Errno"]:
            raise RuntimeError(f"{replica.name} replication SQL thread stopped: {_status_summary(replica)}")


def _status_summary(replica: MariaDB) -> str:
    status = replica.slave_status()
    if status is None:
        return "<not a replica>"
    keys = (
        "Slave_IO_Running",
        "Slave_SQL_Running",
        "Gtid_IO_Pos",
        "Last_IO_Errno",
        "Last_IO_Error",
        "Last_SQL_Errno",
        "Last_SQL_Error",
    )
    return ", ".join(f"{key}={status.get(key)!r}" for key in keys)


def start_replica_set(root: Path, replicas: int = 2, buffer_pool_mb: int = 256) -> ReplicaSet:
    """Boot a master and ``replicas`` replicas under ``root`` and wire up replication.

    ``mariadb-install-db`` runs once; its datadir is copied for the replicas
    before anything starts, so all instances share identical system tables and
    an empty GTID history.  The accounts are then created on the master only
    and reach the replicas through replication, like on a real cluster.

    On any failure, whatever was started is stopped before re-raising.
    """
    root.mkdir(parents=True, exist_ok=True)
    names = ["master", *(f"replica{i}" for i in range(1, replicas + 1))]
    ports = _free_ports(len(names))
    dbs = [
        MariaDB(name=name, basedir=root / name, port=port, server_id=i, buffer_pool_mb=buffer_pool_mb)
        for i, (name, port) in enumerate(zip(names, ports, strict=True), start=1)
    ]
    replica_set = ReplicaSet(master=dbs[0], replicas=dbs[1:])
    started = time.monotonic()
    try:
        _install_once(replica_set)
        for db in dbs:
            db._launch()  # noqa: SLF001 - parallel boot is the point of this module
        for db in dbs:
            db._wait_until_ready()  # noqa: SLF001
        _create_accounts(replica_set.master)
        for replica in replica_set.replicas:
            _attach_replica(replica, replica_set.master)
        replica_set.sync()
    except BaseException:
        _stop_quietly(replica_set)
        raise
    log.info("replica set up under %s in %.1fs", root, time.monotonic() - started)
    return replica_set


def _install_once(replica_set: ReplicaSet) -> None:
    """Install the master's datadir and clone it for each replica (all stopped)."""
    install_datadir(replica_set.master.datadir)
    for replica in replica_set.replicas:
        shutil.copytree(replica_set.master.datadir, replica.datadir)


def _create_accounts(master: MariaDB) -> None:
    """Create the tracker and replication accounts; they go into the master's binlog."""
    grants = ", ".join(TRACKER_PRIVILEGES)
    statements: list[tuple[str, tuple[str, ...]]] = []
    for host in TRACKER_HOSTS:
        statements.append(("CREATE USER %s@%s IDENTIFIED BY %s", (TRACKER_USER, host, TRACKER_PASSWORD)))
        statements.append((f"GRANT {grants} ON *.* TO %s@%s", (TRACKER_USER, host)))
    statements.append(("CREATE USER %s@'%%' IDENTIFIED BY %s", (REPL_USER, REPL_PASSWORD)))
    statements.append(("GRANT REPLICATION SLAVE ON *.* TO %s@'%%'", (REPL_USER,)))
    conn = master.connect()
    try:
        with conn.cursor() as cur:
            for statement, args in statements:
                cur.execute(statement, args)
    finally:
        conn.close()


def _attach_replica(replica: MariaDB, master: MariaDB) -> None:
    """Point ``replica`` at ``master`` from the start of its binlog, then make it read-only."""
    conn = replica.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, "
                "MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos",
                (master.port, REPL_USER, REPL_PASSWORD),
            )
            cur.execute("START SLAVE")
            cur.execute("SET GLOBAL read_only = ON")
    finally:
        conn.close()
    # A restart (tests restart replicas) must come back read-only too, as a
    # real replica's my.cnf would have it; tests that promote a replica set
    # read_only OFF themselves and restore it.
    if "--read-only" not in replica.options:
        replica.options.insert(0, "--read-only")


def _stop_quietly(replica_set: ReplicaSet) -> None:
    """Best-effort teardown used while another exception is already propagating."""
    for db in replica_set.instances:
        try:
            db.stop(timeout=10)
        except (TimeoutError, OSError) as exc:
            log.error("cleanup: stopping %s failed: %s", db.name, exc)
