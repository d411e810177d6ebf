"""Shared fixtures: real PostgreSQL, Redis and Kafka, as started by `make services`.

Tests that need Kafka or Redis carry the `stack` marker; `make test-fast` runs the others,
which need PostgreSQL at most.
"""

from __future__ import annotations

import pytest

from outbox import wakeup

# Private services to break and app processes to kill (the reliability tests), and an
# isolated event pipeline per test (the consumer and dashboard tests) and Kafka clients.
pytest_plugins = ["tests.support.fixtures", "tests.support.pipeline"]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, set up only for tests that use it. The relay wake-up
    thread holds a connection to it: close that before the database is dropped."""
    yield
    with django_db_blocker.unblock():
        wakeup.stop_notifier()
