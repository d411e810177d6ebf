"""Kafka clients built from Django settings, and the pieces every client shares.

librdkafka settings (`client_config`, and `producer_config` for producers), the admin
client, a quiet librdkafka log, an `error_cb` that tells an outage in a few lines, and the
retry backoff.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient
from django.conf import settings

from infra.logs import RepeatedWarning

# librdkafka's own log, critical lines only: while a broker is away it logs every failed
# reconnect of every connection (dozens a second). Errors reach us through exceptions, or
# through a KafkaErrorLog as the client's error_cb.
QUIET_LOG = {"log_level": 2}


def backoff(failures: int, base: float = 0.2, cap: float = 10.0) -> float:
    """Seconds to wait after the `failures`-th failure in a row: doubling from `base`."""
    return min(cap, base * 2 ** max(0, failures - 1))


def client_config(**overrides) -> dict:
    """librdkafka settings shared by producers, consumers and the admin client."""
    return {**settings.KAFKA_CLIENT_CONFIG, **overrides}


def producer_config(
    required: Mapping[str, object], defaults: Mapping[str, object] | None = None, **callbacks
) -> dict:
    """A producer's librdkafka settings: its `defaults`, then Django's KAFKA_PRODUCER_CONFIG
    (compression, linger), then what it `required` (which Django's may not override)."""
    return client_config(
        **{**(defaults or {}), **settings.KAFKA_PRODUCER_CONFIG, **required}, **callbacks
    )


def admin_client() -> AdminClient:
    """An admin client; its failures are the exceptions of the calls made with it."""
    return AdminClient(client_config(**QUIET_LOG))


class KafkaErrorLog:
    """A librdkafka `error_cb` that tells an outage in a few lines, not one per reconnect.

    Each kind of error is a RepeatedWarning of its own (at once, then at most every `every`
    seconds with a count). Fatal errors are always logged, at ERROR.
    """

    def __init__(self, logger: logging.Logger, prefix: str, every: float = 10.0) -> None:
        self.logger = logger
        self.prefix = prefix
        # error code -> its warning
        self._kinds: defaultdict[int, RepeatedWarning] = defaultdict(
            lambda: RepeatedWarning(logger, every)
        )

    def __call__(self, error: KafkaError) -> None:
        if error.fatal():
            self.logger.error("%s: %s (fatal)", self.prefix, error.str())
            return
        self._kinds[error.code()].warning("%s: %s", self.prefix, error.str())
