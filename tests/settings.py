"""Settings for the test suite: the dev settings, isolated from a running dev stack.

Each test run gets a run id (inherited by the relay/consumer subprocesses the tests start)
that prefixes its Kafka topics, consumer group and cache keys; the database is
TEST_DATABASE_NAME (pytest-django creates it), and Redis database 15 holds test data.
"""

import os
import uuid

os.environ.setdefault("COUNTSTREAM_TEST_RUN", uuid.uuid4().hex[:8])
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")

from config.settings import *  # noqa: F403
from config.settings import CACHES

TEST_RUN = os.environ["COUNTSTREAM_TEST_RUN"]
KAFKA_TOPIC_PREFIX = f"test.{TEST_RUN}."
KAFKA_CONSUMER_GROUP = f"test.{TEST_RUN}.dashboard"
CACHE_KEY_PREFIX = f"test:{TEST_RUN}"
CACHES["default"]["KEY_PREFIX"] = CACHE_KEY_PREFIX
CELERY_TASK_DEFAULT_QUEUE = f"test.{TEST_RUN}"
KAFKA_TOPIC_PARTITIONS = 3
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
