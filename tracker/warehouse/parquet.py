"""Streaming Parquet into the store's commit-on-clean-exit upload.

pyarrow's ``ParquetWriter`` writes to a file-like object; :class:`UploadFile`
forwards each write to an ``Upload`` (a multipart upload on S3, a hidden
temporary file on ``file://``), so the file is never visible partially
written and is never staged whole in memory or on disk.  Batches are
gathered into row groups of about ``ROW_GROUP_BYTES`` of uncompressed data:
memory is bounded by one row group (plus the upload's parts in flight)
whatever the part's size.
"""

from __future__ import annotations

from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from tracker.store.files import FileStore
from tracker.store.sinks import Store, Upload

ROW_GROUP_BYTES = 128 << 20
COMPRESSION = "zstd"
_FOOTER_GUESS = 64 << 10


class UploadFile:
    """The write side of a file, forwarding to an ``Upload``."""

    def __init__(self, upload: Upload) -> None:
        self._upload = upload
        self._position = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        self._upload.write(view)
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Nothing buffered here; the upload commits on its own exit."""

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def write_parquet(
    upload: Upload,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    *,
    final_metadata: Callable[[int], dict[bytes, bytes]] | None = None,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> tuple[int, int]:
    """Write ``batches`` as one Parquet file into ``upload``; (rows, bytes written).

    Every batch must have ``schema``'s types.  zstd, statistics on (the
    defaults of engines that prune by min/max).  ``final_metadata(rows)``
    adds key-value metadata known only at the end (counts) to the footer.
    """
    sink = UploadFile(upload)
    rows = 0
    pending: list[pa.RecordBatch] = []
    pending_bytes = 0
    with pq.ParquetWriter(sink, schema, compression=COMPRESSION, write_statistics=True) as writer:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            pending_bytes += batch.nbytes
            rows += batch.num_rows
            if pending_bytes >= row_group_bytes:
                _flush(writer, schema, pending)
                pending, pending_bytes = [], 0
        if pending:
            _flush(writer, schema, pending)
        if final_metadata is not None:
            writer.add_key_value_metadata(final_metadata(rows))
    return rows, sink.tell()


def _flush(writer: pq.ParquetWriter, schema: pa.Schema, batches: list[pa.RecordBatch]) -> None:
    table = pa.Table.from_batches(batches, schema=schema)
    writer.write_table(table, row_group_size=table.num_rows)  # one row group


def read_footer(store: Store, key: str) -> tuple[pq.FileMetaData, int] | None:
    """The footer of a committed Parquet file and the file's size; None if absent or not Parquet.

    Reads only the footer (one or two ranged GETs on S3), so checking
    whether a file committed before a crash can be reused costs little.  A
    file that is not valid Parquet gives None: it is written again.
    """
    try:
        if isinstance(store, FileStore):
            path = store.path(key)
            if not path.is_file():
                return None
            return pq.read_metadata(str(path)), path.stat().st_size
        found = _s3_tail(store, key)
        if found is None:
            return None
        tail, size = found
        return pq.read_metadata(pa.BufferReader(tail)), size
    except (OSError, pa.ArrowInvalid):
        return None


def _s3_tail(store: Store, key: str) -> tuple[bytes, int] | None:
    """The file's last bytes, enough to hold its footer (Parquet ends ``len PAR1``), and its size."""
    import botocore.exceptions

    client = store.client  # type: ignore[attr-defined]
    bucket, full_key = store.destination.bucket, store.full_key(key)  # type: ignore[attr-defined]
    try:
        first = client.get_object(Bucket=bucket, Key=full_key, Range=f"bytes=-{_FOOTER_GUESS}")
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise OSError(str(exc)) from None
    tail = first["Body"].read()
    size = int(first["ContentRange"].rsplit("/", 1)[1]) if first.get("ContentRange") else len(tail)
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        return None
    needed = int.from_bytes(tail[-8:-4], "little") + 8
    if len(tail) < needed <= size:
        tail = client.get_object(Bucket=bucket, Key=full_key, Range=f"bytes=-{needed}")["Body"].read()
    # The footer reader checks the leading magic too: give it a file that starts with one.
    return (b"PAR1" + tail if len(tail) < size else tail), size
