"""tracker.db.bind: the statement PyMySQL's own execute would send, with each distinct value escaped once."""

from __future__ import annotations

import datetime as dt

import pymysql
import pymysql.constants
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.db import bind

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.dates(),
    st.datetimes(),
    st.sampled_from(["ns", "db", "t1", "2026-01-02", "o'brien", "back\\slash", "%s", "%%"]),  # repeated ones
)


def offline(no_backslash_escapes: bool = False) -> pymysql.Connection:
    """A connection that never connects: escaping needs only its charset and server status."""
    conn = pymysql.connections.Connection(defer_connect=True, charset="utf8mb4")
    conn.server_status = pymysql.constants.SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES if no_backslash_escapes else 0
    return conn


@settings(max_examples=120, deadline=None)
@given(st.lists(VALUES, max_size=12), st.booleans())
def test_bind_is_what_pymysql_sends(args: list, no_backslash_escapes: bool) -> None:
    conn = offline(no_backslash_escapes)
    sql = "SELECT 1 WHERE x LIKE 'a%%' AND (" + ", ".join(["%s"] * len(args)) + ")" if args else "SELECT '%%'"
    assert bind(conn, sql, tuple(args)) == conn.cursor().mogrify(sql, tuple(args))


def test_equal_values_of_other_types_keep_their_own_literals() -> None:
    conn = offline()
    args = (1, True, 1.0, "1", dt.date(2026, 1, 2), "2026-01-02", 1)
    sql = " ".join(["%s"] * len(args))
    assert bind(conn, sql, args) == conn.cursor().mogrify(sql, args) == "1 1 1.0e0 '1' '2026-01-02' '2026-01-02' 1"
