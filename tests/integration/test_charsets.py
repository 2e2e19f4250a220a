"""Every character set the server has, through dump, LOAD DATA restore and ``cat --format jsonl``.

Values are chosen by asking the server which byte sequences are characters
of each charset, so multibyte characters whose bytes include 0x5C, 0x09,
0x0A or 0x00 (sjis ``表`` = 95 5C, utf16 ``山`` = 5C 71) are in the data
wherever the charset has them: OUTFILE escapes such bytes only when the
column is selected as binary.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tests.integration.helpers import checksum, restore, run_tracker, write_config
from tracker.db import qualified, quote_ident
from tracker.store.layout import encode_segment

SPECIAL = (0x5C, 0x09, 0x0A, 0x00)
# Python codecs for the Unicode charsets: only used to *choose* values; the
# server's acceptance (strict mode) and its CONVERT are what the test trusts.
UNICODE = {
    "ucs2": ("utf-16-be", 0xFFFF),
    "utf16": ("utf-16-be", 0x10FFFF),
    "utf16le": ("utf-16-le", 0x10FFFF),
    "utf32": ("utf-32-be", 0x10FFFF),
    "utf8mb3": ("utf-8", 0xFFFF),
    "utf8mb4": ("utf-8", 0x10FFFF),
}
# Charsets with multibyte characters that contain one of SPECIAL (a trail
# byte 0x5C in the CJK ones): the test insists it found some.
MUST_HAVE_SPECIAL = {"sjis", "cp932", "big5", "gbk", "ucs2", "utf16", "utf16le", "utf32"}
EDGE_TEXT = "a\\b\tc\nd\\N\x00\r\x1a\\0 z\\"
EXTRA_COLUMNS = (
    "e ENUM('a', '表', 'ソ', 'x\\\\y') CHARACTER SET sjis",
    "s SET('山', 'a', '\u0a5c') CHARACTER SET ucs2",
    "ch CHAR(4) CHARACTER SET utf16",
    "j JSON",
)
EXTRA_VALUES = {"e": "表", "s": "山,\u0a5c", "ch": "山\t\u0900", "j": '{"k": "表\\\\\\t山"}'}


def server_charsets(master) -> dict[str, int]:
    return {str(row[0]): int(row[3]) for row in master.sql("SHOW CHARACTER SET")}


def server_characters(cur, charset: str, candidates: list[bytes]) -> list[bytes]:
    """The candidates the server reads as exactly one character of ``charset`` (not its '?' stand-in)."""
    found = []
    for start in range(0, len(candidates), 4000):
        batch = candidates[start : start + 4000]
        cur.execute(
            "SELECT seq, HEX(CONVERT(CONVERT(UNHEX(ELT(seq + 1, " + ", ".join(["%s"] * len(batch)) + "))"
            f" USING {charset}) USING utf8mb4)) FROM seq_0_to_{len(batch) - 1}",
            [seq.hex() for seq in batch],
        )
        for index, hexed in cur.fetchall():
            text = bytes.fromhex(hexed).decode("utf-8", "surrogatepass")
            if len(text) == 1 and (text != "?" or batch[index] == b"?"):
                found.append(batch[index])
    return found


def characters(cur, charset: str, maxlen: int) -> list[bytes]:
    """Every character of a legacy charset; a wide sample of a Unicode one."""
    if charset in UNICODE:
        codec, top = UNICODE[charset]
        points = list(range(0, 0xD800)) + list(range(0xE000, 0x10000))
        if top > 0xFFFF:
            points += list(range(0x10000, 0x110000, 0x3FF)) + [0x10FFFF, 0x2705C, 0x10A09]
        return [chr(cp).encode(codec) for cp in points]
    singles = server_characters(cur, charset, [bytes([b]) for b in range(256)])
    if maxlen == 1:
        return singles
    leads = [b for b in range(0x80, 0x100) if bytes([b]) not in singles]
    candidates = [bytes([lead, trail]) for lead in leads for trail in range(256)]
    if charset in ("ujis", "eucjpms"):
        candidates += [bytes([0x8F, a, b]) for a in range(0xA1, 0xFF) for b in range(0xA1, 0xFF)]
    return singles + server_characters(cur, charset, candidates)


def has_special(seq: bytes) -> bool:
    return len(seq) > 1 and any(b in SPECIAL for b in seq)


def edge_value(charset: str) -> bytes:
    if charset in UNICODE:
        return EDGE_TEXT.encode(UNICODE[charset][0])
    return EDGE_TEXT.encode("ascii")


@pytest.fixture
def charset_table(master, replica_set, fresh_db) -> tuple[str, str, list[str]]:
    """One table, a MEDIUMTEXT column per charset (a BLOB for binary); rows: edge, special, all, NULL, empty."""
    charsets = server_charsets(master)
    text_charsets = sorted(cs for cs in charsets if cs != "binary")
    table = "charsets"
    columns = [f"{quote_ident('c_' + cs)} MEDIUMTEXT CHARACTER SET {cs}" for cs in text_charsets]
    columns.append("c_binary BLOB")
    conn = master.connect(database=fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
            cur.execute(
                f"CREATE TABLE {quote_ident(table)} (id INT PRIMARY KEY, {', '.join(columns)}, {', '.join(EXTRA_COLUMNS)})"
            )
            cur.execute(f"INSERT INTO {quote_ident(table)} (id) VALUES (1), (2), (3), (4), (5)")
            for cs in text_charsets:
                every = characters(cur, cs, charsets[cs])
                special = [seq for seq in every if has_special(seq)]
                if cs in MUST_HAVE_SPECIAL:
                    assert special, f"no multibyte {cs} character with a 5C/09/0A/00 byte"
                if charsets[cs] == 1:
                    special = [seq for seq in every if seq[0] >= 0x80 or seq[0] in SPECIAL]
                values = {1: edge_value(cs), 2: b"".join(special), 3: b"".join(every), 5: b""}
                for row_id, value in values.items():
                    # Bytes go in as they are; strict mode refuses any the charset does not accept.
                    cur.execute(f"UPDATE {quote_ident(table)} SET {quote_ident('c_' + cs)} = %s WHERE id = %s", (value, row_id))
                    cur.execute(f"SELECT HEX({quote_ident('c_' + cs)}) FROM {quote_ident(table)} WHERE id = %s", (row_id,))
                    assert cur.fetchone()[0] == value.hex().upper(), f"{cs} row {row_id} not stored as given"
            cur.execute(f"UPDATE {quote_ident(table)} SET c_binary = %s WHERE id = 2", (bytes(range(256)),))
            cur.execute(f"UPDATE {quote_ident(table)} SET c_binary = %s WHERE id = 1", (b"plain\\text",))
            for name, value in EXTRA_VALUES.items():
                cur.execute(f"UPDATE {quote_ident(table)} SET {name} = %s WHERE id = 2", (value,))
    finally:
        conn.close()
    replica_set.sync()
    names = [f"c_{cs}" for cs in text_charsets] + ["c_binary"] + [c.split()[0] for c in EXTRA_COLUMNS]
    return fresh_db, table, names


def column_values(server, db: str, table: str, name: str, expression: str) -> dict[str, bytes | None]:
    rows = server.sql(f"SELECT id, HEX({expression.format(quote_ident(name))}) FROM {qualified(db, table)} ORDER BY id")
    return {str(row_id): None if hexed is None else bytes.fromhex(hexed) for row_id, hexed in rows}


def test_every_charset_round_trips_and_cats_as_the_server_converts(master, replica, tmp_path, charset_table) -> None:
    db, table, names = charset_table
    dest = tmp_path / "dest"
    config = write_config(tmp_path, replica, f"file://{dest}")
    result = run_tracker(config, "dump", f"{db}.{table}", "--date", "2026-11-03")
    assert result.returncode == 0, result.stderr.decode()
    directory = dest / "main" / encode_segment(db) / encode_segment(table) / "dt=2026-11-03"
    manifest = json.loads((directory / "manifest.json").read_text())
    by_name = {c["name"]: c for c in manifest["columns"]}
    assert by_name["c_sjis"]["charset"] == "sjis" and by_name["c_sjis"]["collation"] == "sjis_japanese_ci"
    assert by_name["e"]["charset"] == "sjis" and by_name["s"]["charset"] == "ucs2" and by_name["j"]["charset"] == "utf8mb4"
    assert by_name["id"]["charset"] is None and by_name["c_binary"]["charset"] is None
    assert manifest["system_versioning"] is None
    part = directory / "part-00000.tsv.lz4"

    raw = run_tracker(config, "cat", f"file://{part}")
    assert raw.returncode == 0, raw.stderr.decode()
    restored = f"r_{uuid.uuid4().hex[:10]}"
    master.sql(f"CREATE DATABASE {restored}")
    try:
        restore(master, restored, (directory / "schema.sql").read_text(), manifest, [raw.stdout])
        assert checksum(master, restored, table) == checksum(master, db, table)
        for name in names:
            assert column_values(master, restored, table, name, "{}") == column_values(master, db, table, name, "{}"), name
    finally:
        master.sql(f"DROP DATABASE {restored}")

    lines = run_tracker(config, "cat", "--format", "jsonl", f"file://{part}")
    assert lines.returncode == 0, lines.stderr.decode()
    records = {r["id"]: r for r in map(json.loads, lines.stdout.splitlines())}
    assert sorted(records) == ["1", "2", "3", "4", "5"]
    for name in names:
        if name == "c_binary":
            stored = column_values(master, db, table, name, "{}")
            assert records["2"][name] == {"base64": base64.b64encode(stored["2"]).decode()}
            assert records["1"][name] == "plain\\text"
            continue
        converted = column_values(master, db, table, name, "CONVERT({} USING utf8mb4)")
        for row_id, expected in converted.items():
            want = None if expected is None else expected.decode("utf-8")
            assert records[row_id][name] == want, f"{name} row {row_id}"
    assert records["2"]["e"] == "表" and records["2"]["ch"] == "山\t\u0900"
