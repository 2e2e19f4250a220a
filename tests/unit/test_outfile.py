"""The dump statement: its tag (found by `tracker kill`) and its shape."""

from __future__ import annotations

import os

from tracker.replicaset.kill import _TAG
from tracker.dump.outfile import TAG_PREFIX, select_statement, tag


def test_tag_names_tracker_and_the_process() -> None:
    text = tag("shop.orders/part-00000")
    assert text.startswith(TAG_PREFIX) and text.endswith("*/")
    assert int(_TAG.search(text).group(1)) == os.getpid()


def test_no_name_can_close_the_comment() -> None:
    text = tag("d.*/ DROP TABLE x; /*/part-00000")
    assert text.count("*/") == 1 and text.endswith("*/")


def test_statement_shape() -> None:
    sql = select_statement("d.t/part-00000", "`a`, CAST(`b` AS UNSIGNED)", "`d`.`t`", "'/x/y.tsv'", where="`a` < 10")
    assert sql.startswith("SELECT /* tracker pid=")
    assert "FROM `d`.`t` WHERE `a` < 10 INTO OUTFILE '/x/y.tsv' CHARACTER SET binary" in sql
    assert sql.endswith("FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'")
