"""Pure parts of ``tracker convert``: the store lease (on a real file:// store) and the logical schema union."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from tracker.config import parse_destination
from tracker.errors import LeaseLost
from tracker.store.files import FileStore
from tracker.warehouse.lease import StoreLease, check_lease, current, lease_key
from tracker.warehouse.schema import SchemaConflict, conformer, target_schema

PREFIX = "main/db/t/dt=2026-11-01"


@pytest.fixture
def store(tmp_path) -> FileStore:
    return FileStore(parse_destination(f"file://{tmp_path}"))


def _plant(store: FileStore, seq: int, *, host: str, pid: int, expires: float) -> None:
    store.put(lease_key(PREFIX, seq), json.dumps({"token": "other", "host": host, "pid": pid, "expires": expires}).encode())


def test_one_holder_at_a_time_and_release(store) -> None:
    first = StoreLease(store, PREFIX, 60)
    assert first.acquire() is None
    second = StoreLease(store, PREFIX, 60)
    holder = second.acquire()
    assert holder is not None and holder.pid == os.getpid() and holder.token == first.token
    first.check()
    with pytest.raises(LeaseLost):
        check_lease(store, PREFIX, second.token, 1)
    first.renew()
    assert current(store, PREFIX).seq == 2
    first.release()
    assert store.list(PREFIX + "/") == []
    assert second.acquire() is None  # free again: numbering restarts


def test_expired_lease_is_taken_over_and_the_old_holder_cannot_renew(store) -> None:
    old = StoreLease(store, PREFIX, 0)  # expires the moment it is written: no waiting on a clock
    assert old.acquire() is None
    new = StoreLease(store, PREFIX, 60)
    assert new.acquire() is None
    with pytest.raises(LeaseLost):
        old.check()
    with pytest.raises(LeaseLost):
        old.renew()
    new.check()
    old.release()  # not ours any more: deletes nothing
    assert current(store, PREFIX).token == new.token


def test_dead_process_of_this_host_is_taken_over_at_once(store) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    _plant(store, 7, host=socket.gethostname(), pid=int(dead), expires=time.time() + 3600)
    lease = StoreLease(store, PREFIX, 60)
    assert lease.acquire() is None and current(store, PREFIX).seq == 8


def test_live_lease_of_another_host_is_respected(store) -> None:
    _plant(store, 3, host="elsewhere.example", pid=1, expires=time.time() + 3600)
    holder = StoreLease(store, PREFIX, 60).acquire()
    assert holder is not None and holder.host == "elsewhere.example" and "elsewhere.example" in holder.describe()


def test_check_needs_a_margin(store) -> None:
    lease = StoreLease(store, PREFIX, 60)
    assert lease.acquire() is None
    check_lease(store, PREFIX, lease.token, 30)
    with pytest.raises(LeaseLost, match="left"):
        check_lease(store, PREFIX, lease.token, 120)


def _cols(*spec: tuple[str, str, str]) -> list[dict]:
    return [
        {"name": n, "type": t, "data_type": d, "encoding": "text", "generated": False,
         "charset": "utf8mb4" if d == "varchar" else None, "collation": "utf8mb4_general_ci" if d == "varchar" else None}
        for n, t, d in spec
    ]


ID = ("id", "bigint(20)", "bigint")
SCORE = ("score", "double", "double")


def test_union_by_name_adds_nullable_columns_then_sources_then_dt() -> None:
    schema = target_schema(
        "shop.u",
        [("main", "a", "t1", _cols(ID, SCORE)), ("main2", "b", "t2", _cols(ID, SCORE, ("vip", "tinyint(4)", "tinyint")))],
        logical=True,
    )
    assert schema.names == ["id", "score", "vip", "_source_namespace", "_source_db", "_source_table", "dt"]
    assert schema.field("vip").nullable and schema.field("dt").type == pa.string()
    fit = conformer(schema, dt.date(2026, 11, 1), "main", "a", "t1", True)
    batch = fit(pa.record_batch({"id": pa.array([1, 2], pa.int64()), "score": pa.array([0.5, None])}))
    assert batch.to_pylist() == [
        {"id": 1, "score": 0.5, "vip": None, "_source_namespace": "main", "_source_db": "a", "_source_table": "t1", "dt": "2026-11-01"},
        {"id": 2, "score": None, "vip": None, "_source_namespace": "main", "_source_db": "a", "_source_table": "t1", "dt": "2026-11-01"},
    ]


def test_type_conflict_names_column_both_types_and_sources() -> None:
    with pytest.raises(SchemaConflict) as info:
        target_schema("shop.u", [("main", "a", "t1", _cols(ID, SCORE)), ("main", "b", "t2", _cols(ID, ("score", "varchar(10)", "varchar")))], True)
    message = str(info.value)
    assert "'score'" in message and "double" in message and "string" in message
    assert "main/a.t1" in message and "main/b.t2" in message and "\n" not in message


@pytest.mark.parametrize("name, logical", [("dt", False), ("dt", True), ("_source_db", True)])
def test_reserved_column_names(name: str, logical: bool) -> None:
    with pytest.raises(SchemaConflict, match=f"named '{name}'"):
        target_schema("db.t", [("main", "db", "t", _cols(ID, (name, "int(11)", "int")))], logical)


def test_source_column_names_are_fine_in_a_physical_table() -> None:
    schema = target_schema("db.t", [("main", "db", "t", _cols(ID, ("_source_db", "int(11)", "int")))], False)
    assert schema.names == ["id", "_source_db", "dt"]
