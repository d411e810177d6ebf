"""A relay whose PostgreSQL connection hangs (issue 15, item 4): its peer must own every
lane within seconds, and its liveness probe must fail.

The hang is a TCP proxy on loopback that freezes: its sockets stay open and their kernel
still acknowledges everything, but nothing is forwarded either way, as with a machine
that stopped or a network that drops packets without resetting anything."""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.db import connection

from scripts.service_tools import free_ports
from tests.support.processes import RELAY_TIMING, database_url
from tests.support.relay import wait_until_serving
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.stack,
    pytest.mark.usefixtures("count_topics"),
]


class FreezingProxy:
    """Forwards loopback TCP connections to `target` until `freeze()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        while not self.closed.is_set():
            if self.frozen.is_set():  # read nothing, forward nothing, close nothing
                time.sleep(0.05)
                continue
            if not select.select([source], [], [], 0.05)[0]:
                continue
            try:
                data = source.recv(65536)
                if not data:
                    return
                sink.sendall(data)
            except OSError:
                return


def _health(port: int) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_relay_behind_a_frozen_connection_loses_its_lanes_within_seconds(start_relay):
    settings = connection.settings_dict
    proxy = FreezingProxy((settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432)))
    proxied = database_url({**settings, "HOST": "127.0.0.1", "PORT": proxy.port})
    (metrics_port,) = free_ports(1)
    try:
        frozen = start_relay(
            *RELAY_TIMING, "--metrics-port", str(metrics_port), DATABASE_URL=proxied
        )
        wait_until_serving(frozen)
        peer = start_relay(*RELAY_TIMING)
        wait_until_serving(peer)
        wait_for(lambda: "(2 relays" in peer.log(), 15, "the relays to share the lanes")
        assert _health(metrics_port) == 200

        seen = len(peer.log())
        proxy.freeze()
        frozen_at = time.monotonic()
        wait_for(lambda: "lanes 64/64" in peer.log()[seen:], 15, "the peer to own every lane")
        print(f"peer owns every lane {time.monotonic() - frozen_at:.1f}s after the freeze")
        wait_for(lambda: _health(metrics_port) == 503, 15, "the frozen relay's probe to fail")
        assert peer.terminate() == 0
    finally:
        proxy.close()
