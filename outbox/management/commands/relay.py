"""`manage.py relay`: publish the outbox to Kafka (see docs/relay.md)."""

from __future__ import annotations

import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from infra.health import check_for_command
from outbox import metrics
from outbox.relay import Relay, RelayOptions


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = (
        "Publish outbox rows to Kafka, at least once and in commit order per count. "
        "Run several for throughput: they share the outbox lanes."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once",
            action="store_true",
            help="Drain every free lane, then exit (non-zero if rows were left behind).",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=RelayOptions.batch_size,
            help=f"Rows per claim (default {RelayOptions.batch_size}).",
        )
        parser.add_argument(
            "--poll-interval",
            type=positive_float,
            default=RelayOptions.poll_interval,
            help="Seconds between fallback polls when no NOTIFY arrives "
            f"(default {RelayOptions.poll_interval:g}).",
        )
        parser.add_argument(
            "--rebalance-interval",
            type=positive_float,
            default=RelayOptions.rebalance_interval,
            help="Seconds between lane-share checks "
            f"(default {RelayOptions.rebalance_interval:g}).",
        )
        parser.add_argument(
            "--report-interval",
            type=positive_float,
            default=RelayOptions.report_interval,
            help="Seconds between progress log lines and backlog metrics "
            f"(default {RelayOptions.report_interval:g}).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.RELAY_METRICS_PORT,
            help="Prometheus /metrics port; 0 disables (default RELAY_METRICS_PORT).",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Exit non-zero unless PostgreSQL and Kafka answer.",
        )

    def handle(self, *args, **options):
        if options["check"]:
            return check_for_command(self, ["database", "kafka"], "relay dependencies are down")
        relay = Relay(
            RelayOptions(
                batch_size=options["batch_size"],
                once=options["once"],
                poll_interval=options["poll_interval"],
                rebalance_interval=options["rebalance_interval"],
                report_interval=options["report_interval"],
            )
        )
        signal.signal(signal.SIGTERM, relay.stop)
        signal.signal(signal.SIGINT, relay.stop)
        metrics.serve(options["metrics_port"], settings.RELAY_METRICS_ADDRESS)
        if relay.run():
            raise CommandError(f"{relay.left_behind} rows of this relay's lanes are still pending")
