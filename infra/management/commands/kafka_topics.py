"""`manage.py kafka_topics ensure|describe`: countstream's topics, as settings want them."""

from __future__ import annotations

import json
from dataclasses import asdict

from confluent_kafka import KafkaException
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from infra.topics import (
    TopicState,
    describe_topics,
    ensure_topic_layout,
    managed_topics,
    topic_name,
)


class Command(BaseCommand):
    help = (
        "ensure: create missing topics and report any that differ from settings. "
        "describe: partitions, leaders, configs, end offsets and consumer group lag."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["ensure", "describe"])
        parser.add_argument(
            "--increase-partitions",
            action="store_true",
            help="ensure: add partitions up to KAFKA_TOPIC_PARTITIONS. Keys then hash to "
            "other partitions: order per count holds only among events written afterwards.",
        )
        parser.add_argument(
            "--alter-configs",
            action="store_true",
            help="ensure: set retention, cleanup policy and min ISR to the settings' values.",
        )
        parser.add_argument("--json", action="store_true", help="describe: print JSON.")
        parser.add_argument("--timeout", type=float, default=30, help="seconds per request")

    def handle(self, *args, action: str, **options):
        try:
            if action == "ensure":
                self.ensure(options)
            else:
                self.describe(options)
        except KafkaException as exc:
            raise CommandError(f"Kafka at {settings.KAFKA_BOOTSTRAP_SERVERS}: {exc}") from exc

    def ensure(self, options: dict) -> None:
        if options["increase_partitions"]:
            self.stderr.write(
                "warning: adding partitions moves keys to new partitions; events of one count "
                "written before and after may be read out of order. Stop the relay first."
            )
        report = ensure_topic_layout(
            managed_topics(),
            increase_partitions=options["increase_partitions"],
            alter_configs=options["alter_configs"],
            timeout=options["timeout"],
        )
        for name, state in report.states.items():
            self.stdout.write(f"{name}: {state}")
        for change in report.changed:
            self.stdout.write(f"changed {change}")
        if report.drift:
            for item in report.drift:
                self.stderr.write(f"differs {item}")
            raise CommandError(f"{len(report.drift)} topic setting(s) differ from settings")

    def describe(self, options: dict) -> None:
        names = [topic_name(name) for name in managed_topics()]
        states = describe_topics(names, timeout=options["timeout"])
        if options["json"]:
            self.stdout.write(json.dumps([asdict(state) for state in states], indent=2))
        else:
            for state in states:
                self.write_topic(state)
        if not all(state.exists for state in states):
            raise CommandError("some topics are missing: run `manage.py kafka_topics ensure`")

    def write_topic(self, state: TopicState) -> None:
        if not state.exists:
            self.stdout.write(f"{state.name}: MISSING")
            return
        configs = " ".join(f"{key}={value}" for key, value in state.configs.items())
        self.stdout.write(f"{state.name}: {len(state.partitions)} partition(s)  {configs}")
        for part in state.partitions:
            self.stdout.write(
                f"  partition {part.partition}: leader {part.leader} replicas {part.replicas} "
                f"isr {part.isr} end offset {part.end_offset}"
            )
        groups = sorted({lag.group for lag in state.lags})
        for group in groups:
            lags = [lag for lag in state.lags if lag.group == group]
            detail = ", ".join(f"p{lag.partition}={lag.lag}" for lag in lags)
            total = sum(lag.lag for lag in lags)
            self.stdout.write(f"  group {group}: lag {total} ({detail})")
