"""The relay's Prometheus metrics and liveness. Backlog figures are table-wide: every relay
reports the same value, so aggregate them with max(), never sum().

The metrics port also answers `/healthz`, the liveness probe: 503 once the relay's lease
session has not answered for longer than PostgreSQL lets it live, or while it has none.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from infra import command_options
from outbox.leases import LEASE_TIMEOUT_S, lease_session_silence

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
    "256 rows, an even sample of at most 256 of a larger batch)",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def lease_unhealthy() -> str | None:
    """Why the relay is not alive, or None: its lease session is gone or silent."""
    silence = lease_session_silence()
    if silence is None:
        return "no lease session"
    if silence > LEASE_TIMEOUT_S:
        return f"lease session silent for {silence:.0f}s"
    return None


def serve_metrics(port: int, host: str) -> None:
    """/metrics and the relay's /healthz on host:port (see infra.command_options)."""
    command_options.serve_metrics(port, host, unhealthy=lease_unhealthy)
