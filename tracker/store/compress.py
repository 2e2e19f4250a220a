"""Streaming compressors and decompressors for the stored objects.

lz4 (default) writes the standard frame format, so ``lz4 -d`` reads every
object.  Its optional content checksum is off: in python-lz4 it costs more
than the compression itself (3.2 vs 0.8 s/GB measured), and the manifest
already holds a CRC-32C of every stored object.  gzip uses level 1: at higher levels zlib is slower than
the server and would become the bottleneck.  zstd (level 1) writes one
standard frame per object, so ``zstd -d``, DuckDB and pyarrow read it.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import lz4.frame
import zstandard

# zstd level 1: on OLTP-like text it compresses 3.2:1 (lz4 2.0:1) for 2.4
# CPU-s/GB (lz4 1.6); level 3 costs 4.8 CPU-s/GB for 3.3:1, and the negative
# levels barely beat lz4's ratio.  Even level 1 puts tracker at ~0.6x the
# server's OUTFILE CPU (lz4: 0.44x), so lz4 stays the default.
ZSTD_LEVEL = 1


class Compressor(Protocol):
    def compress(self, data: bytes | bytearray | memoryview) -> bytes: ...
    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...
    def finish(self) -> None: ...


class _Lz4Compressor:
    def __init__(self) -> None:
        # 64 KiB blocks (the default) measured fastest.
        self._c = lz4.frame.LZ4FrameCompressor(content_checksum=False)
        self._header = self._c.begin()

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        out = self._c.compress(data)
        if self._header and out:  # the header goes out with the first block: a small object is one write
            out, self._header = self._header + out, b""
        return out

    def flush(self) -> bytes:
        out, self._header = self._header + self._c.flush(), b""
        return out


class _ZstdCompressor:
    def __init__(self, level: int) -> None:
        # One frame per object, so ``zstd -d``, DuckDB and pyarrow read it
        # whole.  No frame checksum: the manifest's CRC-32C covers the
        # object, as for lz4.  threads=0: compress in the caller's thread;
        # tracker's parallelism is its units, and worker threads inside zstd
        # would take the core the server needs.
        self._c = zstandard.ZstdCompressor(level=level, write_checksum=False, threads=0).compressobj()

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()


class _GzipCompressor:
    def __init__(self) -> None:
        self._c = zlib.compressobj(1, zlib.DEFLATED, 31)

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()


class _Identity:
    def compress(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        return data

    def flush(self) -> bytes:
        return b""


def compressor(name: str) -> Compressor:
    if name == "lz4":
        return _Lz4Compressor()
    if name == "zstd":
        return _ZstdCompressor(ZSTD_LEVEL)
    if name == "gzip":
        return _GzipCompressor()
    if name == "none":
        return _Identity()
    raise ValueError(f"unknown compression {name!r}")


class _Lz4Decompressor:
    def __init__(self) -> None:
        self._d = lz4.frame.LZ4FrameDecompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._d.decompress(data)

    def finish(self) -> None:
        if not self._d.eof:
            raise ValueError("truncated lz4 frame")


class _ZstdDecompressor:
    """Decodes every frame of the object, and knows whether the last one ended.

    A concatenation of frames is a valid zstd file (``zstd -d`` reads it
    whole).  python-zstandard's ``read_across_frames`` reads them too but
    then never reports the end of a frame, so a truncated object would pass;
    instead each frame gets its own decompressor, started on the bytes the
    previous one left over.
    """

    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._d.eof:
                self._d = zstandard.ZstdDecompressor().decompressobj()
            try:
                out.append(self._d.decompress(data))
            except zstandard.ZstdError as exc:  # readers expect ValueError for bad data, as from zlib
                raise ValueError(f"corrupt zstd data: {exc}") from None
            data = self._d.unused_data if self._d.eof else b""
        return b"".join(out)

    def finish(self) -> None:
        if not self._d.eof:
            raise ValueError("truncated zstd frame")


class _GzipDecompressor:
    def __init__(self) -> None:
        self._d = zlib.decompressobj(31)

    def decompress(self, data: bytes) -> bytes:
        return self._d.decompress(data)

    def finish(self) -> None:
        if not self._d.eof:
            raise ValueError("truncated gzip stream")


class _IdentityDecompressor:
    def decompress(self, data: bytes) -> bytes:
        return data

    def finish(self) -> None:
        return None


def decompressor(name: str) -> Decompressor:
    if name == "lz4":
        return _Lz4Decompressor()
    if name == "zstd":
        return _ZstdDecompressor()
    if name == "gzip":
        return _GzipDecompressor()
    if name == "none":
        return _IdentityDecompressor()
    raise ValueError(f"unknown compression {name!r}")
