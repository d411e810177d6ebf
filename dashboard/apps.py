from django.apps import AppConfig
from django.conf import settings


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from infra.topics import register_topics

        # The consumer's dead letters; read from settings when the topics are listed.
        register_topics(dead_letter_topic)


def dead_letter_topic() -> str:
    return settings.KAFKA_DEAD_LETTER_TOPIC
