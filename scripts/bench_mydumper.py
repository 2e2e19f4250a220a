"""mydumper for ``scripts/bench.py``: the command line, and compress + upload of its output.

``bench.py`` compares ``tracker dump`` with what an operator would otherwise
run: mydumper (Debian's ``mydumper`` package) with the same number of
threads, chunked by rows so it parallelises one table, writing SQL files to
a local directory, then every file compressed with lz4 and uploaded to the
same S3.  The second step is this module's command line, run by the bench as
its own process so its CPU and peak RSS are measured like tracker's:

    python3 scripts/bench_mydumper.py upload DIR s3://BUCKET/PREFIX --endpoint-url URL [--threads 2]

It streams each file through lz4 (default level) straight into a multipart
upload, no compressed copy on disk, ``--threads`` files at a time, each with
the same part size, parts in flight and parts held in memory as tracker's
defaults (16 MiB, 4, 4 + 2).
It prints one JSON line: files, bytes read, bytes stored, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import boto3
from botocore.config import Config
import lz4.frame
from boto3.s3.transfer import TransferConfig

MYDUMPER = "mydumper"
INSTALL_HINT = "apt-get install -y mydumper"
READ_SIZE = 1 << 20
PART_SIZE = 16 << 20  # tracker's s3.part_size_mb default
PARTS_IN_FLIGHT = 4  # tracker's s3.upload_concurrency default


def mydumper_path() -> str | None:
    """The mydumper executable, or None when it is not installed."""
    return shutil.which(MYDUMPER)


def mydumper_version() -> str:
    """``mydumper --version``'s line, e.g. ``mydumper 0.10.0, built against MySQL 10.11.14``."""
    result = subprocess.run([MYDUMPER, "--version"], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


@dataclass(frozen=True)
class MydumperOptions:
    """What mydumper dumps, from where, as whom, and how it splits the work."""

    host: str
    port: int
    user: str
    password: str
    database: str
    table: str
    threads: int
    rows_per_chunk: int


def write_defaults_file(directory: Path, options: MydumperOptions) -> Path:
    """A client option file holding the credentials, so no password shows in ``ps``."""
    path = directory / "mydumper.cnf"
    path.write_text(f"[client]\nuser={options.user}\npassword={options.password}\n")
    path.chmod(0o600)
    return path


def mydumper_argv(options: MydumperOptions, defaults_file: Path, outputdir: Path) -> list[str]:
    """One table, ``threads`` threads, chunks of ``rows_per_chunk`` rows, over TCP.

    ``--trx-consistency-only`` releases the global read lock as soon as the
    threads' snapshot transactions have started (tracker holds none at all).
    Its schema files are kept, as tracker writes ``schema.sql``.  With
    ``--database``, mydumper 0.10 matches ``--tables-list`` entries against
    bare table names: ``db.table`` there silently dumps no table at all.
    """
    return [
        MYDUMPER,
        f"--defaults-file={defaults_file}",  # must come first, as for the mysql clients
        "--host", options.host,
        "--port", str(options.port),
        "--database", options.database,
        "--tables-list", options.table,
        "--threads", str(options.threads),
        "--rows", str(options.rows_per_chunk),
        "--trx-consistency-only",
        "--outputdir", str(outputdir),
        "--verbose", "2",
    ]


def data_files(outputdir: Path, database: str, table: str) -> list[Path]:
    """mydumper's data files of the table: ``db.table.sql`` or ``db.table.NNNNN.sql`` per chunk."""
    prefix = f"{database}.{table}."
    return sorted(
        p for p in outputdir.iterdir() if p.name.startswith(prefix) and p.suffix == ".sql" and "-schema" not in p.name
    )


# --- compress + upload (the subprocess) --------------------------------------------


class Lz4Reader:
    """A file read through an lz4 frame compressor: ``read(n)`` returns compressed bytes."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._compressor = lz4.frame.LZ4FrameCompressor()  # default level, as tracker's
        self._buffer = bytearray(self._compressor.begin())
        self._eof = False
        self.bytes_in = 0
        self.bytes_out = 0

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = self._file.read(READ_SIZE)
            if chunk:
                self.bytes_in += len(chunk)
                self._buffer += self._compressor.compress(chunk)
            else:
                self._buffer += self._compressor.flush()
                self._eof = True
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = bytes(self._buffer), bytearray()
        else:
            with memoryview(self._buffer) as view:  # one copy, not two
                out = bytes(view[:size])
            del self._buffer[:size]
        self.bytes_out += len(out)
        return out

    def close(self) -> None:
        self._file.close()


def upload_directory(directory: Path, url: str, endpoint_url: str | None, threads: int) -> dict[str, float]:
    """Compress and upload every file of ``directory`` under ``url``, ``threads`` files at a time."""
    if not url.startswith("s3://"):
        raise SystemExit(f"bench_mydumper: error: not an s3:// URL: {url}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    # The same client settings as tracker's (tracker/s3.py): a fair comparison.
    client = boto3.client(
        "s3", endpoint_url=endpoint_url, config=Config(s3={"payload_signing_enabled": False})
    )
    transfer = TransferConfig(
        multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=PARTS_IN_FLIGHT
    )
    # A stream is read ahead into memory, 10 parts by default; hold what
    # tracker holds per unit instead, (parts in flight + 2) parts.
    transfer.max_in_memory_upload_chunks = PARTS_IN_FLIGHT + 2
    # Largest first, so the two threads finish together.
    files = sorted((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.stat().st_size, reverse=True)

    def one(path: Path) -> tuple[int, int]:
        reader = Lz4Reader(path)
        try:
            key = f"{prefix.rstrip('/')}/{path.name}.lz4".lstrip("/")
            client.upload_fileobj(reader, bucket, key, Config=transfer)
        finally:
            reader.close()
        return reader.bytes_in, reader.bytes_out

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        sizes = list(pool.map(one, files))  # re-raises the first failure
    return {
        "files": len(files),
        "bytes_in": sum(s[0] for s in sizes),
        "bytes_out": sum(s[1] for s in sizes),
        "seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compress a directory's files with lz4 and upload them to S3.")
    sub = parser.add_subparsers(dest="command", required=True)
    upload = sub.add_parser("upload", help="compress and upload every file of DIR")
    upload.add_argument("directory", type=Path)
    upload.add_argument("url", help="s3://bucket/prefix")
    upload.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"))
    upload.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    summary = upload_directory(args.directory, args.url, args.endpoint_url, args.threads)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
