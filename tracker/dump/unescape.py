"""Turn OUTFILE's escaped NULs (``\\0``) back into raw 0x00 bytes, streaming.

OUTFILE writes every backslash of the data as ``\\\\`` and every NUL as ``\\0``.
We keep the first (so the text format stays parseable by ``LOAD DATA``) and
undo the second (so the stored data carries the real bytes and readers other
than MySQL see no private escape).

The hot path must not be slower than the server, so the work is done by a
small C extension (``_unescape.c``: memchr to the next escape, compact in
place).  Where it could not be built, a pure-Python fallback gives the same
output: splitting on ``\\\\`` pairs backslashes exactly as the escape grammar
does (a run of backslashes always starts at an escape start), after which
every remaining ``\\0`` is an escaped NUL.  Property tests check both against
the byte-by-byte reference, including arbitrary chunk splits.
"""

from __future__ import annotations

import logging

try:  # the C accelerator, built by setup.py when a compiler is available
    from tracker._unescape import unescape_inplace as _c_unescape_inplace
    from tracker._unescape import unescape_into as _c_unescape_into
except ImportError:  # pragma: no cover - exercised only on hosts without a compiler
    _c_unescape_inplace = _c_unescape_into = None

log = logging.getLogger(__name__)
ACCELERATED = _c_unescape_inplace is not None
if not ACCELERATED:
    log.warning("event=unescape_fallback reason=c_extension_not_built (output identical, more CPU)")
_BS = b"\\"
_ESCAPED_BS = b"\\\\"
_ESCAPED_NUL = b"\\0"
_NUL = b"\x00"


def unescape_inplace(buf: bytearray | memoryview, length: int) -> int:
    """Un-escape ``buf[:length]`` in place and return the new length.

    The result is never longer than the input, so the work can compact the
    read buffer itself: no allocation, one pass.  The data must not end
    inside an escape pair (:class:`NulUnescaper` guarantees it).
    """
    if _c_unescape_inplace is not None:
        return _c_unescape_inplace(buf, length)
    out = unescape_nuls(bytes(memoryview(buf)[:length]))
    memoryview(buf)[: len(out)] = out
    return len(out)


def unescape_into(src: bytes | memoryview, length: int, dst: bytearray) -> int:
    """Un-escape ``src[:length]`` into ``dst`` (at least ``length`` long); return the output length.

    For read-only input (a map of the file the server writes): copying out
    and un-escaping become one pass.
    """
    if _c_unescape_into is not None:
        return _c_unescape_into(src, length, dst)
    out = unescape_nuls(bytes(memoryview(src)[:length]))
    dst[: len(out)] = out
    return len(out)


def unescape_nuls(data: bytes) -> bytes:
    """Un-escape NULs in a buffer that does not end inside an escape pair.

    Pure Python (split, replace, join at C speed); the fallback when the accelerator
    is not built, and the second implementation the tests compare it with.
    """
    if _ESCAPED_NUL not in data:
        return data
    if _ESCAPED_BS not in data:
        return data.replace(_ESCAPED_NUL, _NUL)
    return _ESCAPED_BS.join(piece.replace(_ESCAPED_NUL, _NUL) for piece in data.split(_ESCAPED_BS))


def _odd_trailing_escape(view: memoryview) -> bool:
    """True when ``view`` ends with an unpaired escape character.

    Only the run of backslashes at the end matters: a run always starts at
    an escape start (the byte before it is not a backslash), so an odd run
    leaves its last backslash waiting for the byte it escapes.
    """
    end = len(view)
    i = end - 1
    while i >= 0 and view[i] == 0x5C:
        i -= 1
    return (end - 1 - i) % 2 == 1


class NulUnescaper:
    """Streaming un-escaper over writable buffers split anywhere.

    A buffer that ends with a lone escape character keeps that byte back and
    puts it in front of the next buffer, so a ``\\0`` split across reads is
    still recognised.  ``finish`` returns whatever is held (a dangling
    backslash at the very end is malformed input; it is passed through
    unchanged rather than guessed at).
    """

    __slots__ = ("_held", "_out")

    def __init__(self) -> None:
        self._held = b""
        self._out = bytearray()

    def feed(self, chunk: memoryview | bytearray) -> memoryview:
        """Un-escape ``chunk`` and return the result.

        A writable chunk is consumed (un-escaped in place); a read-only one
        is un-escaped into a buffer reused from call to call, so the result
        is valid until the next call.
        """
        view = memoryview(chunk)
        if self._held:
            # Rare (a chunk ended inside a pair): one copy to rejoin the pair.
            view = memoryview(bytearray(self._held) + view)
            self._held = b""
        length = len(view)
        if length and view[length - 1] == 0x5C and _odd_trailing_escape(view):
            self._held = b"\\"
            length -= 1
        if not view.readonly:
            return view[: unescape_inplace(view, length)]
        if len(self._out) < length:
            self._out = bytearray(length)
        return memoryview(self._out)[: unescape_into(view, length, self._out)]

    def finish(self) -> bytes:
        held, self._held = self._held, b""
        return held


def reference_unescape(data: bytes) -> bytes:
    """Byte-by-byte definition of the transform; slow, for tests and docs."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        byte = data[i]
        if byte == 0x5C and i + 1 < n:
            nxt = data[i + 1]
            if nxt == 0x30:
                out.append(0)
            else:
                out += data[i : i + 2]
            i += 2
            continue
        out.append(byte)
        i += 1
    return bytes(out)
