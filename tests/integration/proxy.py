"""A tiny TCP proxy in the test process, to cut a worker process off from PostgreSQL and bring it
back: ``cut()`` drops every connection through it and refuses new ones (as a network partition
that resets connections would), ``restore()`` lets them through again. ``drop_answer(markers)``
drops the one connection whose next answer from the server holds all of ``markers``, without
passing that answer on: the statement ran (and committed), the client never hears of it, as when
a server crash-restarts or a link drops right after a commit."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import psycopg


class TcpProxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to ``target``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.refused = 0  # connections refused while cut
        self._drop_markers: tuple[bytes, ...] = ()
        self.dropped = 0  # answers dropped (see drop_answer)
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def url_for(self, url: str) -> str:
        """``url`` (a PostgreSQL URL) going through this proxy."""
        params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(url)
        params.update(host="127.0.0.1", port=str(self.port))
        return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def drop_answer(self, *markers: bytes) -> None:
        """Drop the connection whose next chunk from the server holds every one of ``markers``
        (once), without passing the chunk on."""
        with self._lock:
            self._drop_markers = markers

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._cut or self._closed
            if refuse:
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._cut:
                    _close(client)
                    _close(upstream)
                    continue
                self._sockets.update((client, upstream))
            for source, sink, answers in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pump,
                    args=(source, sink, answers),
                    name="tcp-proxy-pump",
                    daemon=True,
                ).start()

    def _dropping(self, data: bytes) -> bool:
        with self._lock:
            if not self._drop_markers or not all(m in data for m in self._drop_markers):
                return False
            self._drop_markers = ()
            self.dropped += 1
            return True

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data or (answers and self._dropping(data)):
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
    with contextlib.suppress(OSError):
        sock.close()
