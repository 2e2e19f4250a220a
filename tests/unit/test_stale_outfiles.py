"""OUTFILEs of dead tracker processes are removed; those of live ones are not."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tracker.replicaset.kill import remove_stale_outfiles


def test_only_files_of_processes_that_are_not_tracker_are_removed(tmp_path: Path) -> None:
    # A live process whose command line reads like `tracker dump` (what kill recognises).
    live = subprocess.Popen(["bash", "-c", "sleep 60; true", "tracker", "dump"])  # "; true": bash stays, keeping its argv
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        names = {
            "live": f"tracker-{live.pid}-0-0011aabb.tsv",
            "dead": f"tracker-{dead.pid}-3-cafe0123.tsv",
            "other": "tracker-notes.tsv",
            "foreign": "something-else.tsv",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x")
        removed = remove_stale_outfiles(tmp_path)
        assert [p.name for p in removed] == [names["dead"]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "dead")
    finally:
        live.kill()
        live.wait()


def test_no_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert remove_stale_outfiles(None) == []
    assert remove_stale_outfiles(tmp_path / "missing") == []
