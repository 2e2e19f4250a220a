"""The dump query: ``SELECT ... INTO OUTFILE`` run on its own thread.

The query's own result is the end-of-data signal for the follow source and
one of the producers the pipeline checks before committing, so it is held
here, not inferred from the bytes.
"""

from __future__ import annotations

import logging
import os
import select
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

import pymysql
from pymysql.constants import COMMAND

from tracker.db import SESSION_SETTINGS, TAG_PREFIX, error_text  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


# OUTFILE's default text format, spelled out so a changed server default
# cannot change our data format.  CHARACTER SET binary: no conversion.
INTO_CLAUSE = (
    " INTO OUTFILE {path} CHARACTER SET binary"
    " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
)



def tag(unit_label: str) -> str:
    """The comment that marks a dump query as tracker's, naming the process.

    The label is percent-encoded so no identifier can close the comment.
    """
    return f"{TAG_PREFIX}pid={os.getpid()} unit={quote(unit_label, safe='/=')} */"


def select_statement(
    unit_label: str, select_list: str, from_clause: str, path_literal: str, where: str = ""
) -> str:
    """The full dump statement.

    ``path_literal`` is the OUTFILE path already quoted by the connection
    (``conn.escape``).  The statement is sent without client-side parameter
    substitution, so a ``%`` in an identifier or the tag cannot be taken
    for a placeholder.
    """
    where_sql = f" WHERE {where}" if where else ""
    into = INTO_CLAUSE.format(path=path_literal)
    return f"SELECT {tag(unit_label)} {select_list} FROM {from_clause}{where_sql}{into}"


@dataclass
class QueryOutcome:
    rows: int | None = None
    error: BaseException | None = None


class DumpQuery:
    """One OUTFILE statement, sent on the worker's connection and answered while the worker reads its file.

    The worker sends the statement and goes on following the file the
    server writes; the server's answer (rows written, or an error) is read
    once the connection's socket holds it: :meth:`done` looks without
    waiting, :meth:`wait` waits.  There is no second thread: handing each
    unit to a thread and back costs more than dumping a small table, since
    every hand-over waits for the interpreter lock other threads hold.

    ``kill_query`` is called with the connection id to stop the statement
    from another connection (``KILL QUERY``); it is how a failed pipeline
    stops the server from writing.
    """

    def __init__(self, conn: pymysql.Connection, statement: str, kill_query: Callable[[int], None]) -> None:
        self._conn = conn
        self._statement = statement
        self._kill_query = kill_query
        self._outcome = QueryOutcome()
        self._sent = False
        self._done = False
        self.connection_id = conn.thread_id()

    def start(self) -> None:
        try:
            _send(self._conn, self._statement)
            self._sent = True
        except BaseException as exc:  # recorded, re-raised by the pipeline
            self._outcome.error = exc
            self._done = True

    def done(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the answer came within ``timeout`` seconds (None: wait for it)."""
        if self._done or not self._sent:
            return self._done
        try:
            if not _readable(self._conn, timeout):
                return False
            self._outcome.rows = _receive(self._conn)
        except BaseException as exc:  # recorded, re-raised by the pipeline
            self._outcome.error = exc
        self._done = True
        return True

    def outcome(self) -> QueryOutcome:
        """The result once done; the caller must have waited."""
        assert self._done
        return self._outcome

    def describe_error(self) -> str:
        return error_text(self._outcome.error) if self._outcome.error else ""

    def stop(self, timeout: float = 30.0) -> None:
        """Kill the statement if it still runs and wait for its answer."""
        if not self._sent or self.done():
            return
        try:
            self._kill_query(self.connection_id)
        except Exception as exc:  # the caller still waits and reports
            log.warning("event=kill_failed connection=%s error=%s", self.connection_id, exc)
        if not self.wait(timeout):
            log.error("event=query_stuck connection=%s secs=%s", self.connection_id, timeout)


# PyMySQL has no public call that sends a statement without waiting for its
# answer.  These three are the only places that use its private halves of
# ``Connection.query`` (unchanged since PyMySQL 0.x; the integration tests
# run every dump through them).


def _send(conn: pymysql.Connection, statement: str) -> None:
    conn._execute_command(COMMAND.COM_QUERY, statement.encode(conn.encoding))


def _receive(conn: pymysql.Connection) -> int:
    """The answer to what :func:`_send` sent: the rows written, or the server's error raised."""
    return int(conn._read_query_result())


def _readable(conn: pymysql.Connection, timeout: float | None) -> bool:
    """Whether the connection's socket has the answer (or was closed) within ``timeout`` seconds."""
    sock = conn._sock
    if sock is None:
        raise pymysql.err.InterfaceError(0, "connection closed")
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))
