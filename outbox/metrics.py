"""The relay's Prometheus metrics. Backlog figures are table-wide: every relay reports the
same value, so aggregate them with max(), never sum()."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter("countstream_relay_published", "Outbox rows acknowledged by Kafka")
PUBLISH_ERRORS = Counter(
    "countstream_relay_publish_errors",
    "Failed deliveries; transient ones are retried, permanent ones count toward parking",
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
