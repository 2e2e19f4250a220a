"""charsets.decode: MySQL's own mappings, not Python's, and invalid bytes refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.store import _charmaps
from tracker.store.charsets import decode, is_text, python_codec


def test_mysql_latin1_is_cp1252_with_its_holes_filled() -> None:
    assert decode(b"\x81\x8d\x8f\x90\x9d", "latin1") == "\x81\x8d\x8f\x90\x9d"
    assert decode(b"\x80", "latin1") == "\u20ac"
    assert decode(b"\xc3\xa9", "latin1") == "Ã©"  # bytes, not re-read as UTF-8
    assert python_codec("latin1") is None  # no Python codec maps all five holes


def test_ucs2_and_utf16() -> None:
    assert decode(b"\x00a\x00b", "ucs2") == "ab"
    assert decode(b"\x5c\x71", "ucs2") == decode(b"\x5c\x71", "utf16") == "山"
    assert decode("😀".encode("utf-16-be"), "utf16") == "😀"
    with pytest.raises(UnicodeDecodeError):
        decode("😀".encode("utf-16-be"), "ucs2")  # a surrogate pair is two surrogates in UCS-2
    with pytest.raises(UnicodeDecodeError):
        decode(b"\x00", "ucs2")


def test_multibyte_with_backslash_trail_bytes() -> None:
    assert decode(b"\x95\x5c\x94\x5c\x30", "sjis") == "表能0"
    assert decode(b"\x81\x5f", "sjis") == "\\"  # MariaDB's sjis, not Python's U+FF3C
    assert decode(b"\x81\x5f", "cp932") == "＼"
    with pytest.raises(UnicodeDecodeError):
        decode(b"\x95", "sjis")  # a lead byte alone


def test_utf8mb3_holds_only_the_bmp() -> None:
    assert decode("é".encode(), "utf8mb3") == "é"
    with pytest.raises(UnicodeDecodeError):
        decode("😀".encode(), "utf8mb3")
    assert decode("😀".encode(), "utf8mb4") == "😀"


def test_bytes_the_server_cannot_map_are_not_valid() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode(b"\x80", "ascii")
    for charset in ("dec8", "hp8", "swe7", "keybcs2", "armscii8", "geostd8"):
        assert is_text(charset) and python_codec(charset) is None


@pytest.mark.parametrize("charset", [None, "binary"])
def test_binary_has_no_text(charset) -> None:
    assert not is_text(charset)
    with pytest.raises(ValueError):
        decode(b"x", charset)


def test_unknown_charset_is_a_value_error() -> None:
    assert not is_text("gb18030")
    with pytest.raises(ValueError):
        decode(b"x", "gb18030")


@given(st.sampled_from(sorted(_charmaps.SINGLE_BYTE_CODECS)), st.binary(max_size=64))
def test_exact_single_byte_codecs_agree_with_the_table(charset: str, value: bytes) -> None:
    codec = python_codec(charset)
    try:
        expected = value.decode(codec)
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            decode(value, charset)
        return
    assert decode(value, charset) == expected


@settings(deadline=None)  # the first call per charset builds its table
@given(st.sampled_from(["sjis", "cp932", "ujis", "eucjpms", "big5", "gbk", "gb2312", "euckr"]), st.binary(max_size=32))
def test_multibyte_decode_is_a_concatenation_of_characters(charset: str, value: bytes) -> None:
    """Whatever decodes, decodes piecewise too: the tokenizer never splits a character."""
    try:
        text = decode(value, charset)
    except UnicodeDecodeError:
        return
    for cut in range(len(value) + 1):
        try:
            head = decode(value[:cut], charset)
        except UnicodeDecodeError:
            continue
        assert text.startswith(head)
