from django.apps import AppConfig


class InfraConfig(AppConfig):
    """Shared infrastructure: Kafka clients and topics, Redis keys, health checks."""

    name = "infra"
    verbose_name = "Infrastructure"

    def ready(self) -> None:
        from infra import database  # noqa: F401  (registers its system check)
