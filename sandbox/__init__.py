"""Real-server test harness for tracker: MariaDB replica sets and a moto S3 server.

Tests run against genuine ``mariadbd`` and ``moto.server`` processes rather
than mocks, because what the tracker relies on (``SELECT ... INTO OUTFILE``,
GTID replication, S3 multipart rules) is exactly what mocks get wrong.
"""

from sandbox.mariadb import (
    REPL_PASSWORD,
    REPL_USER,
    TRACKER_PASSWORD,
    TRACKER_PRIVILEGES,
    TRACKER_USER,
    MariaDB,
    ReplicaSet,
    free_port,
    start_replica_set,
)
from sandbox.s3 import MotoServer

__all__ = [
    "REPL_PASSWORD",
    "REPL_USER",
    "TRACKER_PASSWORD",
    "TRACKER_PRIVILEGES",
    "TRACKER_USER",
    "MariaDB",
    "MotoServer",
    "ReplicaSet",
    "free_port",
    "start_replica_set",
]
