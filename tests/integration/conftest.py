"""Large tables for the fault tests, made once per session on one replica each.

They are written with the binlog off, so they exist only on that replica
(generating and replicating 300 MB would cost minutes) and never reach the
master.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.helpers import create_big_table, drop_unreplicated

BIG_ROWS = 300_000  # ~310 MB of OUTFILE text, binary with NULs and backslashes


def _big(server) -> Iterator[str]:
    name = create_big_table(server, BIG_ROWS)
    yield name
    drop_unreplicated(server, name.split(".")[0])


@pytest.fixture(scope="session")
def big_on_replica(replica) -> Iterator[str]:
    yield from _big(replica)


@pytest.fixture(scope="session")
def big_on_replica2(replica2) -> Iterator[str]:
    yield from _big(replica2)
