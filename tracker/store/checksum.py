"""CRC-32C of stored objects: what the manifest's ``checksum.crc32c`` holds.

Computed by the C extension (the x86 CRC instruction where present, else a
table); the pure-Python version here defines the result and serves where the
extension could not be built.
"""

from __future__ import annotations

try:
    from tracker._unescape import crc32c as _c_crc32c
except ImportError:  # pragma: no cover - only on hosts without a compiler
    _c_crc32c = None

# The C extension (CRC instruction, or its table where the CPU lacks it) is
# fast enough for a second pass per part; the pure-Python fallback is not.
HARDWARE_CRC32C = _c_crc32c is not None

_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def reference_crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """Bit-for-bit definition (slow): reflected CRC-32C, init and xor-out 0xFFFFFFFF."""
    crc = value ^ 0xFFFFFFFF
    for byte in bytes(data):
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C of ``data``, continuing from ``value`` (chained like ``zlib.crc32``)."""
    if _c_crc32c is not None:
        return _c_crc32c(data, value)
    return reference_crc32c(data, value)
