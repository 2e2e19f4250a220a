#!/usr/bin/env python3
"""Ask a real MariaDB how it decodes every charset; write tracker/store/_charmaps.py.

``tracker cat`` must print exactly what the server's ``CONVERT(col USING
utf8mb4)`` gives, and Python's codecs disagree with MySQL's tables in places
(MySQL's latin1 is cp1252 with the five holes filled, its sjis maps 0x815F to
a backslash, dec8/hp8/swe7/... have no Python codec at all).  So the mapping
is the server's, captured once and committed:

* single-byte charsets: all 256 bytes, ``'\\ufffe'`` where the server cannot
  map the byte (it substitutes ``?``; a real 0x3F is told apart by its input);
* multibyte (non-Unicode) charsets: every 1-, 2- and (EUC-JP) 3-byte sequence
  is tried; the table records the Python codec that agrees best and only the
  sequences where the server differs from it (a different character, or
  ``None`` when one side cannot map the sequence).

Usage: ``python scripts/gen_charmaps.py --port 3306 [--host 127.0.0.1] [--user root]``
"""

from __future__ import annotations

import argparse
import codecs
import pprint
from pathlib import Path

import pymysql

OUTPUT = Path(__file__).resolve().parent.parent / "tracker" / "store" / "_charmaps.py"

# Unicode charsets are decoded with Python's UTF codecs plus range checks
# (tracker/store/charsets.py); binary has no text.
UNICODE = {"utf8mb3", "utf8mb4", "ucs2", "utf16", "utf16le", "utf32", "binary"}

# Python codecs worth trying for each single-byte charset (exactness is checked).
SINGLE_CANDIDATES = {
    "ascii": ["ascii"],
    "latin1": ["cp1252", "latin_1"],
    "latin2": ["iso8859_2"],
    "latin5": ["iso8859_9", "cp1254"],
    "latin7": ["iso8859_13"],
    "greek": ["iso8859_7"],
    "hebrew": ["iso8859_8"],
    "tis620": ["tis_620", "cp874"],
    "koi8r": ["koi8_r"],
    "koi8u": ["koi8_u"],
    "cp850": ["cp850"],
    "cp852": ["cp852"],
    "cp866": ["cp866"],
    "cp1250": ["cp1250"],
    "cp1251": ["cp1251"],
    "cp1256": ["cp1256"],
    "cp1257": ["cp1257"],
    "macroman": ["mac_roman"],
    "macce": ["mac_latin2"],
}

# Python codecs tried for each multibyte charset; the one with the fewest
# differences from the server is recorded.
MULTI_CANDIDATES = {
    "big5": ["big5", "cp950", "big5hkscs"],
    "sjis": ["shift_jis", "cp932"],
    "cp932": ["cp932", "shift_jis"],
    "ujis": ["euc_jp", "euc_jis_2004"],
    "eucjpms": ["euc_jp", "euc_jis_2004"],
    "euckr": ["euc_kr", "cp949"],
    "gb2312": ["gb2312", "gbk"],
    "gbk": ["gbk", "gb18030"],
}

UNMAPPED = "\ufffe"  # codecs.charmap_decode's "undefined" marker


def server_map(conn: pymysql.Connection, charset: str, candidates: list[bytes]) -> dict[bytes, str | None]:
    """What the server makes of each candidate sequence alone: one character, or None."""
    out: dict[bytes, str | None] = {}
    with conn.cursor() as cur:
        cur.execute(f"DO CONVERT(_binary'' USING {charset})")  # charset name check
        for start in range(0, len(candidates), 2000):
            batch = candidates[start : start + 2000]
            selects = " UNION ALL ".join(
                f"SELECT {i}, HEX(CONVERT(CONVERT(UNHEX('{seq.hex()}') USING {charset}) USING utf8mb4))"
                for i, seq in enumerate(batch)
            )
            cur.execute(selects)
            for index, hexed in cur.fetchall():
                seq = batch[index]
                text = bytes.fromhex(hexed).decode("utf-8", "surrogatepass") if hexed is not None else ""
                # Exactly one character, and not the server's "?" stand-in.
                if len(text) != 1 or (text == "?" and seq != b"?"):
                    out[seq] = None
                else:
                    out[seq] = text
    return out


def single_byte_table(conn: pymysql.Connection, charset: str) -> str:
    mapped = server_map(conn, charset, [bytes([b]) for b in range(256)])
    return "".join(mapped[bytes([b])] or UNMAPPED for b in range(256))


def exact_single_codec(charset: str, table: str) -> str | None:
    for name in SINGLE_CANDIDATES.get(charset, []):
        try:
            codecs.lookup(name)
        except LookupError:
            continue
        if "".join(_decode_or_none(bytes([b]), name) or UNMAPPED for b in range(256)) == table:
            return name
    return None


def _decode_or_none(seq: bytes, codec: str) -> str | None:
    try:
        text = seq.decode(codec)
    except UnicodeDecodeError:
        return None
    return text if len(text) == 1 else None


def multibyte_candidates(singles: dict[bytes, str | None], three_byte_lead: int | None) -> list[bytes]:
    """Two-byte sequences led by a byte that is not a character alone; EUC 3-byte ones."""
    leads = [b for b in range(256) if singles[bytes([b])] is None and b != three_byte_lead]
    seqs = [bytes([lead, trail]) for lead in leads for trail in range(256)]
    if three_byte_lead is not None:
        seqs += [bytes([three_byte_lead, a, b]) for a in range(0xA1, 0xFF) for b in range(0xA1, 0xFF)]
    return seqs


def multibyte_table(conn: pymysql.Connection, charset: str) -> tuple[str, dict[bytes, str | None]]:
    singles = server_map(conn, charset, [bytes([b]) for b in range(256)])
    three = 0x8F if charset in ("ujis", "eucjpms") else None
    server = dict(singles)
    server.update(server_map(conn, charset, multibyte_candidates(singles, three)))
    best: tuple[int, str, dict[bytes, str | None]] | None = None
    for codec in MULTI_CANDIDATES[charset]:
        diffs = {seq: text for seq, text in server.items() if _decode_or_none(seq, codec) != text}
        if best is None or len(diffs) < best[0]:
            best = (len(diffs), codec, diffs)
    assert best is not None
    return best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--user", default="root")
    parser.add_argument("--password", default="")
    args = parser.parse_args()
    conn = pymysql.connect(host=args.host, port=args.port, user=args.user, password=args.password, charset="utf8mb4")
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        (version,) = cur.fetchone()
        cur.execute("SHOW CHARACTER SET")
        charsets = sorted((str(r[0]), int(r[3])) for r in cur.fetchall())
    single: dict[str, str] = {}
    single_codecs: dict[str, str] = {}
    multi: dict[str, tuple[str, dict[bytes, str | None]]] = {}
    for name, maxlen in charsets:
        if name in UNICODE:
            continue
        if maxlen == 1:
            single[name] = single_byte_table(conn, name)
            codec = exact_single_codec(name, single[name])
            if codec:
                single_codecs[name] = codec
        else:
            multi[name] = multibyte_table(conn, name)
        print(name, "done")
    conn.close()
    lines = [
        f'"""Generated by scripts/gen_charmaps.py from MariaDB {version}; do not edit.',
        "",
        "SINGLE_BYTE: each byte's character, '\\ufffe' where the server cannot map it.",
        "SINGLE_BYTE_CODECS: Python codecs that decode exactly like SINGLE_BYTE.",
        "MULTIBYTE: (Python codec, {sequence: the server's character or None})",
        "for the sequences where the server differs from the codec.",
        '"""',
        "",
        f"SERVER_VERSION = {version!r}",
        "",
        "SINGLE_BYTE = " + pprint.pformat(single, width=100),
        "",
        "SINGLE_BYTE_CODECS = " + pprint.pformat(single_codecs, width=100),
        "",
        "MULTIBYTE = " + pprint.pformat(multi, width=100),
        "",
    ]
    OUTPUT.write_text("\n".join(lines), encoding="utf-8")
    print("wrote", OUTPUT)


if __name__ == "__main__":
    main()
