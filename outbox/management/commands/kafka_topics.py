from django.core.management.base import BaseCommand, CommandError

from counts.events import TOPICS
from outbox.kafka import ensure_topics


class Command(BaseCommand):
    help = "Manage countstream's Kafka topics. `ensure` creates the missing ones."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["ensure"])

    def handle(self, *args, action: str, **options):
        try:
            result = ensure_topics(list(TOPICS))
        except Exception as exc:
            raise CommandError(f"could not ensure Kafka topics: {exc}") from exc
        for name, state in result.items():
            self.stdout.write(f"{name}: {state}")
