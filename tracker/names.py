"""Parsing table names given on the command line.

``db.table`` splits at the first dot (the table part may contain more); either part may be written in
backticks (inner backticks doubled) so names containing dots, spaces or
backticks can be named exactly: ```my.db`.`odd``name` ``.
"""

from __future__ import annotations

from tracker.errors import UsageError


def _ident(text: str, pos: int, whole: str, stop: str) -> tuple[str, int]:
    """Read one identifier at ``pos`` (unquoted: up to ``stop``); return it and the next position."""
    if pos < len(text) and text[pos] == "`":
        out = []
        i = pos + 1
        while i < len(text):
            if text[i] == "`":
                if i + 1 < len(text) and text[i + 1] == "`":
                    out.append("`")
                    i += 2
                    continue
                return "".join(out), i + 1
            out.append(text[i])
            i += 1
        raise UsageError(f"unterminated backtick in table name {whole!r}")
    end = text.find(stop, pos) if stop else -1
    end = len(text) if end < 0 else end
    return text[pos:end], end


def parse_table_name(text: str) -> tuple[str, str]:
    """``db.table`` -> (db, table); a clear ``UsageError`` when malformed."""
    db, pos = _ident(text, 0, text, ".")
    if pos >= len(text) or text[pos] != ".":
        raise UsageError(f"table name {text!r} must be DB.TABLE")
    table, pos = _ident(text, pos + 1, text, "")
    if pos != len(text):
        raise UsageError(f"unexpected text after table name in {text!r}")
    if not db or not table:
        raise UsageError(f"table name {text!r} has an empty database or table part")
    if "\x00" in db or "\x00" in table:
        raise UsageError("table names cannot contain NUL")
    return db, table
