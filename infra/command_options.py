"""What the long-running commands (`relay`, `consume`) share: option types and metrics.

The types are argparse `type=` functions: a bad value exits 2 with argparse's usage and
the reason (from `call_command`, a CommandError with the same text).
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from argparse import ArgumentTypeError
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.core.management.base import CommandError
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

logger = logging.getLogger(__name__)


def _parsed(text: str, convert: Callable[[str], float], what: str, ok: Callable, why: str):
    """`convert(text)` if that works and passes `ok`, else argparse's error naming `what`."""
    try:
        value = convert(text)
    except ValueError:
        raise ArgumentTypeError(f"invalid {what}: {text!r}") from None
    if not ok(value):
        raise ArgumentTypeError(f"invalid {what}: {text!r} ({why})")
    return value


def positive_int(text: str) -> int:
    return _parsed(text, int, "positive integer", lambda n: n >= 1, "must be at least 1")


def positive_float(text: str) -> float:
    return _parsed(
        text, float, "positive number", lambda x: math.isfinite(x) and x > 0, "must be more than 0"
    )


def metrics_port(text: str) -> int:
    return _parsed(text, int, "port", lambda n: 0 <= n <= 65535, "0 to 65535; 0 turns metrics off")


def serve_metrics(port: int, host: str, unhealthy: Callable[[], str | None] | None = None) -> None:
    """Serve Prometheus /metrics on host:port (port 0: off), and with `unhealthy` the
    liveness probe /healthz: 200, or 503 with the reason `unhealthy()` returns.

    A port that cannot be bound is fatal: an operator must know that the figures are
    missing. Several processes on one host each need their own port (or 0).
    """
    if not port:
        return
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
        app = _with_health(make_wsgi_app(), unhealthy)
        server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on {host}:{port}: {exc} "
            "(give a free --metrics-port, or 0 to turn metrics off)"
        ) from exc
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics on http://%s:%s/metrics", host, port)


def _with_health(metrics_app: Callable, unhealthy: Callable[[], str | None] | None) -> Callable:
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if unhealthy is None or environ.get("PATH_INFO") != "/healthz":
            return metrics_app(environ, start_response)
        reason = unhealthy()
        status = "200 OK" if reason is None else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{reason or 'ok'}\n".encode()]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:  # no log line per scrape or probe
        pass
