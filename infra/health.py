"""Health of the parts countstream depends on: PostgreSQL, Redis and Kafka.

Each `check_*` times one probe and says ok or why not. Web's `/readyz` (config/health.py)
and the `--check` option of `manage.py relay` and `consume` use the same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django_redis import get_redis_connection

from infra.kafka import admin_client

KAFKA_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency_ms: float


def _timed(probe: Callable[[], str]) -> CheckResult:
    """Run `probe` (it returns a detail string or raises) and time it."""
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except Exception as exc:  # any failure means "not ready"; the detail says which
        detail, ok = f"{type(exc).__name__}: {exc}".strip(), False
    return CheckResult(ok, detail, round((time.perf_counter() - started) * 1000, 2))


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} {connection.settings_dict['NAME']}"


def _redis() -> str:
    get_redis_connection("default").ping()
    return "ping"


def _kafka(timeout: float) -> str:
    # A fresh client each time: a long-lived one would keep reconnecting while Kafka is away.
    metadata = admin_client().list_topics(timeout=timeout)
    return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"


def check_database() -> CheckResult:
    result = _timed(_database)
    if not result.ok:
        # A connection that failed mid-check must not be handed to the next request.
        connection.close_if_unusable_or_obsolete()
    return result


def check_redis() -> CheckResult:
    return _timed(_redis)


def check_kafka(timeout: float = KAFKA_TIMEOUT_SECONDS) -> CheckResult:
    return _timed(lambda: _kafka(timeout))


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "redis": check_redis,
    "kafka": check_kafka,
}


def check_all(names: list[str] | None = None) -> dict[str, CheckResult]:
    return {name: CHECKS[name]() for name in names or CHECKS}


def check_for_command(command: BaseCommand, names: list[str], failure: str) -> None:
    """A command's `--check`: one line per part, then CommandError(`failure`) if any is down."""
    results = check_all(names)
    for name, result in results.items():
        state = "ok" if result.ok else "DOWN"
        command.stdout.write(f"{name}: {state} ({result.detail}, {result.latency_ms} ms)")
    if not all(result.ok for result in results.values()):
        raise CommandError(failure)
