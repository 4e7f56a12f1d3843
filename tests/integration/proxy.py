"""A tiny TCP proxy in the test process, to cut a worker process off from PostgreSQL and bring it
back: ``cut()`` drops every connection through it and refuses new ones (as a network partition
that resets connections would), ``restore()`` lets them through again. ``drop_answer(markers)``
drops the one connection whose next answer from the server holds all of ``markers``, without
passing that answer on: the statement ran (and committed), the client never hears of it, as when
a server crash-restarts or a link drops right after a commit.

Two faults that reset nothing: ``stall()`` stops forwarding in both directions, connections
kept (a link that loses every packet for a while; what was sent arrives after ``restore()``);
``half_open()`` closes the server's side of every connection but keeps the client's side open,
swallowing whatever it sends and never answering, even after ``restore()`` (a peer gone without
a word, a NAT entry expired): the client learns of it only by a timeout of its own. New
connections during either are accepted and get the same treatment."""

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
        self._flowing = threading.Event()
        self._flowing.set()
        self._half_open = False
        self._dead: set[socket.socket] = set()  # client sides left half open
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

    def stall(self) -> None:
        self._flowing.clear()

    def half_open(self) -> None:
        with self._lock:
            self._half_open = True
            upstreams = [sock for sock in self._sockets if sock.getpeername() == self.target]
            self._dead.update(sock for sock in self._sockets if sock not in upstreams)
        for sock in upstreams:
            _close(sock)

    def restore(self) -> None:
        """Forward again (what a stall held back goes on its way); half-open client sides stay
        dead."""
        with self._lock:
            self._cut = False
            self._half_open = False
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.cut()
        with self._lock:
            dead, self._dead = self._dead, set()
        for sock in dead:
            _close(sock)
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
                if self._half_open:
                    self._dead.add(client)
            if refuse:
                self.refused += 1
                _close(client)
                continue
            if client in self._dead:
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
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
                self._flowing.wait()
                if source in self._dead:
                    return self._swallow(source)
                if sink in self._dead:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
                keep = {source, sink} & self._dead
            for sock in {source, sink} - keep:
                _close(sock)

    def _swallow(self, client: socket.socket) -> None:
        """A half-open client side: read and drop what it sends, until it gives up."""
        with contextlib.suppress(OSError):
            while client.recv(65536):
                pass
        with self._lock:
            self._dead.discard(client)
        _close(client)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
    with contextlib.suppress(OSError):
        sock.close()
