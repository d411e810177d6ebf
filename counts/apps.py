from django.apps import AppConfig


class CountsConfig(AppConfig):
    name = "counts"
    verbose_name = "Counts"

    def ready(self) -> None:
        from counts.events import TOPICS
        from infra.topics import register_topics

        register_topics(*TOPICS)
