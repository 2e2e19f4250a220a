"""Connections to MySQL/MariaDB and the few facts tracker needs about a server.

Identifiers are only ever put into SQL through :func:`quote_ident`; values
only as query parameters.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT

from tracker.config import MySQLConfig
from tracker.errors import DumpFailed

log = logging.getLogger(__name__)

# Every dump query starts with this comment; `tracker kill` finds them by it.
TAG_PREFIX = "/* tracker "

# Session settings every dump runs under: a fixed time zone so TIMESTAMP
# values are UTC whatever the server's default, and an empty sql_mode so
# PAD_CHAR_TO_FULL_LENGTH or NO_BACKSLASH_ESCAPES cannot alter the output or
# our own statement.
SESSION_SETTINGS = "SET SESSION time_zone = '+00:00', sql_mode = ''"


def quote_ident(name: str) -> str:
    """Quote a MySQL identifier: backticks around, inner backticks doubled."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return "`" + name.replace("`", "``") + "`"


def qualified(db: str, table: str) -> str:
    """``db.table`` as quoted SQL."""
    return f"{quote_ident(db)}.{quote_ident(table)}"


def describe(config: MySQLConfig) -> str:
    """Where a config points, for messages (never the password)."""
    where = config.socket or f"{config.host}:{config.port}"
    return f"{config.user}@{where}"


def is_local(config: MySQLConfig) -> bool:
    """True for a socket or a loopback address."""
    return bool(config.socket) or config.host in ("localhost", "::1") or config.host.startswith("127.")


def connect(
    config: MySQLConfig,
    *,
    read_timeout: int | None = None,
    found_rows: bool = False,
    multi_statements: bool = False,
    what: str = "MySQL",
) -> pymysql.Connection:
    """Open an autocommit connection; errors become one-line ``DumpFailed``.

    ``read_timeout`` stays unset for dump connections: an OUTFILE query of a
    large table sends nothing back for hours, and that is not a failure.
    ``found_rows`` makes UPDATE report matched rather than changed rows, which
    lease checks rely on (an extension within the same microsecond changes
    nothing but must still count).  ``multi_statements`` lets one query
    carry several statements; only short-lived connections that send nothing
    but statements built from quoted identifiers turn it on (one round trip
    for many ``SHOW CREATE TABLE``), never a connection that takes values.
    """
    try:
        return pymysql.connect(
            host=config.host,
            port=config.port,
            unix_socket=config.socket,
            user=config.user,
            password=config.password,
            connect_timeout=config.connect_timeout,
            read_timeout=read_timeout,
            autocommit=True,
            charset="utf8mb4",
            cursorclass=pymysql.cursors.Cursor,
            # TLS to the server on this host protects nothing; pymysql's
            # "preferred" TLS would load the CA store (~45 ms of CPU) for
            # every connection.
            ssl_disabled=is_local(config),
            client_flag=(CLIENT.FOUND_ROWS if found_rows else 0) | (CLIENT.MULTI_STATEMENTS if multi_statements else 0),
        )
    except pymysql.MySQLError as exc:
        raise DumpFailed(f"cannot connect to {what} {describe(config)}: {error_text(exc)}") from None


def error_text(exc: BaseException) -> str:
    """A pymysql error as ``(code) message`` on one line."""
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {' '.join(str(args[1]).split())}"
    return " ".join(str(exc).split()) or type(exc).__name__


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def kill_query(conn: pymysql.Connection, connection_id: int) -> bool:
    """``KILL QUERY`` on another connection; False if it had already ended."""
    try:
        with conn.cursor() as cur:
            cur.execute("KILL QUERY %s", (connection_id,))
        return True
    except pymysql.MySQLError as exc:
        if error_code(exc) == 1094:  # ER_NO_SUCH_THREAD: it ended by itself meanwhile
            return False
        raise


def bind(conn: pymysql.Connection, sql: str, args: tuple) -> str:
    """``sql`` with its ``%s`` placeholders replaced by ``args`` as SQL literals, as PyMySQL's ``execute`` does.

    Each distinct value is escaped once: a statement over a batch of small
    tables repeats its namespace, date and token in every row (about fifty
    escapes a table, one call each through PyMySQL's type dispatch).
    """
    literals: dict[tuple[type, object], str] = {}
    out = []
    for arg in args:
        key = (type(arg), arg)
        try:
            literal = literals.get(key)
        except TypeError:  # unhashable: escaped as it comes
            out.append(conn.escape(arg))
            continue
        if literal is None:
            literal = literals[key] = conn.escape(arg)
        out.append(literal)
    return sql % tuple(out)


def query_all(conn: pymysql.Connection, sql: str, args: object = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def query_one(conn: pymysql.Connection, sql: str, args: object = None) -> tuple | None:
    rows = query_all(conn, sql, args)
    return rows[0] if rows else None


FLAVORS = ("mariadb", "mysql", "percona")

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def parse_version(version: str) -> tuple[int, int, int]:
    """``@@version`` as (major, minor, patch); (0, 0, 0) if it has none.

    MariaDB's replication-compatible prefix (``5.5.5-10.11.6-MariaDB``) is
    skipped; suffixes (``-log``, Percona's ``-28``) are ignored.
    """
    text = version.strip()
    if text.startswith("5.5.5-") and _VERSION.match(text[len("5.5.5-"):]):
        text = text[len("5.5.5-"):]
    match = _VERSION.match(text)
    if not match:
        return (0, 0, 0)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)))


def flavor_of(version: str, version_comment: str) -> str:
    """mariadb, percona or mysql, from ``@@version`` and ``@@version_comment``.

    Percona Server reports a MySQL-like version; only its comment
    (``Percona Server (GPL), Release 28, ...``) names it.
    """
    text = f"{version} {version_comment}".lower()
    if "mariadb" in text:
        return "mariadb"
    if "percona" in text:
        return "percona"
    return "mysql"


@dataclass(frozen=True)
class ServerInfo:
    """Identity and capabilities of the server tracker talks to."""

    hostname: str
    port: int
    version: str
    version_comment: str
    secure_file_priv: str | None
    performance_schema: bool = False  # @@performance_schema: is its processlist table filled?

    @property
    def flavor(self) -> str:
        """One of :data:`FLAVORS`."""
        return flavor_of(self.version, self.version_comment)

    @property
    def flavour(self) -> str:
        """Alias of :attr:`flavor` (older callers)."""
        return self.flavor

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def label(self) -> str:
        """``@@hostname:@@port``: how manifests name the producing server."""
        return f"{self.hostname}:{self.port}"


def server_info(conn: pymysql.Connection) -> ServerInfo:
    row = query_one(
        conn,
        "SELECT @@hostname, @@port, @@version, @@version_comment, @@secure_file_priv, @@performance_schema",
    )
    assert row is not None
    return ServerInfo(
        hostname=str(row[0]),
        port=int(row[1]),
        version=str(row[2]),
        version_comment=str(row[3]),
        secure_file_priv=None if row[4] is None else str(row[4]),
        performance_schema=bool(int(row[5] or 0)),
    )
