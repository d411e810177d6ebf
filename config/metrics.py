"""Prometheus metrics of the web process, served at /metrics.

Request counts and latency per URL pattern (the route, not the raw path, keeps the label
set small), and the outbox backlog read from the database at scrape time, so an alert on
the backlog works even when no relay runs to report it. The relay and the consumer serve
their own figures on their own ports (RELAY_METRICS_PORT, CONSUMER_METRICS_PORT).

/metrics answers loopback clients, or anyone sending `Authorization: Bearer $METRICS_TOKEN`.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from config.wsgi_pool import REQUESTS_SHED
from outbox.selectors import outbox_backlog

logger = logging.getLogger(__name__)

# Web's own registry: modules of the relay or consumer imported here must not show up as
# zeros beside the web's figures.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

REQUESTS = Counter(
    "countstream_http_requests",
    "HTTP requests answered, by method, URL pattern and status code",
    ["method", "route", "status"],
    registry=REGISTRY,
)
REGISTRY.register(REQUESTS_SHED)
LATENCY = Histogram(
    "countstream_http_request_duration_seconds",
    "Time from request to response (for a stream: until it starts)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)


class OutboxCollector(Collector):
    """Backlog figures straight from the outbox table, computed when Prometheus scrapes."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "countstream_outbox_query_up", "1 if the outbox figures could be read"
        )
        try:
            backlog = outbox_backlog()
        except DatabaseError as exc:
            logger.warning("metrics: cannot read the outbox: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "countstream_outbox_pending_rows", "Outbox rows not yet published", backlog.pending
        )
        yield GaugeMetricFamily(
            "countstream_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none)",
            backlog.oldest_age_s,
        )
        yield GaugeMetricFamily(
            "countstream_outbox_parked_rows",
            "Outbox rows parked after repeated failures (need an operator)",
            backlog.parked,
        )


REGISTRY.register(OutboxCollector())


def _observe(request: HttpRequest, response: HttpResponse, started: float) -> None:
    match = request.resolver_match
    route = match.route if match else "<unmatched>"
    LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()


class RequestMetricsMiddleware:
    """Counts and times every request; works under ASGI without a thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        _observe(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = await self.get_response(request)
        _observe(request, response, started)
        return response


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())
    return request.META.get("REMOTE_ADDR") in {"127.0.0.1", "::1"}


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse(
            "metrics need the bearer token\n", status=403, content_type="text/plain"
        )
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
