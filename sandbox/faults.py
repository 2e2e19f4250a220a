"""An HTTP proxy in front of the S3 server that injects S3-style failures.

It forwards every request to the real (moto) server unchanged, except the
requests a rule picks, which it answers with ``500 InternalError`` as S3
itself does under trouble.  Tests point tracker's ``s3.endpoint_url`` at the
proxy and check the objects through the real server directly.

A second rule, ``hold``, keeps the requests it picks waiting, unanswered,
until the test calls :meth:`FaultProxy.release_held` -- a stalled store.
With it a test holds a dump between two parts of its upload for as long as
it needs, instead of hoping the table is big enough to still be uploading:
``wait_held`` says when a request is held, ``release_held`` lets the ones
held so far go on (to the real server) while later ones are held again.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>InternalError</Code><Message>injected by the test proxy</Message></Error>"
)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]


Rule = Callable[[Request], bool]


def part_number_at_least(n: int) -> Rule:
    """Fail every UploadPart request with part number >= n."""

    def rule(request: Request) -> bool:
        numbers = request.query.get("partNumber")
        return request.method == "PUT" and bool(numbers) and int(numbers[0]) >= n

    return rule


def first(n: int, rule: Rule) -> Rule:
    """Fail only the first ``n`` requests ``rule`` picks: a fault that passes."""
    seen = [0]

    def limited(request: Request) -> bool:
        if not rule(request):
            return False
        seen[0] += 1
        return seen[0] <= n

    return limited


def puts_of(name: str) -> Rule:
    """Every PUT (single or part) of an object whose key ends with ``name``."""

    def rule(request: Request) -> bool:
        return request.method == "PUT" and request.path.endswith(name)

    return rule


@dataclass
class FaultProxy:
    target_port: int
    rule: Rule = field(default=lambda request: False)
    hold: Rule = field(default=lambda request: False)
    failed: int = 0
    held: int = 0  # requests held so far, released or not
    _server: http.server.ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _batch: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)

    def _wait_if_held(self, request: Request) -> None:
        with self._changed:
            if self._stopping or not self.hold(request):
                return
            self.held += 1
            batch = self._batch
            self._changed.notify_all()
        batch.wait()

    def wait_held(self, count: int = 1, timeout: float = 120) -> bool:
        """Whether ``count`` requests have been held within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self.held >= count, timeout)

    def release_held(self) -> None:
        """Let every request held so far go on; later ones are held again."""
        with self._changed:
            batch, self._batch = self._batch, threading.Event()
        batch.set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("proxy: " + fmt, *args)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True))
                proxy._wait_if_held(request)
                if proxy.rule(request):
                    proxy.failed += 1
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(ERROR_BODY)))
                    self.end_headers()
                    self.wfile.write(ERROR_BODY)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                head = self.command == "HEAD"  # keeps the object's own length
                skip = {"connection", "transfer-encoding", "date", "server"} | (set() if head else {"content-length"})
                for name, value in response.getheaders():
                    if name.lower() not in skip:
                        self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:  # nothing is held any more: no handler thread waits forever
            self._stopping = True
            self._batch.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
