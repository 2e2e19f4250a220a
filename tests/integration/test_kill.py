"""``tracker kill``: orphans on a healthy replica, everything after a promotion.

A live dump is held open by the test (``held_table``: its query waits for
a metadata lock, running and tagged, before its first byte) for exactly as
long as the test needs it, whatever the machine's speed.

An orphan is a query whose tracker is dead, and a metadata-lock wait does
not keep one: MariaDB ends it within a second or so once it notices the
client is gone.  So the orphan tests hold a MyISAM table with
``held_by_table_lock`` instead: their dump query waits for a table-level
lock, a wait only KILL ends, so it stays in the process list after
``kill -9`` of its tracker until ``tracker kill`` (or the test) ends it.
Such an orphan has written nothing yet; one killed mid-write is the same
to ``tracker kill`` (a tagged query whose pid is gone) -- only what it
leaves in outfile_dir differs, and the follow source unlinks its file
right after opening it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from sandbox.mariadb import REPL_PASSWORD, REPL_USER  # noqa: F401
from tests.integration.helpers import (
    create_small_table,
    drop_unreplicated,
    held_by_table_lock,
    held_dumps,
    held_table,
    run_tracker,
    start_tracker,
    tagged_queries,
    wait_for,
    write_config,
)


@pytest.fixture
def table(replica2) -> Iterator[str]:
    """A small table on replica2 alone."""
    name = create_small_table(replica2)
    yield name
    drop_unreplicated(replica2, name.split(".")[0])


@pytest.fixture
def myisam_table(replica2) -> Iterator[str]:
    """A small MyISAM table on replica2 alone, for ``held_by_table_lock``."""
    name = create_small_table(replica2, engine="MyISAM")
    yield name
    drop_unreplicated(replica2, name.split(".")[0])


def nothing_under(dest) -> bool:
    """No object a reader would see (a kill -9 can leave a hidden temporary file)."""
    return not [p for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".")]


def orphan_of_killed_dump(replica2, config, table: str, date: str) -> int:
    """Start a dump of the held ``table``, ``kill -9`` it once its query waits; returns the dead pid.

    The query stays (a table-level lock wait outlives its client): an orphan.
    """
    proc = start_tracker(config, "dump", table, "--date", date)
    try:
        assert wait_for(lambda: held_dumps(replica2), 60), "the dump never reached its query"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return proc.pid


def test_orphan_of_a_killed_dump_is_killed(replica2, tmp_path, myisam_table) -> None:
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica2, f"file://{dest}", kill_skip_file=str(tmp_path / "no_kill"))
    with held_by_table_lock(replica2, myisam_table) as release:
        pid = orphan_of_killed_dump(replica2, config, myisam_table, "2026-11-01")
        orphans = tagged_queries(replica2)
        assert len(orphans) == 1 and f"pid={pid} " in orphans[0][1], orphans
        assert nothing_under(dest)

        # kill_skip_file disables it: the orphan is left alone
        (tmp_path / "no_kill").write_text("")
        disabled = run_tracker(config, "kill")
        assert disabled.returncode == 0 and b"disabled by" in disabled.stdout
        assert tagged_queries(replica2) == orphans, "the orphan went away without tracker kill"
        (tmp_path / "no_kill").unlink()

        started = time.monotonic()
        result = run_tracker(config, "kill")
        assert result.returncode == 0, result.stderr.decode()
        assert b"healthy replica: 1 queries killed, 0 processes stopped" in result.stdout
        assert b"killed query %d of tracker pid %d" % (orphans[0][0], pid) in result.stdout, result.stdout
        # only KILL ends a table-level lock wait: nothing but tracker kill could have
        assert wait_for(lambda: not tagged_queries(replica2), 5)
        assert time.monotonic() - started < 60  # generous: it does not hang; the 5 s above is KILL's own time
        release()
    assert list(replica2.outfile_dir.iterdir()) == []

    again = run_tracker(config, "dump", myisam_table, "--date", "2026-11-01")
    assert again.returncode == 0, again.stderr.decode()
    assert (dest / "main" / myisam_table.replace(".", "/") / "dt=2026-11-01" / "_SUCCESS").exists()


def test_outfile_an_orphan_wrote_is_removed_by_kill(replica2, tmp_path, myisam_table) -> None:
    """tracker died before the server created its OUTFILE: the orphan writes it for nobody; kill removes it."""
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica2, f"file://{dest}")
    with held_by_table_lock(replica2, myisam_table) as release:
        pid = orphan_of_killed_dump(replica2, config, myisam_table, "2026-11-01")
        release()  # the orphan now gets its lock and writes its OUTFILE, which nobody unlinks
        assert wait_for(lambda: not tagged_queries(replica2), 60), "the orphan never finished"
    left = [p for p in replica2.outfile_dir.iterdir() if p.name.startswith(f"tracker-{pid}-")]
    assert len(left) == 1 and left[0].stat().st_size > 0, list(replica2.outfile_dir.iterdir())
    result = run_tracker(config, "kill")
    assert result.returncode == 0, result.stderr.decode()
    assert f"removed stale OUTFILE {left[0]}".encode() in result.stdout, result.stdout
    assert "event=stale_outfile_removed" in result.stderr.decode()
    assert list(replica2.outfile_dir.iterdir()) == []
    assert nothing_under(dest)


def test_run_kills_orphans_before_it_starts(replica2, replica_set, tmp_path, myisam_table) -> None:
    dest = tmp_path / "dest"
    config = write_config(
        tmp_path,
        replica2,
        f"file://{dest}",
        namespace="orphans",
        tables={"include": [r"no_such_db\..*"]},
        run_lock_dir=str(tmp_path),
        replication={"wait_seconds": 30, "poll_seconds": 1},
    )
    with held_by_table_lock(replica2, myisam_table):
        pid = orphan_of_killed_dump(replica2, config, myisam_table, "2026-11-04")
        orphans = tagged_queries(replica2)
        assert len(orphans) == 1 and f"pid={pid} " in orphans[0][1], orphans
        result = run_tracker(config, "run", "--date", "2026-11-04")
        assert result.returncode == 0, result.stderr.decode()
        assert b"event=orphans_killed count=1" in result.stderr
        # only KILL ends a table-level lock wait: nothing but the run could have
        assert wait_for(lambda: not tagged_queries(replica2), 5)


def test_live_dump_is_left_alone_on_a_healthy_replica(replica2, tmp_path, table) -> None:
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica2, f"file://{dest}", kill_skip_file=str(tmp_path / "no_kill"))
    with held_table(replica2, table) as release:
        proc = start_tracker(config, "dump", table, "--date", "2026-11-02")
        try:
            assert wait_for(lambda: held_dumps(replica2), 60)
            result = run_tracker(config, "kill")
            assert result.returncode == 0 and b"0 queries killed" in result.stdout
            assert held_dumps(replica2), "the live dump's query was touched"
            release()
            assert proc.wait(120) == 0, proc.communicate()[1].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert (dest / "main" / table.replace(".", "/") / "dt=2026-11-02" / "_SUCCESS").exists()


def promote(replica) -> None:
    replica.sql("STOP SLAVE")
    replica.sql("RESET SLAVE ALL")
    replica.sql("SET GLOBAL read_only = OFF")


def reattach(replica, master, replica_set) -> None:
    replica.sql(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s,"
        " MASTER_USE_GTID=slave_pos",
        (master.port, REPL_USER, REPL_PASSWORD),
    )
    replica.sql("START SLAVE")
    replica.sql("SET GLOBAL read_only = ON")
    replica_set.sync()


def test_promotion_mid_dump_then_kill(master, replica2, replica_set, tmp_path, table) -> None:
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica2, f"file://{dest}", kill_skip_file=str(tmp_path / "no_kill"))
    try:
        with held_table(replica2, table):
            proc = start_tracker(config, "dump", table, "--date", "2026-11-03")
            try:
                assert wait_for(lambda: held_dumps(replica2), 60)
                promote(replica2)
                started = time.monotonic()
                result = run_tracker(config, "kill")
                assert result.returncode == 0, result.stderr.decode()
                assert b"not a replica" in result.stdout and b"sent SIGTERM to tracker pid %d" % proc.pid in result.stdout
                assert wait_for(lambda: not tagged_queries(replica2), 5)
                assert proc.wait(15) != 0
                assert time.monotonic() - started < 15
                assert nothing_under(dest)
                assert list(replica2.outfile_dir.iterdir()) == []
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        reattach(replica2, master, replica_set)  # after the lock is gone: read_only=ON waits for it
