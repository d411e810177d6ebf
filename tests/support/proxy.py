"""A loopback TCP proxy a test can cut: one process loses a shared server, no one else does.

`cut()` closes the listening socket (new connections are refused) and every open
connection through it; `restore()` listens again on the same port.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from scripts.service_tools import free_ports


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        (self.port,) = free_ports(1)
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> TcpProxy:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = [self._listener, *self._open], set()
            self._listener = None
        sockets = [sock for sock in sockets if sock is not None]
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        with suppress(OSError):  # the listener was closed by cut()
            while True:
                client, _ = listener.accept()
                try:
                    upstream = socket.create_connection(self.target)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._open |= {client, upstream}
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            with suppress(OSError, ValueError):
                while data := _read_any(selector):
                    sock, chunk = data
                    peers[sock].sendall(chunk)
        for sock in peers:
            sock.close()


def _read_any(selector: selectors.BaseSelector) -> tuple[socket.socket, bytes] | None:
    """The next bytes from either side; None once one side closed."""
    key, _ = selector.select()[0]
    chunk = key.fileobj.recv(65536)
    return (key.fileobj, chunk) if chunk else None


@contextmanager
def tcp_proxy(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy((host, port)).restore()
    try:
        yield proxy
    finally:
        proxy.cut()
