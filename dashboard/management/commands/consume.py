"""`manage.py consume`: Kafka count events -> cache invalidation and the live dashboard."""

import logging
import signal
from argparse import ArgumentTypeError
from datetime import datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from dashboard.consuming.loop import BATCH_SIZE, DashboardConsumer
from dashboard.consuming.replay import StartAt
from dashboard.services import reconcile_read_model
from infra.command_options import metrics_port, positive_int, serve_metrics
from infra.health import check_for_command

logger = logging.getLogger(__name__)


def _iso_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise ArgumentTypeError(f"give a time zone, e.g. {text}Z or {text}+00:00")
    return moment


class Command(BaseCommand):
    help = (
        "Consume count events: invalidate caches and refresh the dashboard. "
        "--from-beginning rebuilds the read model from the log; --reset-to re-applies the "
        "events from a time on; both drop every cached entry first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        start = parser.add_mutually_exclusive_group()
        start.add_argument(
            "--from-beginning",
            action="store_true",
            help="rebuild: empty the read model, drop every cached entry and replay every "
            "event still in the topics",
        )
        start.add_argument(
            "--reset-to",
            metavar="ISO_TIME",
            type=_iso_time,
            help="drop every cached entry and replay the events from this time on, "
            "repairing the counts they touch (e.g. 2026-01-31T12:00:00Z)",
        )
        parser.add_argument(
            "--once", action="store_true", help="exit once every assigned partition is caught up"
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="exit 0 if Kafka, Redis and PostgreSQL answer, 1 if not",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=BATCH_SIZE,
            help="messages per batch at most (default %(default)s)",
        )
        parser.add_argument(
            "--metrics-port",
            type=metrics_port,
            default=settings.CONSUMER_METRICS_PORT,
            help="Prometheus /metrics port on CONSUMER_METRICS_HOST (0: off; default %(default)s)",
        )

    def handle(self, *args, **options) -> None:
        if options["check"]:
            return check_for_command(
                self,
                ["kafka", "redis", "database"],
                "the consumer's dependencies are not all reachable",
            )
        serve_metrics(options["metrics_port"], settings.CONSUMER_METRICS_HOST)
        replay = options["from_beginning"] or options["reset_to"] is not None
        consumer = DashboardConsumer(
            batch_size=options["batch_size"],
            start_at=StartAt(options["reset_to"]) if replay else None,
            once=options["once"],
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: consumer.stop())
        self._catch_up_read_model()
        consumer.run()

    def _catch_up_read_model(self) -> None:
        """Start from the database's truth: a Redis that lost its data (or a first start on
        an existing database) shows every count at once, not only those written from now
        on. Version checks keep events already on their way from being undone or re-done."""
        try:
            repairs = reconcile_read_model(grace=timedelta(0))
        except Exception as exc:  # Redis or PostgreSQL down: the periodic reconcile repairs
            logger.warning("consume: could not catch the read model up at start: %s", exc)
            return
        if any(repairs.values()):
            logger.info(
                "consume: read model caught up at start: %s",
                {kind: len(ids) for kind, ids in repairs.items()},
            )
