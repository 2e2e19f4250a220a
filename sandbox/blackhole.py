"""A TCP proxy that can go silent: a peer that stops answering without closing.

Until :meth:`Blackhole.go_dark` it forwards bytes both ways between each
client and the target.  From then on it still accepts connections and reads
whatever clients send, but forwards nothing, answers nothing and closes
nothing -- what a client sees when a network path or a host dies without a
reset.  Only the client's own timeouts can end its waits; that is what tests
point it at.  Works for any TCP protocol (MySQL, HTTP).
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CHUNK = 65536


@dataclass
class Blackhole:
    target_port: int
    target_host: str = "127.0.0.1"
    _dark: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _listener: socket.socket | None = field(default=None, init=False, repr=False)
    _sockets: list[socket.socket] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    swallowed: int = 0  # bytes read and dropped since going dark

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    def start(self) -> "Blackhole":
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, name="blackhole-accept", daemon=True).start()
        return self

    def go_dark(self) -> None:
        """From now on: read and drop everything, in both directions; never close."""
        self._dark.set()
        log.info("blackhole on port %d is dark", self.port)

    def stop(self) -> None:
        """Close every socket (clients finally see the connection end)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in [*sockets, *([listener] if listener else [])]:
            try:
                sock.close()
            except OSError:
                pass

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # stopped
            self._track(client)
            upstream = None
            if not self._dark.is_set():
                try:
                    upstream = socket.create_connection((self.target_host, self.target_port), timeout=10)
                    upstream.settimeout(None)
                    self._track(upstream)
                except OSError as exc:
                    log.warning("blackhole: cannot reach the target: %s", exc)
            self._pump_thread(client, upstream)
            if upstream is not None:
                self._pump_thread(upstream, client)

    def _pump_thread(self, source: socket.socket, sink: socket.socket | None) -> None:
        threading.Thread(target=self._pump, args=(source, sink), name="blackhole-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket | None) -> None:
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                return
            if not data:
                # The peer closed.  Forward the close only while forwarding:
                # once dark, nothing reaches the other side, not even an end.
                if sink is not None and not self._dark.is_set():
                    try:
                        sink.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            if sink is None or self._dark.is_set():
                self.swallowed += len(data)
                continue
            try:
                sink.sendall(data)
            except OSError:
                return
