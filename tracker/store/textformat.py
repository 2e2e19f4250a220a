"""The one parser of tracker's text format: rows of fields into column blocks.

The format is OUTFILE's: fields end at an unescaped TAB, rows at an
unescaped LF, ``\\`` escapes the next byte, and a field that is exactly
``\\N`` is NULL.  tracker's un-escaper has already turned ``\\0`` into raw NUL
bytes, but like ``LOAD DATA`` we still accept ``\\0 \\b \\n \\r \\t \\Z`` (0, 8,
10, 13, 9, 26); any other escaped byte stands for itself, so ``\\\\N`` is the
string ``\\N`` and ``\\<LF>`` is a newline inside a value.

Every reader (``tracker cat``, the Arrow decoder of the warehouse) goes
through :class:`BlockParser`, which hands out blocks of whole rows laid out
column by column as Arrow's ``large_binary`` buffers (int64 offsets, data,
validity bitmap), so a decoder can wrap them without copying.  The work is
done in C (``tracker/_unescape.c``: SIMD scan for TAB/LF/backslash, one pass)
because the tokenizer must cost well under a second per GB; the pure-Python
functions here define the same result and serve where the extension is not
built.  Property tests check that both give identical blocks.

Block boundaries do not depend on how the input was chunked: a block ends
after the first row that brings its input to ``max_block_bytes`` or more
(a single larger row makes a block alone), and the parser waits until that
row is complete.  Memory is therefore bounded by about two blocks plus the
largest row.
"""

from __future__ import annotations

import logging
import re
import sys
from array import array
from dataclasses import dataclass
from typing import Iterator, Union

from tracker.errors import TrackerError

try:  # the C tokenizer, built by setup.py when a compiler is available
    from tracker._unescape import column_values as _c_column_values
    from tracker._unescape import find_row_end as _c_find_row_end
    from tracker._unescape import parse_block as _c_parse_block
    from tracker._unescape import trailing_backslashes as _c_trailing_backslashes
except ImportError:  # pragma: no cover - exercised only on hosts without a compiler
    _c_find_row_end = _c_parse_block = _c_column_values = _c_trailing_backslashes = None

log = logging.getLogger(__name__)
ACCELERATED = _c_parse_block is not None
if not ACCELERATED:
    log.warning("event=textformat_fallback reason=c_extension_not_built (output identical, much slower)")

Buffer = Union[bytes, bytearray, memoryview]

# Error codes shared with the C implementation (parse_block's error tuple).
ERR_FIELDS = 1
ERR_PARTIAL = 2
ERR_LONE_BACKSLASH = 3

_BS = 0x5C
_ESCAPE_MAP = bytes(range(256)).translate(
    bytes.maketrans(b"0bnrtZ", b"\x00\x08\x0a\x0d\x09\x1a")
)
_TOKEN = re.compile(rb"(\\.|\t)", re.S)


class FormatError(TrackerError):
    """The data is not valid text format; the message names the row (1-based) and byte."""


@dataclass
class ColumnBlock:
    """One column of a block in Arrow ``large_binary`` layout."""

    offsets: bytes  # rows + 1 little-endian int64 offsets into data
    data: bytes  # the un-escaped values, concatenated
    validity: bytes | None  # LSB-first bitmap, 1 = valid; None when no NULL
    null_count: int

    def values(self) -> list[bytes | None]:
        """The values as Python objects (for pure-Python users)."""
        if self.validity is None and len(self.offsets) == 16:
            return [self.data]  # one row (a big value alone): no copy
        if _c_column_values is not None:
            return _c_column_values(self.offsets, self.data, self.validity)
        return self.py_values()

    def py_values(self) -> list[bytes | None]:
        """Pure-Python :meth:`values`."""
        bounds = array("q")
        bounds.frombytes(self.offsets)
        if sys.byteorder == "big":  # pragma: no cover - little-endian targets
            bounds.byteswap()
        data, validity = self.data, self.validity
        out: list[bytes | None] = []
        for i in range(len(bounds) - 1):
            if validity is not None and not validity[i >> 3] >> (i & 7) & 1:
                out.append(None)
            else:
                out.append(data[bounds[i] : bounds[i + 1]])
        return out


@dataclass
class Block:
    """Whole rows, column by column."""

    rows: int
    columns: list[ColumnBlock]


def find_row_end(buf: Buffer, start: int, frm: int) -> int:
    """Index of the first unescaped LF at or after ``frm``, or -1.

    ``buf[start]`` must begin a row: a run of backslashes that ends at an LF
    then always begins at an escape start, so the LF is data exactly when the
    run is odd.  Runs are counted back no further than ``start``.
    """
    if _c_find_row_end is not None:
        return _c_find_row_end(buf, start, frm)
    return py_find_row_end(buf, start, frm)


def trailing_backslashes(buf: Buffer) -> int:
    """How many backslashes ``buf`` ends with."""
    if _c_trailing_backslashes is not None:
        return _c_trailing_backslashes(buf)
    j = len(buf)
    while j > 0 and buf[j - 1] == _BS:
        j -= 1
    return len(buf) - j


def parse_block(
    buf: Buffer, pos: int, ncols: int, max_bytes: int, final: bool
) -> tuple[int, int, list[tuple[bytes, bytes, bytes | None, int]], tuple[int, int, int, int] | None]:
    """Parse whole rows of ``buf`` from ``pos``; see :func:`py_parse_block`."""
    if _c_parse_block is not None:
        return _c_parse_block(buf, pos, ncols, max_bytes, final)
    return py_parse_block(buf, pos, ncols, max_bytes, final)


def py_find_row_end(buf: Buffer, start: int, frm: int) -> int:
    """Pure-Python :func:`find_row_end`."""
    if isinstance(buf, memoryview):
        buf = buf.tobytes()
    i = frm
    while True:
        lf = buf.find(b"\n", i)
        if lf < 0:
            return -1
        j = lf
        while j > start and buf[j - 1] == _BS:
            j -= 1
        if (lf - j) % 2 == 0:
            return lf
        i = lf + 1


def _odd_trailing_backslashes(buf: Buffer, start: int, end: int) -> bool:
    j = end
    while j > start and buf[j - 1] == _BS:
        j -= 1
    return (end - j) % 2 == 1


def split_fields(row: bytes) -> list[bytes | None]:
    """The values of one row (without its LF): un-escaped, None for ``\\N``."""
    if b"\\" not in row:
        return row.split(b"\t")  # type: ignore[return-value]
    parts = _TOKEN.split(row)
    fields: list[bytes | None] = []
    raw: list[bytes] = [parts[0]]
    for i in range(1, len(parts), 2):
        token = parts[i]
        if token == b"\t":
            fields.append(_field(raw))
            raw = [parts[i + 1]]
        else:
            raw.append(token)
            raw.append(parts[i + 1])
    fields.append(_field(raw))
    return fields


def _field(raw: list[bytes]) -> bytes | None:
    """Join text pieces and escape tokens (odd indices) into one value."""
    if len(raw) == 3 and raw[1] == b"\\N" and not raw[0] and not raw[2]:
        return None
    if len(raw) == 1:
        return raw[0]
    return b"".join(piece if k % 2 == 0 else _ESCAPE_MAP[piece[1]].to_bytes(1, "little") for k, piece in enumerate(raw))


def py_parse_block(
    buf: Buffer, pos: int, ncols: int, max_bytes: int, final: bool
) -> tuple[int, int, list[tuple[bytes, bytes, bytes | None, int]], tuple[int, int, int, int] | None]:
    """Parse rows from ``buf[pos:]`` until a row brings the block to ``max_bytes``.

    Returns ``(end, rows, columns, error)``: ``end`` is where the next block
    starts, each column is ``(offsets, data, validity, null_count)``, and
    ``error`` is None or ``(code, row_in_block, fields, row_start)``.  When
    ``final`` is false an incomplete last row just ends the block; when true
    it is an error (``ERR_PARTIAL``, or ``ERR_LONE_BACKSLASH`` when the data
    ends with an unpaired backslash).
    """
    if isinstance(buf, memoryview):
        buf = buf.tobytes()
    start = pos
    end = len(buf)
    values: list[list[bytes | None]] = [[] for _ in range(ncols)]
    rows = 0
    while pos < end:
        lf = py_find_row_end(buf, pos, pos)
        if lf < 0:
            if not final:
                break
            code = ERR_LONE_BACKSLASH if _odd_trailing_backslashes(buf, pos, end) else ERR_PARTIAL
            return pos, rows, [], (code, rows, 0, pos)
        fields = split_fields(bytes(buf[pos:lf]))
        if len(fields) != ncols:
            return pos, rows, [], (ERR_FIELDS, rows, len(fields), pos)
        for column, value in zip(values, fields):
            column.append(value)
        rows += 1
        pos = lf + 1
        if pos - start >= max_bytes:
            break
    return pos, rows, [_column_buffers(column) for column in values], None


def _column_buffers(column: list[bytes | None]) -> tuple[bytes, bytes, bytes | None, int]:
    offsets = array("q", [0])
    total = 0
    nulls = 0
    for value in column:
        if value is None:
            nulls += 1
        else:
            total += len(value)
        offsets.append(total)
    if sys.byteorder == "big":  # pragma: no cover - little-endian targets
        offsets.byteswap()
    data = b"".join(v for v in column if v is not None)
    validity = None
    if nulls:
        bits = bytearray((len(column) + 7) // 8)
        for i, value in enumerate(column):
            if value is not None:
                bits[i >> 3] |= 1 << (i & 7)
        validity = bytes(bits)
    return offsets.tobytes(), data, validity, nulls


class BlockParser:
    """Feed decompressed text in chunks of any size; get blocks of whole rows, memory bounded by max_block_bytes.

    Consume each returned iterator before the next call.  ``finish`` raises
    :class:`FormatError` on a trailing partial row (or lone backslash) and on
    a row whose field count is not ``ncols``.

    Fed chunks are kept as they are until the row that completes a block has
    arrived, then joined once: a huge row arriving in many chunks is neither
    copied again and again nor scanned more than once.
    """

    def __init__(self, ncols: int, max_block_bytes: int = 8 << 20) -> None:
        if ncols < 1:
            raise ValueError("ncols must be at least 1")
        if max_block_bytes < 1:
            raise ValueError("max_block_bytes must be at least 1")
        self.ncols = ncols
        self.max_block_bytes = max_block_bytes
        self._buf = bytearray()  # text from the next block's first row
        self._parts: list[bytes] = []  # fed after _buf, not joined yet
        self._parts_len = 0
        self._odd_tail = False  # the text so far ends with an unpaired backslash
        self._ready = False  # the row that completes the next block has arrived
        self._rows = 0  # rows handed out so far
        self._base = 0  # input bytes before _buf
        self._finished = False

    def feed(self, chunk: Buffer) -> Iterator[Block]:
        if self._finished:
            raise ValueError("feed after finish")
        if chunk:
            chunk = chunk if isinstance(chunk, bytes) else bytes(chunk)  # ours: the caller may reuse its buffer
            if not self._ready:
                self._ready = self._completes_block(chunk)
            self._odd_tail = self._odd_tail_after(chunk)
            self._parts.append(chunk)
            self._parts_len += len(chunk)
        return self._drain(final=False)

    def finish(self) -> Iterator[Block]:
        self._finished = True
        return self._drain(final=True)

    def _completes_block(self, chunk: bytes) -> bool:
        """Does ``chunk`` end a row at or after the block's threshold?

        Waiting for that row (instead of parsing what is there) keeps block
        boundaries independent of chunking.  The chunk starts at an escape
        start unless the text before it ends with an unpaired backslash.
        """
        start = 1 if self._odd_tail else 0
        frm = max(start, self.max_block_bytes - 1 - len(self._buf) - self._parts_len)
        return frm < len(chunk) and find_row_end(chunk, start, frm) >= 0

    def _odd_tail_after(self, chunk: bytes) -> bool:
        run = trailing_backslashes(chunk)
        if run == len(chunk):  # the run goes on from the text before
            return self._odd_tail != bool(run % 2)
        return bool(run % 2)  # a run after another byte starts at an escape start

    def _drain(self, final: bool) -> Iterator[Block]:
        if final or self._ready:
            self._join()
        known_ready = self._ready  # found when its chunk arrived: no need to look again
        while self._buf:
            if not (final or known_ready) and find_row_end(self._buf, 0, self.max_block_bytes - 1) < 0:
                self._ready = False
                return
            yield self._next_block(final)
            known_ready = False
        self._ready = False

    def _join(self) -> None:
        if self._parts:
            self._buf = bytearray().join([self._buf, *self._parts])  # one exact allocation
            self._parts.clear()
            self._parts_len = 0

    def _next_block(self, final: bool) -> Block:
        end, rows, columns, error = parse_block(self._buf, 0, self.ncols, self.max_block_bytes, final)
        if error is not None:
            raise FormatError(self._message(error))
        self._rows += rows
        self._base += end
        if end == len(self._buf):
            self._buf = bytearray()  # let the memory of a huge row go now
        else:
            del self._buf[:end]  # O(1) at the front of a bytearray
        return Block(rows, [ColumnBlock(*column) for column in columns])

    def _message(self, error: tuple[int, int, int, int]) -> str:
        code, row_in_block, fields, row_start = error
        where = f"row {self._rows + row_in_block + 1} (byte {self._base + row_start})"
        if code == ERR_FIELDS:
            return f"{where}: {fields} fields, expected {self.ncols}"
        if code == ERR_LONE_BACKSLASH:
            return f"{where}: the data ends with a lone backslash"
        return f"{where}: the data ends inside a row (no terminating newline)"
