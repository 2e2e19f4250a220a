"""outfile_dir on a full file system: a clear error, nothing partial, the server unharmed."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.helpers import create_big_table, drop_unreplicated, run_tracker, tagged_queries, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")


@pytest.fixture
def small_outfile_dir(replica):
    path = replica.secure_file_priv / "small"
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=True)
    path.rmdir()


def test_full_outfile_dir(replica, tmp_path, small_outfile_dir) -> None:
    name = create_big_table(replica, 50_000)  # ~50 MB of OUTFILE into 2 MB
    try:
        dest = tmp_path / "dest"
        config = write_config(tmp_path, replica, f"file://{dest}", outfile_dir=str(small_outfile_dir))
        result = run_tracker(config, "dump", name, "--date", "2026-11-01", timeout=120)
        assert result.returncode == 1
        line = result.stderr.decode().splitlines()[-1]  # the one error line comes last
        assert line.startswith("tracker: error: 1 of 1 tables failed: "), result.stderr.decode()
        assert "dump query failed" in line and "No space left on device" in line, line
        assert b"Traceback" not in result.stderr
        assert [p for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".")] == []
        assert list(small_outfile_dir.iterdir()) == []
        assert not tagged_queries(replica)
        # the server is unharmed: it answers and replicates
        assert replica.sql("SELECT 1") == [(1,)]
        assert replica.slave_status()["Slave_SQL_Running"] == "Yes"
    finally:
        drop_unreplicated(replica, name.split(".")[0])
