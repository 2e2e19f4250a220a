"""The S3 destination: multipart uploads under the commit rule of ``sinks``."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import boto3
import botocore.config
import botocore.exceptions

from tracker.store.checksum import HARDWARE_CRC32C, crc32c
from tracker.config import Destination, S3Config
from tracker.errors import UploadFailed
from tracker.store.sinks import READ_CHUNK, STALE_CANDIDATE, Precommit, Store, Upload

log = logging.getLogger(__name__)

MiB = 1 << 20
MAX_PARTS = 10_000
MAX_PART_BYTES = 5 * 1024 * MiB
# Parts double in size every this many parts, so an object of any size fits
# in S3's 10,000 parts while small objects keep small parts (less memory).
PARTS_PER_SIZE_STEP = 2_000


def part_size_for(index: int, base: int) -> int:
    """Size of part ``index`` (0-based): ``base`` doubling every step."""
    return min(base << (index // PARTS_PER_SIZE_STEP), MAX_PART_BYTES)


def base_part_size(config: S3Config, size_hint: int) -> int:
    """Configured part size, raised so a ``size_hint`` object needs few steps."""
    base = config.part_size_mb * MiB
    wanted = -(-size_hint // PARTS_PER_SIZE_STEP)
    while base < wanted and base < MAX_PART_BYTES:
        base *= 2
    return min(base, MAX_PART_BYTES)


def parts_in_flight(config: S3Config, base: int) -> int:
    """Concurrent parts for an upload whose parts start at ``base`` bytes.

    The configured concurrency at the configured part size sets the memory
    budget; an object large enough to need bigger parts gets fewer in flight
    rather than more memory (a 5 TB unit's 512 MiB parts go one or two at a time).
    """
    budget = config.upload_concurrency * config.part_size_mb * MiB
    return max(1, min(config.upload_concurrency, budget // base))


def part_checksum(body: bytes | bytearray) -> dict[str, str]:
    """Our own CRC-32C of a part for S3 to verify, in place of botocore's CRC32.

    The same integrity check at a third of the CPU (the CPU's CRC
    instruction); without the C extension botocore's default is cheaper.
    """
    if not HARDWARE_CRC32C:
        return {}
    return {"ChecksumCRC32C": base64.b64encode(crc32c(body).to_bytes(4, "big")).decode()}


def _s3_error(action: str, url: str, exc: BaseException) -> UploadFailed:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        detail = f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    else:
        detail = " ".join(str(exc).split()) or type(exc).__name__
    return UploadFailed(f"S3 {action} {url} failed: {detail}")


class S3Upload(Upload):
    """Multipart upload with parts sent concurrently while data still flows.

    Memory is bounded: at most ``concurrency`` parts in flight plus the one
    being filled.  An object smaller than one part goes up as one PUT.
    """

    def __init__(self, store: "S3Store", key: str, precommit: Precommit, overwrite: bool, size_hint: int) -> None:
        super().__init__(key, precommit, overwrite)
        self._store = store
        self._client = store.client
        self._bucket = store.destination.bucket
        self._full_key = store.full_key(key)
        self._base = base_part_size(store.config, size_hint)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: dict[int, dict[str, str]] = {}
        self._futures: list[Future] = []
        self._in_flight = parts_in_flight(store.config, self._base)
        self._slots = threading.BoundedSemaphore(self._in_flight)
        self._pool: ThreadPoolExecutor | None = None

    def _open(self) -> None:
        """Nothing yet: the multipart upload starts with the first full part."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= part_size_for(len(self._futures), self._base):
            self._send_part()

    def _send_part(self) -> None:
        self._raise_failed_parts()
        if self._upload_id is None:
            self._start_multipart()
        if len(self._futures) >= MAX_PARTS:
            raise UploadFailed(f"{self._store.url(self.key)}: more than {MAX_PARTS} parts")
        number = len(self._futures) + 1
        # The filled buffer itself becomes the part (botocore takes a
        # bytearray): no copy; writing continues into a new one.
        body, self._buf = self._buf, bytearray()
        self._slots.acquire()  # back-pressure: wait for a free upload slot
        assert self._pool is not None
        future = self._pool.submit(self._upload_part, number, body)
        future.add_done_callback(lambda _f: self._slots.release())
        self._futures.append(future)

    def _start_multipart(self) -> None:
        try:
            algorithm = {"ChecksumAlgorithm": "CRC32C"} if HARDWARE_CRC32C else {}
            response = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._full_key, Metadata={"tracker": "1"}, **algorithm
            )
        except Exception as exc:
            raise _s3_error("create multipart upload", self._store.url(self.key), exc) from None
        self._upload_id = response["UploadId"]
        self._pool = ThreadPoolExecutor(self._in_flight, thread_name_prefix="s3-part")

    def _upload_part(self, number: int, body: bytearray) -> None:
        checksum = part_checksum(body)  # in this part's thread: the C code releases the GIL
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._full_key, UploadId=self._upload_id, PartNumber=number, Body=body, **checksum
        )
        self._parts[number] = {"ETag": response["ETag"], **checksum}

    def _raise_failed_parts(self) -> None:
        for future in self._futures:
            if future.done() and future.exception() is not None:
                raise _s3_error("upload part", self._store.url(self.key), future.exception()) from None

    def _wait_parts(self) -> None:
        for future in self._futures:
            exc = future.exception()
            if exc is not None:
                raise _s3_error("upload part", self._store.url(self.key), exc) from None

    def _conditional(self) -> dict:
        # Exactly one of two racing writers wins; --force is the only way
        # to replace an object.
        return {} if self.overwrite else {"IfNoneMatch": "*"}

    def _commit(self) -> None:
        url = self._store.url(self.key)
        if self._upload_id is None:
            body = bytes(self._buf)
            try:
                self._client.put_object(
                    Bucket=self._bucket, Key=self._full_key, Body=body, **part_checksum(body), **self._conditional()
                )
            except Exception as exc:
                raise _s3_error("put", url, exc) from None
            return
        if self._buf:
            self._send_part()
        self._wait_parts()
        parts = [{"PartNumber": n, **self._parts[n]} for n in sorted(self._parts)]
        try:
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._full_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                **self._conditional(),
            )
        except Exception as exc:
            raise _s3_error("complete multipart upload", url, exc) from None
        self._shutdown()

    def _abort(self) -> None:
        for future in self._futures:
            future.cancel()
        self._shutdown()
        self._buf = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._full_key, UploadId=upload_id)
            log.info("event=upload_aborted url=%s", self._store.url(self.key))

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class S3Store(Store):
    def __init__(
        self, destination: Destination, config: S3Config, session: boto3.session.Session | None = None
    ) -> None:
        """``session`` carries explicit credentials (the Spark data source's options); default: the AWS chain."""
        self.destination = destination
        self.config = config
        self.client = (session or boto3.session.Session()).client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            config=botocore.config.Config(
                retries={"max_attempts": 5, "mode": "standard"},
                # A store that stops answering must not hold a worker for
                # ever: each attempt gives up after this long without a
                # byte (README, "Silent faults", has the whole bound).
                connect_timeout=config.read_timeout_seconds,
                read_timeout=config.read_timeout_seconds,
                max_pool_connections=config.upload_concurrency + 4,
                # Every part still carries botocore's CRC32 checksum, which the
                # store verifies; SigV4's SHA-256 of the payload on top of it
                # costs ~0.75 CPU-s/GB.  botocore skips it over HTTPS already;
                # this skips it over plain HTTP (S3-compatible stores) too.
                s3={"payload_signing_enabled": False},
            ),
        )

    def full_key(self, key: str) -> str:
        prefix = self.destination.prefix
        return f"{prefix}/{key}" if prefix else key

    def url(self, key: str) -> str:
        return f"s3://{self.destination.bucket}/{self.full_key(key)}"

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload:
        return S3Upload(self, key, precommit, overwrite, size_hint)

    def _call(self, action: str, key: str, fn: Callable, **kwargs):
        try:
            return fn(Bucket=self.destination.bucket, Key=self.full_key(key), **kwargs)
        except Exception as exc:
            raise _s3_error(action, self.url(key), exc) from None

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, self.client.put_object, Body=data)

    def get(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.destination.bucket, Key=self.full_key(key))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise _s3_error("get", self.url(key), exc) from None
        except Exception as exc:
            raise _s3_error("get", self.url(key), exc) from None
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.destination.bucket, Key=self.full_key(key))
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise _s3_error("head", self.url(key), exc) from None
        except Exception as exc:
            raise _s3_error("head", self.url(key), exc) from None

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object)

    def list(self, prefix: str) -> list[str]:
        full = self.full_key(prefix)
        strip = len(self.full_key(""))
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.destination.bucket, Prefix=full):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except Exception as exc:
            raise _s3_error("list", self.url(prefix), exc) from None
        return keys

    def clean_stale(self, prefix: str, older_than: dt.timedelta, dates: Sequence[str] | None = None) -> int:
        # One listing of the open uploads under the prefix, whatever its history: ``dates`` is not needed.
        cutoff = dt.datetime.now(dt.timezone.utc) - older_than
        aborted = 0
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.destination.bucket, Prefix=self.full_key(prefix)):
                for upload in page.get("Uploads", []):
                    if STALE_CANDIDATE.search(upload["Key"]) and upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.destination.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
                        log.info("event=stale_upload_aborted key=%s initiated=%s", upload["Key"], upload["Initiated"])
        except Exception as exc:
            raise _s3_error("clean stale uploads under", self.url(prefix), exc) from None
        return aborted

    def read_stream(self, key: str) -> Iterator[bytes]:
        try:
            response = self.client.get_object(Bucket=self.destination.bucket, Key=self.full_key(key))
            yield from response["Body"].iter_chunks(READ_CHUNK)
        except Exception as exc:
            raise _s3_error("get", self.url(key), exc) from None
