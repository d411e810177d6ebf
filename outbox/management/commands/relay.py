"""`manage.py relay`: publish the outbox to Kafka (see docs/relay.md)."""

from __future__ import annotations

import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from infra.command_options import metrics_port, positive_float, positive_int
from infra.health import check_for_command
from outbox.metrics import serve_metrics
from outbox.relay import Relay, RelayOptions


class Command(BaseCommand):
    help = (
        "Publish outbox rows to Kafka, at least once and in commit order per count. "
        "Run several for throughput: they share the outbox lanes."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once",
            action="store_true",
            help="drain every free lane, then exit (non-zero if rows were left behind)",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=RelayOptions.batch_size,
            help="rows per claim (default %(default)s)",
        )
        parser.add_argument(
            "--poll-interval",
            type=positive_float,
            default=RelayOptions.poll_interval,
            help="seconds between fallback polls when no NOTIFY arrives (default %(default)g)",
        )
        parser.add_argument(
            "--rebalance-interval",
            type=positive_float,
            default=RelayOptions.rebalance_interval,
            help="seconds between lane-share checks (default %(default)g)",
        )
        parser.add_argument(
            "--report-interval",
            type=positive_float,
            default=RelayOptions.report_interval,
            help="seconds between progress log lines and backlog metrics (default %(default)g)",
        )
        parser.add_argument(
            "--metrics-port",
            type=metrics_port,
            default=settings.RELAY_METRICS_PORT,
            help="Prometheus /metrics port on RELAY_METRICS_HOST (0: off; default %(default)s)",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="exit 0 if PostgreSQL and Kafka answer, 1 if not",
        )

    def handle(self, *args, **options):
        if options["check"]:
            return check_for_command(self, ["database", "kafka"], "relay dependencies are down")
        serve_metrics(options["metrics_port"], settings.RELAY_METRICS_HOST)
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
        if relay.run():
            raise CommandError(f"{relay.left_behind} rows of this relay's lanes are still pending")
