"""Reading stored data back: decode a part to its text format or to JSON lines.

Every read is checked against what the manifest promises: the stored
object's size and CRC-32C (``verified_chunks``).  An object up to
``VERIFY_FIRST_BYTES`` is read whole and checked before a byte is handed
on, so its output is never wrong; a larger one streams and is checked at its
end, so output already written is not to be trusted when the command fails
(status 1), as with ``gzip -dc``.

The text format is OUTFILE's (tab, newline, backslash escapes, ``\\N`` for
NULL) with NUL bytes raw.  The JSON-lines form maps each row to an object
keyed by column name (from the dataset's manifest): NULL is ``null``, a
character column's value is its text (decoded from the column's ``charset``
as the server converts it) and anything not text is ``{"base64": ...}``.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath
from itertools import repeat
from typing import Any, BinaryIO, Iterable, Iterator

from tracker.store import charsets, layout
from tracker.store.compress import decompressor
from tracker.config import S3Config, parse_destination
from tracker.errors import TrackerError, UploadFailed, UsageError
from tracker.store.checksum import crc32c
from tracker.store.sinks import Store, open_store
from tracker.store.textformat import Block, BlockParser, FormatError

log = logging.getLogger(__name__)

# Objects up to this size (stored) are verified before any output; larger
# ones are verified as they stream (memory stays bounded).
VERIFY_FIRST_BYTES = 16 << 20


class CorruptObject(TrackerError):
    """A stored object differs from its manifest entry (size or CRC-32C)."""


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


def verified_chunks(store: Store, key: str, entry: dict | None) -> Iterator[bytes]:
    """The object's DECOMPRESSED bytes, streamed; checks the stored object's size and CRC-32C.

    ``entry`` is the object's manifest unit entry (``bytes``,
    ``checksum.crc32c``); CorruptObject names the object and what differs.
    A stored object longer than promised fails as soon as that shows; a
    decoding error in an object that does not match its entry is reported as
    the mismatch (the cause), not as the decoder's complaint.  ``entry``
    None: no check.
    """
    check = _Check(store.url(key), entry)
    stream = store.read_stream(key)
    if entry is not None and check.size is not None and check.size <= VERIFY_FIRST_BYTES:
        stored = [check.update(chunk) for chunk in stream]
        check.finish()
        stream = iter(stored)
    decoder = decompressor(layout.compression_of(key))
    try:
        for chunk in stream:
            out = decoder.decompress(check.update(chunk))
            if out:
                yield out
        decoder.finish()
    except (RuntimeError, ValueError, OSError) as exc:
        for chunk in stream:  # the whole object, so a mismatch is named as such
            check.update(chunk)
        check.finish()
        raise UploadFailed(f"{store.url(key)}: cannot decode: {exc}") from None
    check.finish()


class _Check:
    """Size and CRC-32C of the stored bytes, against a manifest unit entry."""

    def __init__(self, url: str, entry: dict | None) -> None:
        self.url = url
        self.size = entry.get("bytes") if entry is not None else None
        self.crc = (entry.get("checksum") or {}).get("crc32c") if entry is not None else None
        self.enabled = entry is not None
        self.seen = 0
        self.value = 0
        self.done = False

    def update(self, chunk: bytes) -> bytes:
        if self.enabled and not self.done:
            self.seen += len(chunk)
            self.value = crc32c(chunk, self.value)
            if self.size is not None and self.seen > self.size:
                raise CorruptObject(f"{self.url}: size differs from the manifest: expected {self.size} bytes, got more")
        return chunk

    def finish(self) -> None:
        if not self.enabled or self.done:
            return
        self.done = True
        if self.size is not None and self.seen != self.size:
            raise CorruptObject(f"{self.url}: size differs from the manifest: expected {self.size} bytes, got {self.seen}")
        got = f"{self.value:08x}"
        if self.crc is not None and got != str(self.crc).lower():
            raise CorruptObject(f"{self.url}: crc32c differs from the manifest: expected {self.crc}, got {got}")


def unit_entry_for(store: Store, key: str) -> dict | None:
    """The manifest's unit entry for this object (manifest.json in the same folder), None if no manifest."""
    return _entry_in(_read_manifest(store, key), store, key)


def _entry_in(manifest: dict | None, store: Store, key: str) -> dict | None:
    """Units of one dataset share a folder, so the object's name finds its entry
    whatever prefix the manifest's keys carry.  An object the manifest does not
    list (left over from another run) is read unverified, with a warning."""
    if manifest is None:
        return None
    name = posixpath.basename(key)
    for unit in manifest.get("units") or []:
        if posixpath.basename(str(unit.get("key", ""))) == name:
            return unit
    log.warning("event=cat_unverified object=%s reason=not_in_manifest", store.url(key))
    return None


def _read_manifest(store: Store, key: str) -> dict | None:
    manifest_key = posixpath.join(posixpath.dirname(key), layout.MANIFEST)
    data = store.get(manifest_key)
    if data is None:
        return None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise CorruptObject(f"{store.url(manifest_key)}: not a readable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise CorruptObject(f"{store.url(manifest_key)}: not a readable manifest: not a JSON object")
    return manifest


# Manifests written before columns carried ``charset``: values were tried as UTF-8.
LEGACY_CHARSET = "utf8mb4"


def json_value(value: bytes | None, charset: str | None = LEGACY_CHARSET) -> Any:
    """A value as JSON: text decoded from its column's charset, else base64.

    A character column's value is decoded as the server would convert it
    (``charsets.decode``); a value not valid in its charset, or in a charset
    unknown here, is kept as bytes.  A column without charset (numbers,
    dates, BLOBs, spatial) is a string when its bytes are UTF-8 (numbers and
    dates are ASCII), else bytes.
    """
    if value is None:
        return None
    try:
        if charset is None or charset == "binary":
            return value.decode("utf-8")
        if charsets.is_text(charset):
            return charsets.decode(value, charset)
    except (UnicodeDecodeError, ValueError):
        pass
    return {"base64": base64.b64encode(value).decode("ascii")}


# Blocks of about this much text: large enough to amortise the per-block
# work, small enough that a block's JSON stays a few MB.
JSONL_BLOCK_BYTES = 1 << 20
_encode_str = json.encoder.encode_basestring  # what json.dumps does to a str (C)
_ENCODE_SLICE = 1 << 20


def write_jsonl(
    chunks: Iterable[bytes], names: list[str], out: BinaryIO, column_charsets: list[str | None] | None = None
) -> None:
    """``column_charsets``: each column's manifest ``charset`` (None: the legacy UTF-8 rule).

    Small rows: values are turned into JSON column by column (one
    ``json_value`` call per value) and rows are assembled by one format
    string, so the per-row Python work is small.  A block holding big values
    is written value by value, so that a value exists in at most a few forms
    at once (memory a few times the largest value).
    """
    value_charsets = column_charsets if column_charsets is not None else [LEGACY_CHARSET] * len(names)
    keys = [json.dumps(name, ensure_ascii=False) + ": " for name in names]
    template = "{" + ", ".join(key.replace("%", "%%") + "%s" for key in keys) + "}\n"
    for block in _blocks(BlockParser(len(names), JSONL_BLOCK_BYTES), chunks):
        if sum(len(c.data) for c in block.columns) > 2 * JSONL_BLOCK_BYTES:
            _write_rows_one_by_one(block, keys, value_charsets, out)
            continue
        encoded = [
            _json_column(list(map(json_value, column.values(), repeat(charset))))  # json_value per value
            for column, charset in zip(block.columns, value_charsets)
        ]
        out.write("".join(map(template.__mod__, zip(*encoded))).encode())


def _write_rows_one_by_one(block: Block, keys: list[str], value_charsets: list[str | None], out: BinaryIO) -> None:
    columns = [column.values() for column in block.columns]
    block.columns.clear()  # from here each value is held once, and dropped when written
    for i in range(block.rows):
        for k, (key, charset) in enumerate(zip(keys, value_charsets)):
            out.write((("{" if k == 0 else ", ") + key).encode())
            value, columns[k][i] = columns[k][i], None
            decoded = json_value(value, charset)  # json_value per value
            del value
            _write_json(decoded, out)
            del decoded
        out.write(b"}\n")


def _json_column(values: list[Any]) -> list[str]:
    """JSON text of each value; all strings (the common case) in one C-level pass."""
    try:
        return list(map(_encode_str, values))
    except TypeError:  # NULLs or non-strings in this column
        return [_encode_str(v) if v.__class__ is str else _json(v) for v in values]


def _write_json(value: Any, out: BinaryIO) -> None:
    """Write ``value`` as JSON without building its whole text: big strings go in slices."""
    if value.__class__ is str and len(value) > _ENCODE_SLICE:
        out.write(b'"')
        for start in range(0, len(value), _ENCODE_SLICE):  # escaping is per character: slices are safe
            out.write(_encode_str(value[start : start + _ENCODE_SLICE])[1:-1].encode())
        out.write(b'"')
    elif value.__class__ is dict:
        out.write(b"{")
        for k, (key, item) in enumerate(value.items()):
            out.write(((", " if k else "") + _encode_str(str(key)) + ": ").encode())
            _write_json(item, out)
        out.write(b"}")
    else:
        out.write(_json(value).encode())


def _json(value: Any) -> str:
    if value.__class__ is str:
        return _encode_str(value)
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False)


def _blocks(parser: BlockParser, chunks: Iterable[bytes]) -> Iterator[Block]:
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.finish()


def cat(url: str, fmt: str, s3: S3Config, out: BinaryIO) -> None:
    """Write one object decoded to ``out``, checked against its manifest entry when there is one."""
    store, key = open_url(url, s3)
    manifest = _read_manifest(store, key)
    chunks = verified_chunks(store, key, _entry_in(manifest, store, key))
    if fmt == "raw":
        for chunk in chunks:
            out.write(chunk)
        return
    if manifest is None:
        manifest_url = store.url(posixpath.join(posixpath.dirname(key), layout.MANIFEST))
        raise UploadFailed(f"{manifest_url} not found; --format jsonl needs the dataset's manifest")
    columns = manifest["columns"]
    try:
        write_jsonl(chunks, [c["name"] for c in columns], out, [c.get("charset", LEGACY_CHARSET) for c in columns])
    except FormatError as exc:
        raise FormatError(f"{store.url(key)}: {exc}") from None
