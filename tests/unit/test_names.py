from __future__ import annotations

import pytest

from tracker.errors import UsageError
from tracker.names import parse_table_name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("shop.orders", ("shop", "orders")),
        ("shop.a.b", ("shop", "a.b")),
        ("`my.db`.t", ("my.db", "t")),
        ("`my.db`.`odd``name`", ("my.db", "odd`name")),
        ("d.`x; DROP TABLE y`", ("d", "x; DROP TABLE y")),
        ("ünï.cödé", ("ünï", "cödé")),
    ],
)
def test_parse(text: str, expected: tuple[str, str]) -> None:
    assert parse_table_name(text) == expected


@pytest.mark.parametrize("text", ["orders", ".t", "d.", "`d.t", "`d`x.t", "d.`t`x"])
def test_malformed(text: str) -> None:
    with pytest.raises(UsageError):
        parse_table_name(text)
