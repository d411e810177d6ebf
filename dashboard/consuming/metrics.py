"""Prometheus metrics of the consumer (served by `consume --metrics-port`)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "countstream_consumer_events",
    "Events processed (rate() gives processed/s), by logical topic.",
    ["topic"],
)
DEAD_LETTERS = Counter(
    "countstream_consumer_dead_letters",
    "Messages parked on the dead-letter topic, by reason.",
    ["reason"],
)
DEAD_LETTER_ERRORS = Counter(
    "countstream_consumer_dead_letter_errors",
    "Dead-letter writes Kafka refused; retried, the batch's offsets uncommitted meanwhile.",
)
REDIS_ERRORS = Counter(
    "countstream_consumer_redis_errors",
    "Failed attempts to apply a batch (Redis or the database unreachable); retried.",
)
LAG = Gauge(
    "countstream_consumer_lag",
    "Messages behind the end of each assigned partition.",
    ["topic", "partition"],
)
EVENT_AGE = Histogram(
    "countstream_consumer_event_age_seconds",
    "From the event's commit-side timestamp to the end of its processing (end-to-end age).",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SECONDS = Histogram(
    "countstream_consumer_batch_seconds",
    "Time to apply one batch (parse, read model, invalidation, dead letters).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
