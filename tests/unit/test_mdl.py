"""Which connections block a waiting DDL statement, from a server's list of metadata locks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker.replicaset.mdl import TABLE, Mdl, blockers

SQL_THREAD = 10


def test_pending_lock_names_the_object_exactly() -> None:
    """performance_schema: the holders of the pending object, not of other tables the waiter holds."""
    locks = [
        Mdl(SQL_THREAD, TABLE, "db", "a", pending=False),  # its upgradable lock
        Mdl(SQL_THREAD, TABLE, "db", "a", pending=True),  # the exclusive one it waits for
        Mdl(SQL_THREAD, TABLE, "db", "c", pending=False),
        Mdl(21, TABLE, "db", "a"),
        Mdl(22, TABLE, "db", "b"),
        Mdl(23, TABLE, "db", "c"),
        Mdl(24, TABLE, "db", "a", pending=True),  # waits too: holds nothing
    ]
    assert blockers({SQL_THREAD}, locks) == {21}


def test_granted_only_listing_uses_the_tables_the_waiter_holds() -> None:
    """metadata_lock_info: an ALTER holds an upgradable lock on its table while it waits."""
    locks = [
        Mdl(SQL_THREAD, "Schema metadata lock", "db", ""),
        Mdl(SQL_THREAD, TABLE, "db", "a"),
        Mdl(21, TABLE, "db", "a"),
        Mdl(22, TABLE, "db", "b"),
        Mdl(23, "Schema metadata lock", "db", ""),
    ]
    assert blockers({SQL_THREAD}, locks) == {21}


def test_unknown_when_the_waited_object_or_its_holders_are_not_listed() -> None:
    # A DROP TABLE waits for its exclusive lock holding nothing on the table.
    assert blockers({SQL_THREAD}, [Mdl(SQL_THREAD, "Schema metadata lock", "db", ""), Mdl(21, TABLE, "db", "a")]) is None
    # The holder's lock was taken before the instrument was enabled.
    assert blockers({SQL_THREAD}, [Mdl(SQL_THREAD, TABLE, "db", "a", pending=True)]) is None
    assert blockers({SQL_THREAD}, []) is None


def test_every_waiter_counts_as_one() -> None:
    """MariaDB's performance_schema names no connection id for its replication threads."""
    locks = [Mdl(0, TABLE, "db", "a", pending=True), Mdl(21, TABLE, "db", "a"), Mdl(-15, TABLE, "db", "b")]
    assert blockers({SQL_THREAD, 0}, locks) == {21}


locks_strategy = st.lists(
    st.builds(
        Mdl,
        thread=st.integers(1, 6),
        kind=st.sampled_from([TABLE, "SCHEMA", "BACKUP"]),
        schema=st.sampled_from(["d1", "d2"]),
        name=st.sampled_from(["a", "b", ""]),
        pending=st.booleans(),
    ),
    max_size=20,
)


@given(st.integers(1, 6), locks_strategy)
def test_every_blocker_holds_what_the_waiter_waits_for(waiter: int, locks: list[Mdl]) -> None:
    found = blockers({waiter}, locks)
    if found is None:
        return
    assert waiter not in found and found
    waited = {lock.object for lock in locks if lock.thread == waiter and lock.pending} or {
        lock.object for lock in locks if lock.thread == waiter and lock.kind == TABLE
    }
    for thread in found:
        assert any(lock.thread == thread and not lock.pending and lock.object in waited for lock in locks)
    # ... and every granted holder of it is found: none is left to block.
    assert found == {lock.thread for lock in locks if lock.thread != waiter and not lock.pending and lock.object in waited}
