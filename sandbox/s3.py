"""A real moto S3 server process for tests.

The tracker uploads from a subprocess (the CLI), so an in-process ``mock_aws``
would not see its requests.  ``moto.server`` runs as its own process and
speaks S3 over HTTP, including the multipart rule that every part but the
last must be at least 5 MiB.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from sandbox import _process
from sandbox.mariadb import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"

# Variables that would steer botocore away from the fake credentials above.
UNSET_ENV_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

# The readiness probe talks to 127.0.0.1; an HTTP(S)_PROXY in the environment must not apply.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class MotoServer:
    """``python -m moto.server`` on 127.0.0.1, logging to ``basedir/moto.log``."""

    basedir: Path
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.basedir / "moto.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("moto server has not been started")
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Launch the server and wait until it answers HTTP."""
        if self.is_running():
            raise RuntimeError(f"moto server already running (pid {self.pid})")
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._proc = _process.spawn(argv, self.log_path)
        self._wait_until_ready()
        log.info("moto server ready at %s (pid %d)", self.endpoint_url, self._proc.pid)

    def stop(self, timeout: float = 10) -> None:
        if self._proc is not None:
            _process.terminate(self._proc, timeout)

    def kill(self) -> None:
        if self._proc is not None:
            _process.kill(self._proc)

    def env(self) -> dict[str, str]:
        """The variables to set so a process authenticates against this server.

        Callers must also unset ``UNSET_ENV_VARS`` (``subprocess_env`` does).
        The endpoint is deliberately absent: the tracker must reach moto via
        its own configuration, and an ``AWS_ENDPOINT_URL`` here would hide a
        tracker that ignores it.
        """
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A full environment for ``subprocess.run(env=...)``: ``base`` + ``env()``, minus profiles."""
        merged = dict(os.environ if base is None else base)
        for name in UNSET_ENV_VARS:
            merged.pop(name, None)
        merged.update(self.env())
        return merged

    def client(self) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def delete_bucket(self, name: str) -> None:
        """Empty ``name`` (objects and pending multipart uploads) and delete it.

        moto keeps everything in memory for the whole session, so function-
        scoped buckets are removed rather than left to pile up.
        """
        s3 = self.client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        s3.delete_bucket(Bucket=name)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {self._proc.returncode}; log tail:\n{_process.tail(self.log_path)}"
                )
            if self._answers_http():
                return
            time.sleep(0.1)
        _process.kill(self._proc)
        raise RuntimeError(
            f"moto server not answering after {START_TIMEOUT_S:.0f}s; log tail:\n{_process.tail(self.log_path)}"
        )

    def _answers_http(self) -> bool:
        try:
            with _NO_PROXY_OPENER.open(f"{self.endpoint_url}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP status means the server is serving
        except OSError:
            return False
