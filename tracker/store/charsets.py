"""Decoding stored values the way the server does: MySQL charset -> Unicode text.

Parts hold each character column's bytes in the column's own charset,
unconverted (the manifest's column ``charset``).  Readers that want text must
decode them exactly as ``CONVERT(col USING utf8mb4)`` would, and Python's
codecs disagree with MySQL's tables in places: MySQL's latin1 is cp1252 with
its five holes (0x81, 0x8D, 0x8F, 0x90, 0x9D) mapped to U+0081..., its sjis
maps 0x815F to a backslash, and dec8, hp8, swe7, keybcs2, armscii8, geostd8
have no Python codec at all.  So the mappings in ``_charmaps`` were captured
from a real MariaDB by ``scripts/gen_charmaps.py``.

A value the server cannot map (it would print ``?``) is *not valid*:
``decode`` raises and a reader keeps the bytes (``{"base64": ...}``).
Surrogate code points, which MariaDB accepts in ucs2/utf16/utf32/utf8mb3
but which are not text, are not valid either.
"""

from __future__ import annotations

import codecs
import re
from array import array
from functools import lru_cache
from sys import byteorder
from types import ModuleType

# Unicode charsets: the Python codec, and the largest code point the charset holds.
_UNICODE: dict[str, tuple[str, int]] = {
    "utf8mb4": ("utf-8", 0x10FFFF),
    "utf8mb3": ("utf-8", 0xFFFF),
    "utf8": ("utf-8", 0xFFFF),  # older servers' name for utf8mb3
    "utf16": ("utf-16-be", 0x10FFFF),
    "utf16le": ("utf-16-le", 0x10FFFF),
    "utf32": ("utf-32-be", 0x10FFFF),
}
_NO_TEXT = (None, "binary")


@lru_cache(maxsize=None)
def _maps() -> ModuleType:
    """``_charmaps``, imported on first use of a charset that is not Unicode.

    Its tables take ~25 ms to compile when no bytecode is cached, and most
    importers (``tracker cat`` of raw text, ``verify --deep``, UTF-8 columns)
    never look at them.
    """
    from tracker.store import _charmaps

    return _charmaps


def is_text(charset: str | None) -> bool:
    """True when values in ``charset`` are text that ``decode`` understands."""
    if charset in _NO_TEXT:
        return False
    name = str(charset).lower()
    return name in _UNICODE or name == "ucs2" or name in _maps().SINGLE_BYTE or name in _maps().MULTIBYTE


def python_codec(charset: str) -> str | None:
    """A Python codec that decodes exactly like the server, when one exists.

    None when no Python codec agrees on every byte sequence (latin1, sjis,
    dec8, ucs2 ...): use ``decode`` for those.  For the UTF charsets the codec
    is right for every valid value; ``decode`` additionally rejects code
    points the charset cannot hold (4-byte sequences in utf8mb3).
    """
    name = charset.lower()
    if name in _UNICODE:
        return _UNICODE[name][0]
    maps = _maps()
    if name in maps.SINGLE_BYTE_CODECS:
        return maps.SINGLE_BYTE_CODECS[name]
    if name in maps.MULTIBYTE:
        codec, differences = maps.MULTIBYTE[name]
        return None if differences else codec
    return None


def decode(value: bytes, charset: str | None) -> str:
    """The Unicode text of a value stored in MySQL charset ``charset``.

    Raises ``UnicodeDecodeError`` when the bytes are not valid in it, and
    ``ValueError`` for ``None``/``binary`` (binary has no text) or a charset
    this module does not know.
    """
    if charset in _NO_TEXT:
        raise ValueError(f"charset {charset!r} has no text")
    name = str(charset).lower()
    if name in _UNICODE:
        codec, top = _UNICODE[name]
        text = value.decode(codec)  # strict: rejects lone surrogates too
        if top < 0x10FFFF and any(ord(c) > top for c in text):
            raise UnicodeDecodeError(name, value, 0, len(value), "character outside the charset")
        return text
    if name == "ucs2":
        return _decode_ucs2(value)
    maps = _maps()
    table = maps.SINGLE_BYTE.get(name)
    if table is not None:
        return codecs.charmap_decode(value, "strict", table)[0]
    if name in maps.MULTIBYTE:
        return _decode_multibyte(value, name)
    raise ValueError(f"unknown charset {charset!r}")


def _decode_ucs2(value: bytes) -> str:
    """UCS-2 big-endian: one 16-bit unit per character, no surrogate pairs."""
    if len(value) % 2:
        raise UnicodeDecodeError("ucs2", value, len(value) - 1, len(value), "odd number of bytes")
    units = array("H", value)
    if byteorder == "little":
        units.byteswap()
    for index, unit in enumerate(units):
        if 0xD800 <= unit <= 0xDFFF:
            raise UnicodeDecodeError("ucs2", value, 2 * index, 2 * index + 2, "surrogate code point")
    return "".join(map(chr, units))


@lru_cache(maxsize=None)
def _multibyte_codec(name: str) -> tuple[re.Pattern[bytes], dict[bytes, str], bool]:
    """A tokenizer and a sequence -> character table equal to the server's.

    Built from the Python codec the generator found closest, corrected by the
    recorded differences.  Also says whether plain ASCII maps to itself.
    """
    codec, differences = _maps().MULTIBYTE[name]
    three_lead = 0x8F if name in ("ujis", "eucjpms") else None
    table: dict[bytes, str] = {}
    singles = [bytes([b]) for b in range(256)]
    for seq in singles:
        _add(table, seq, codec)
    leads = [b for b in range(256) if bytes([b]) not in table and b != three_lead]
    for lead in leads:
        for trail in range(256):
            _add(table, bytes([lead, trail]), codec)
    if three_lead is not None:
        for a in range(0xA1, 0xFF):
            for b in range(0xA1, 0xFF):
                _add(table, bytes([three_lead, a, b]), codec)
    for seq, text in differences.items():
        if text is None:
            table.pop(seq, None)
        else:
            table[seq] = text
    two = {seq[0] for seq in table if len(seq) == 2}
    three = {seq[0] for seq in table if len(seq) == 3}
    parts = []
    if three:
        parts.append(_byte_class(three) + b"..")
    if two:
        parts.append(_byte_class(two) + b".")
    parts.append(b".")
    tokenizer = re.compile(b"|".join(parts), re.DOTALL)
    ascii_identity = all(table.get(bytes([b])) == chr(b) for b in range(128))
    return tokenizer, table, ascii_identity


def _add(table: dict[bytes, str], seq: bytes, codec: str) -> None:
    try:
        text = seq.decode(codec)
    except UnicodeDecodeError:
        return
    if len(text) == 1:
        table[seq] = text


def _byte_class(values: set[int]) -> bytes:
    return b"[" + b"".join(re.escape(bytes([v])) for v in sorted(values)) + b"]"


def _decode_multibyte(value: bytes, name: str) -> str:
    tokenizer, table, ascii_identity = _multibyte_codec(name)
    if ascii_identity and value.isascii():
        return value.decode("ascii")
    out: list[str] = []
    for match in tokenizer.finditer(value):
        text = table.get(match.group())
        if text is None:
            raise UnicodeDecodeError(name, value, match.start(), match.end(), "not a character in this charset")
        out.append(text)
    return "".join(out)
