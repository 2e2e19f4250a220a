"""Streaming compressors and decompressors for the stored objects.

lz4 (default) writes the standard frame format, so ``lz4 -d`` reads every
object.  Its optional content checksum is off: in python-lz4 it costs more
than the compression itself (3.2 vs 0.8 s/GB measured), and the manifest
already holds a CRC-32C of every stored object.  gzip uses level 1: at higher levels zlib is slower than
the server and would become the bottleneck.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import lz4.frame


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
        if self._header:
            out, self._header = self._header + out, b""
        return out

    def flush(self) -> bytes:
        out, self._header = self._header + self._c.flush(), b""
        return out


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
    if name == "gzip":
        return _GzipDecompressor()
    if name == "none":
        return _IdentityDecompressor()
    raise ValueError(f"unknown compression {name!r}")
