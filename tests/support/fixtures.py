"""Fixtures for tests that start app processes or break private services (a pytest plugin,
registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.kafka_node import KafkaNode
from scripts.service_tools import free_ports
from tests.support.processes import AppProcess, AppProcesses, database_url
from tests.support.servers import KafkaCluster, PrivatePostgres, PrivateRedis, private_kafka_node

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def app_processes(tmp_path: Path) -> Iterator[AppProcesses]:
    processes = AppProcesses(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
def app_stack(pipeline, app_processes, test_database_url) -> Callable[..., Any]:
    """`start(kind, *args, **env)` on the test database and the topics, consumer group and
    cache keys of the `pipeline` fixture (tests/support/pipeline.py)."""
    return app_processes.bound(database_url=test_database_url, **pipeline.env)


@pytest.fixture
def start_relay(app_processes, test_database_url) -> Callable[..., AppProcess]:
    """`start_relay(*args, **env)`: `manage.py relay` on the test database and the topics of
    tests.settings, without a metrics port unless `args` give one."""

    def start(*args: str, **env: str) -> AppProcess:
        argv = ("--metrics-port", "0", *args)
        return app_processes.spawn("relay", *argv, database_url=test_database_url, **env)

    return start


@pytest.fixture(scope="module")
def count_topics() -> None:
    """The two count topics of tests.settings, for tests that publish without a consumer."""
    from counts.events import TOPICS
    from infra.topics import ensure_topics

    ensure_topics(list(TOPICS))


@pytest.fixture
def test_database_url(transactional_db) -> str:
    """The pytest test database, for processes the test starts (needs `transactional_db`)."""
    from django.db import connection

    return database_url(connection.settings_dict)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    (port,) = free_ports(1)
    server = PrivatePostgres(port)
    try:
        yield server.init()
    finally:
        server.destroy()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (port,) = free_ports(1)
    server = PrivateRedis(tmp_path / "redis", port).start()
    yield server
    server.stop()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (port,) = free_ports(1)
    server = PrivateRedis(tmp_path / "redis", port, persistent=True).start()
    yield server
    server.stop()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaNode]:
    node = private_kafka_node(tmp_path / "kafka")
    node.start()
    yield node
    node.stop(hard=True)


@pytest.fixture
def private_broker(private_kafka) -> Iterator[KafkaNode]:
    """`private_kafka` as the test's Kafka (settings and the count topics), for a relay
    the test points at it with KAFKA_BOOTSTRAP_SERVERS: stopping it disturbs no one else."""
    from django.conf import settings
    from django.test import override_settings

    from counts.events import TOPICS
    from infra.topics import ensure_topics

    bootstrap = f"127.0.0.1:{private_kafka.port}"
    client = {**settings.KAFKA_CLIENT_CONFIG, "bootstrap.servers": bootstrap}
    prefix = f"{settings.KAFKA_TOPIC_PREFIX}private."
    with override_settings(KAFKA_CLIENT_CONFIG=client, KAFKA_TOPIC_PREFIX=prefix):
        ensure_topics(list(TOPICS))
        yield private_kafka


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster.build(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()
