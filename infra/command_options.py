"""What the long-running commands (`relay`, `consume`) share: option types and metrics.

The types are argparse `type=` functions: a bad value exits 2 with argparse's usage and
the reason (from `call_command`, a CommandError with the same text).
"""

from __future__ import annotations

import logging
import math
from argparse import ArgumentTypeError

from django.core.management.base import CommandError
from prometheus_client import start_http_server

logger = logging.getLogger(__name__)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f"invalid positive integer: {text!r}") from None
    if value < 1:
        raise ArgumentTypeError(f"invalid positive integer: {text!r} (must be at least 1)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"invalid positive number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ArgumentTypeError(f"invalid positive number: {text!r} (must be more than 0)")
    return value


def metrics_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise ArgumentTypeError(f"invalid port: {text!r} (0 to 65535; 0 turns metrics off)")
    return value


def serve_metrics(port: int, host: str) -> None:
    """Serve Prometheus /metrics on host:port (port 0: off).

    A port that cannot be bound is fatal: an operator must know that the figures are
    missing. Several processes on one host each need their own port (or 0).
    """
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on {host}:{port}: {exc} "
            "(give a free --metrics-port, or 0 to turn metrics off)"
        ) from exc
    logger.info("metrics on http://%s:%s/metrics", host, port)
