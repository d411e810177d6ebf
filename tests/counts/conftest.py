"""Fixtures of the API tests."""

import uuid

import pytest


@pytest.fixture
def private_cache_keys(settings) -> None:
    """The test reads and fills its own cache entries, never another test's."""
    settings.CACHE_KEY_PREFIX = f"{settings.CACHE_KEY_PREFIX}:{uuid.uuid4().hex[:8]}"
