"""HiveQL text for converted tables: types, quoting, locations."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from tracker.warehouse.ddl import hive_ddl, hive_location, hive_type, quote_name, quote_string, quote_table

DATE = dt.date(2026, 11, 1)


def test_whole_ddl_for_one_date() -> None:
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False, metadata={b"mysql.type": b"bigint"}),
            pa.field("total", pa.decimal128(10, 2), metadata={b"mysql.type": b"decimal(10,2)"}),
            pa.field("dt", pa.string()),
        ]
    )
    assert hive_ddl("shop.orders", schema, "s3://bucket/warehouse/main/shop/orders/", DATE) == (
        "CREATE EXTERNAL TABLE IF NOT EXISTS `shop`.`orders` (\n"
        "  `id` BIGINT COMMENT 'mysql: bigint',\n"
        "  `total` DECIMAL(10,2) COMMENT 'mysql: decimal(10,2)'\n"
        ")\n"
        "PARTITIONED BY (`dt` STRING)\n"
        "STORED AS PARQUET\n"
        "LOCATION 's3a://bucket/warehouse/main/shop/orders';\n"
        "ALTER TABLE `shop`.`orders` ADD IF NOT EXISTS PARTITION (`dt`='2026-11-01')"
        " LOCATION 's3a://bucket/warehouse/main/shop/orders/dt=2026-11-01';\n"
    )


@pytest.mark.parametrize(
    "arrow, hive",
    [
        (pa.int8(), "TINYINT"),
        (pa.int16(), "SMALLINT"),
        (pa.int32(), "INT"),
        (pa.int64(), "BIGINT"),
        (pa.decimal128(20, 0), "DECIMAL(20,0)"),
        (pa.decimal128(38, 30), "DECIMAL(38,30)"),
        (pa.float32(), "FLOAT"),
        (pa.float64(), "DOUBLE"),
        (pa.bool_(), "BOOLEAN"),
        (pa.date32(), "DATE"),
        (pa.timestamp("us"), "TIMESTAMP"),
        (pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
        (pa.string(), "STRING"),
        (pa.large_string(), "STRING"),
        (pa.binary(), "BINARY"),
        (pa.large_binary(), "BINARY"),
    ],
)
def test_every_decoder_type_has_a_hive_type(arrow: pa.DataType, hive: str) -> None:
    assert hive_type(arrow) == hive


@pytest.mark.parametrize("arrow", [pa.uint64(), pa.time64("us"), pa.list_(pa.int32()), pa.timestamp("ns")])
def test_other_types_are_refused(arrow: pa.DataType) -> None:
    with pytest.raises(ValueError, match="no Hive type"):
        hive_type(arrow)


def test_partition_column_is_not_repeated_and_odd_names_are_quoted() -> None:
    schema = pa.schema([pa.field("we`ird col", pa.string()), pa.field("dt", pa.string())])
    ddl = hive_ddl("db.t", schema, "file:///data/it's here", DATE)
    assert "  `we``ird col` STRING\n)" in ddl
    assert ddl.count("`dt`") == 2  # PARTITIONED BY and PARTITION (...), never among the columns
    assert "LOCATION 'file:///data/it\\'s here';" in ddl
    assert "LOCATION 'file:///data/it\\'s here/dt=2026-11-01';" in ddl


def test_only_a_partition_column_is_refused() -> None:
    with pytest.raises(ValueError, match="no columns"):
        hive_ddl("t", pa.schema([pa.field("dt", pa.string())]), "file:///x", DATE)


def test_locations_and_literals() -> None:
    assert hive_location("s3://b/p/") == "s3a://b/p"
    assert hive_location("s3://b/p", s3_scheme="s3") == "s3://b/p"
    assert hive_location("file:///w/t") == "file:///w/t"
    assert quote_string("a\\b'c") == "'a\\\\b\\'c'"
    assert quote_name("a`b") == "`a``b`"
    assert quote_table("shop.orders") == "`shop`.`orders`"
    assert quote_table(("my.db", "t")) == "`my.db`.`t`"  # a dotted name passed as parts
