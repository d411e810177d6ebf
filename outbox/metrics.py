"""The relay's Prometheus metrics and liveness. Backlog figures are table-wide: every relay
reports the same value, so aggregate them with max(), never sum().

The same port answers `/healthz` (the liveness probe): 200 while the relay's lease session
answers, 503 once it has been silent for longer than PostgreSQL lets it live (or is gone).
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from outbox.leases import LEASE_TIMEOUT_S, lease_session_silence

logger = logging.getLogger(__name__)

PUBLISHED = Counter("countstream_relay_published", "Outbox rows acknowledged by Kafka")
PUBLISH_ERRORS = Counter(
    "countstream_relay_publish_errors",
    "Failed deliveries by kind: transient, permanent (refused: counts toward parking), "
    "denied or fatal",
    ["kind"],
)
PARKED = Counter("countstream_relay_parked", "Rows parked after too many failed attempts")
BACKLOG = Gauge("countstream_relay_backlog", "Pending outbox rows (whole table)")
OLDEST_AGE = Gauge(
    "countstream_relay_oldest_pending_age_seconds", "Age of the oldest pending row, 0 if none"
)
PARKED_ROWS = Gauge("countstream_relay_parked_rows", "Parked outbox rows (whole table)")
LANES_OWNED = Gauge("countstream_relay_lanes_owned", "Outbox lanes this relay holds")
RELAYS = Gauge("countstream_relay_relays", "Relay processes alive, as this relay sees them")
DELIVERY_AGE = Histogram(
    "countstream_relay_delivery_age_seconds",
    "From the outbox row's creation to Kafka's acknowledgement (every row of batches up to "
    "256 rows, an even sample of 256 of a larger batch)",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def _health(environ: dict, start_response) -> list[bytes]:
    silence = lease_session_silence()
    if silence is not None and silence <= LEASE_TIMEOUT_S:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    why = "no lease session" if silence is None else f"lease session silent for {silence:.0f}s"
    return [why.encode() + b"\n"]


def _app(metrics_app):
    def app(environ: dict, start_response) -> list[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            return _health(environ, start_response)
        return metrics_app(environ, start_response)

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no line per scrape or probe
        pass


def serve(port: int, address: str) -> None:
    """Expose /metrics and /healthz on `port` (0 disables). A busy port is logged, not
    fatal: the relay's job is publishing, and a second relay on one host must not die for
    its metrics."""
    if not port:
        return
    try:
        server = make_server(
            address, port, _app(make_wsgi_app()), ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        logger.error("relay metrics disabled: cannot listen on %s:%s: %s", address, port, exc)
    else:
        threading.Thread(target=server.serve_forever, daemon=True, name="relay-metrics").start()
        logger.info("relay metrics on http://%s:%s/metrics, liveness on /healthz", address, port)
