"""Shared fixtures: one real MariaDB replica set and one moto server per session.

Booting servers costs seconds, so they are session-scoped; isolation between
tests comes from function-scoped databases and buckets with unique names.
Set ``TRACKER_SANDBOX_KEEP=1`` to keep the servers' files after the run.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # pyproject's pythonpath normally does this
    sys.path.insert(0, str(REPO_ROOT))

from sandbox import MariaDB, MotoServer, ReplicaSet, start_replica_set  # noqa: E402
from sandbox.s3 import UNSET_ENV_VARS  # noqa: E402

if TYPE_CHECKING:
    from sandbox.s3 import S3Client

log = logging.getLogger(__name__)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds (server restarts, large data)")


def _scratch_dir(prefix: str) -> Path:
    """A short directory under /tmp: unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _remove_scratch_dir(path: Path) -> None:
    if os.environ.get("TRACKER_SANDBOX_KEEP"):
        log.warning("keeping sandbox files in %s", path)
        return
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def replica_set() -> Iterator[ReplicaSet]:
    root = _scratch_dir("trk-")
    try:
        servers = start_replica_set(root, replicas=2)
        try:
            yield servers
        finally:
            servers.stop()
    finally:
        _remove_scratch_dir(root)


@pytest.fixture(scope="session")
def master(replica_set: ReplicaSet) -> MariaDB:
    return replica_set.master


@pytest.fixture(scope="session")
def replica(replica_set: ReplicaSet) -> MariaDB:
    return replica_set.replicas[0]


@pytest.fixture(scope="session")
def replica2(replica_set: ReplicaSet) -> MariaDB:
    return replica_set.replicas[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    root = _scratch_dir("trk-s3-")
    try:
        server = MotoServer(basedir=root)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        _remove_scratch_dir(root)


@pytest.fixture(scope="session")
def s3(moto_server: MotoServer) -> S3Client:
    return moto_server.client()


@pytest.fixture
def bucket(moto_server: MotoServer) -> Iterator[str]:
    name = f"trk-{uuid.uuid4().hex[:16]}"
    moto_server.create_bucket(name)
    yield name
    moto_server.delete_bucket(name)


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process's (and its children's) AWS credentials at moto."""
    for name in UNSET_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    values = moto_server.env()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def fresh_db(master: MariaDB, replica_set: ReplicaSet) -> Iterator[str]:
    """A new, empty database on the master, already present on the replicas."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    master.sql(f"CREATE DATABASE `{name}`")
    replica_set.sync()
    yield name
    master.sql(f"DROP DATABASE IF EXISTS `{name}`")
    replica_set.sync()
