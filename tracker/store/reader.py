"""Reading stored data back: decode a part to its text format or to JSON lines.

The text format is OUTFILE's (tab, newline, backslash escapes, ``\\N`` for
NULL) with NUL bytes raw.  The JSON-lines form maps each row to an object
keyed by column name (from the dataset's manifest): NULL is ``null``, a
value is a string when it is valid UTF-8 and ``{"base64": ...}`` otherwise.
"""

from __future__ import annotations

import base64
import json
import posixpath
from typing import Any, BinaryIO, Iterable, Iterator

from tracker.store import layout
from tracker.store.compress import decompressor
from tracker.config import S3Config, parse_destination
from tracker.errors import UploadFailed, UsageError
from tracker.store.sinks import Store, open_store

_ESCAPES = {ord("0"): 0, ord("b"): 8, ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("Z"): 26}


def open_url(url: str, s3: S3Config) -> tuple[Store, str]:
    """Split ``s3://bucket/key`` or ``file:///path`` into a store and a key."""
    try:
        destination = parse_destination(url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if destination.scheme == "file":
        directory, name = posixpath.split(destination.prefix)
        return open_store(parse_destination(f"file://{directory or '/'}"), s3), name
    if not destination.prefix:
        raise UsageError(f"{url!r} names a bucket, not an object")
    return open_store(parse_destination(f"s3://{destination.bucket}"), s3), destination.prefix


def decoded_chunks(store: Store, key: str) -> Iterator[bytes]:
    """The object's decompressed bytes; a corrupt or truncated object raises."""
    decoder = decompressor(layout.compression_of(key))
    try:
        for chunk in store.read_stream(key):
            out = decoder.decompress(chunk)
            if out:
                yield out
        decoder.finish()
    except (RuntimeError, ValueError, OSError) as exc:
        raise UploadFailed(f"{store.url(key)}: cannot decode: {exc}") from None


def manifest_for(store: Store, key: str) -> dict[str, Any]:
    manifest_key = posixpath.join(posixpath.dirname(key), layout.MANIFEST)
    data = store.get(manifest_key)
    if data is None:
        raise UploadFailed(f"{store.url(manifest_key)} not found; --format jsonl needs the dataset's manifest")
    return json.loads(data)


def split_unescaped(data: bytes, sep: int) -> list[bytes]:
    """Split on ``sep`` bytes that are not escaped by a backslash."""
    parts: list[bytes] = []
    start = i = 0
    n = len(data)
    while i < n:
        byte = data[i]
        if byte == 0x5C:
            i += 2
            continue
        if byte == sep:
            parts.append(data[start:i])
            start = i + 1
        i += 1
    parts.append(data[start:])
    return parts


def rows(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole rows (without their terminator) from a chunked text stream."""
    pending = b""
    for chunk in chunks:
        lines = split_unescaped(pending + chunk, 0x0A)
        pending = lines.pop()
        yield from lines
    if pending:
        yield pending


def field_value(field: bytes) -> bytes | None:
    """One field's value as LOAD DATA would read it; None for ``\\N``."""
    if field == b"\\N":
        return None
    if b"\\" not in field:
        return field
    out = bytearray()
    i = 0
    while i < len(field):
        byte = field[i]
        if byte == 0x5C and i + 1 < len(field):
            nxt = field[i + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def json_value(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def write_jsonl(chunks: Iterable[bytes], names: list[str], out: BinaryIO) -> None:
    for row in rows(chunks):
        values = split_unescaped(row, 0x09)
        if len(values) != len(names):
            raise UploadFailed(f"row has {len(values)} fields, manifest lists {len(names)} columns")
        record = {name: json_value(field_value(v)) for name, v in zip(names, values)}
        out.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")


def cat(url: str, fmt: str, s3: S3Config, out: BinaryIO) -> None:
    store, key = open_url(url, s3)
    if fmt == "jsonl":
        names = [c["name"] for c in manifest_for(store, key)["columns"]]
        write_jsonl(decoded_chunks(store, key), names, out)
        return
    for chunk in decoded_chunks(store, key):
        out.write(chunk)
