"""Destinations: where objects land, and the one commit rule for data objects.

A data object is written through an :class:`Upload`, a context manager that
opens a multipart upload (or a temporary file) on enter and, on exit:

* after a clean body, runs the ``precommit`` check it was built with and
  only then completes the upload (or links the file into place);
* after any exception -- including KeyboardInterrupt and a failed
  precommit -- aborts the upload (or removes the temporary file) and lets
  the original error propagate.

``precommit`` is a required constructor argument and the commit runs only
inside ``__exit__``: there is no public ``commit`` to call around it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import boto3
import botocore.config
import botocore.exceptions

from tracker.config import Destination, S3Config
from tracker.errors import UploadFailed

log = logging.getLogger(__name__)

MiB = 1 << 20
MAX_PARTS = 10_000
MAX_PART_BYTES = 5 * 1024 * MiB
# Parts double in size every this many parts, so an object of any size fits
# in S3's 10,000 parts while small objects keep small parts (less memory).
PARTS_PER_SIZE_STEP = 2_000
READ_CHUNK = 4 * MiB

Precommit = Callable[[], None]


class Upload:
    """Base of the commit rule; subclasses supply open/write/commit/abort."""

    def __init__(self, key: str, precommit: Precommit, overwrite: bool) -> None:
        self.key = key
        self._precommit = precommit
        self.overwrite = overwrite

    def __enter__(self) -> "Upload":
        self._open()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None:
            try:
                self._precommit()
                self._commit()
            except BaseException:
                self._abort_quietly()
                raise
            return False
        self._abort_quietly()
        return False  # re-raise the original error

    def _abort_quietly(self) -> None:
        try:
            self._abort()
        except Exception as exc:  # the original error matters more
            log.error("event=abort_failed key=%s error=%s", self.key, exc)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


class Store:
    """Small-object access plus streaming uploads, keys relative to the root."""

    destination: Destination

    def url(self, key: str) -> str:
        raise NotImplementedError

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def read_stream(self, key: str) -> Iterator[bytes]:
        raise NotImplementedError


# --- S3 ---------------------------------------------------------------------


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
        self._parts: dict[int, str] = {}
        self._futures: list[Future] = []
        self._slots = threading.BoundedSemaphore(store.config.upload_concurrency)
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
        body, self._buf = bytes(self._buf), bytearray()
        self._slots.acquire()  # back-pressure: wait for a free upload slot
        assert self._pool is not None
        future = self._pool.submit(self._upload_part, number, body)
        future.add_done_callback(lambda _f: self._slots.release())
        self._futures.append(future)

    def _start_multipart(self) -> None:
        try:
            response = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._full_key, Metadata={"tracker": "1"}
            )
        except Exception as exc:
            raise _s3_error("create multipart upload", self._store.url(self.key), exc) from None
        self._upload_id = response["UploadId"]
        self._pool = ThreadPoolExecutor(self._store.config.upload_concurrency, thread_name_prefix="s3-part")

    def _upload_part(self, number: int, body: bytes) -> None:
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._full_key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts[number] = response["ETag"]

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
            try:
                self._client.put_object(Bucket=self._bucket, Key=self._full_key, Body=bytes(self._buf), **self._conditional())
            except Exception as exc:
                raise _s3_error("put", url, exc) from None
            return
        if self._buf:
            self._send_part()
        self._wait_parts()
        parts = [{"PartNumber": n, "ETag": self._parts[n]} for n in sorted(self._parts)]
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
    def __init__(self, destination: Destination, config: S3Config) -> None:
        self.destination = destination
        self.config = config
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            config=botocore.config.Config(
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=config.upload_concurrency + 4,
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

    def read_stream(self, key: str) -> Iterator[bytes]:
        try:
            response = self.client.get_object(Bucket=self.destination.bucket, Key=self.full_key(key))
            yield from response["Body"].iter_chunks(READ_CHUNK)
        except Exception as exc:
            raise _s3_error("get", self.url(key), exc) from None


# --- file:// -----------------------------------------------------------------


class FileUpload(Upload):
    """Write to a temporary name beside the target; link it into place."""

    def __init__(self, store: "FileStore", key: str, precommit: Precommit, overwrite: bool) -> None:
        super().__init__(key, precommit, overwrite)
        self._final = store.path(key)
        self._tmp = self._final.with_name(f".{self._final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self._file = None

    def _open(self) -> None:
        try:
            self._final.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "xb", buffering=0)
        except OSError as exc:
            raise UploadFailed(f"cannot create {self._tmp}: {exc.strerror}") from None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
        except OSError as exc:
            raise UploadFailed(f"cannot write {self._tmp}: {exc.strerror}") from None

    def _commit(self) -> None:
        assert self._file is not None
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            if self.overwrite:
                os.replace(self._tmp, self._final)
            else:
                # A hard link never replaces: of two racing writers, one wins.
                os.link(self._tmp, self._final)
                os.unlink(self._tmp)
            _fsync_dir(self._final.parent)
        except FileExistsError:
            raise UploadFailed(f"{self._final} already exists; not replaced (use --force)") from None
        except OSError as exc:
            raise UploadFailed(f"cannot commit {self._final}: {exc.strerror}") from None

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(Store):
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.root = Path(destination.prefix)

    def path(self, key: str) -> Path:
        return self.root / key

    def url(self, key: str) -> str:
        return f"file://{self.path(key)}"

    def upload(self, key: str, precommit: Precommit, *, overwrite: bool, size_hint: int = 0) -> Upload:
        return FileUpload(self, key, precommit, overwrite)

    def put(self, key: str, data: bytes) -> None:
        """Small objects, atomically: temp file then rename."""
        with self.upload(key, lambda: None, overwrite=True) as upload:
            upload.write(data)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UploadFailed(f"cannot read {self.path(key)}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def read_stream(self, key: str) -> Iterator[bytes]:
        try:
            with open(self.path(key), "rb") as f:
                while chunk := f.read(READ_CHUNK):
                    yield chunk
        except OSError as exc:
            raise UploadFailed(f"cannot read {self.path(key)}: {exc.strerror}") from None


def open_store(destination: Destination, s3: S3Config) -> Store:
    if destination.scheme == "s3":
        return S3Store(destination, s3)
    return FileStore(destination)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
