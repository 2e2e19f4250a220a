"""The dump query: ``SELECT ... INTO OUTFILE`` run on its own thread.

The query's own result is the end-of-data signal for the follow source and
one of the producers the pipeline checks before committing, so it is held
here, not inferred from the bytes.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

import pymysql

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
    """Runs one OUTFILE statement on a dedicated connection, in a thread.

    ``kill_query`` is called with the connection id to stop the statement
    from another connection (``KILL QUERY``); it is how a failed pipeline
    stops the server from writing.
    """

    def __init__(
        self,
        conn: pymysql.Connection,
        statement: str,
        kill_query: Callable[[int], None],
    ) -> None:
        self._conn = conn
        self._statement = statement
        self._kill_query = kill_query
        self._outcome = QueryOutcome()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dump-query", daemon=True)
        self.connection_id = conn.thread_id()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._conn.cursor() as cur:
                self._outcome.rows = cur.execute(self._statement)
        except BaseException as exc:  # recorded, re-raised by the pipeline
            self._outcome.error = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def outcome(self) -> QueryOutcome:
        """The result once done; the caller must have waited."""
        assert self._done.is_set()
        return self._outcome

    def describe_error(self) -> str:
        return error_text(self._outcome.error) if self._outcome.error else ""

    def stop(self, timeout: float = 30.0) -> None:
        """Kill the statement if it still runs and wait for the thread."""
        if not self._thread.is_alive():
            return
        if not self._done.is_set():
            try:
                self._kill_query(self.connection_id)
            except Exception as exc:  # the caller still waits and reports
                log.warning("event=kill_failed connection=%s error=%s", self.connection_id, exc)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("event=query_stuck connection=%s secs=%s", self.connection_id, timeout)
