"""The API's request path kept lean: tokens remembered briefly, one Redis command per
throttled write, counts serialised without building a ModelSerializer's fields."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from counts.api.authentication import CachedTokenAuthentication
from counts.api.serializers import CountOutput
from counts.services import count_create
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def private_keys_and_memory(settings):
    settings.CACHE_KEY_PREFIX = f"{settings.CACHE_KEY_PREFIX}:{uuid.uuid4().hex[:8]}"
    CachedTokenAuthentication._remembered.clear()


@pytest.fixture
def token() -> Token:
    return Token.objects.create(user=get_user_model().objects.create_user("writer"))


def api(token: Token) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {token.key}")


def increment(client: APIClient, count_id) -> int:
    return client.post(f"/api/counts/{count_id}/increment/", format="json").status_code


def test_a_remembered_token_costs_no_query(token):
    count = count_create(name="c")
    client = api(token)
    assert increment(client, count.id) == 200
    with CaptureQueriesContext(connection) as queries:
        assert increment(client, count.id) == 200
    statements = [query["sql"] for query in queries.captured_queries]
    assert not [sql for sql in statements if "authtoken" in sql or "auth_user" in sql]
    assert len([sql for sql in statements if "UPDATE counts_count" in sql]) == 1


def test_a_deleted_token_stops_working_within_the_cache_time(settings, token):
    settings.API_TOKEN_CACHE_SECONDS = 0.3
    count = count_create(name="c")
    client = api(token)
    assert increment(client, count.id) == 200
    token.delete()
    assert increment(client, count.id) == 200  # remembered: the documented price
    wait_for(lambda: increment(client, count.id) == 401, 10, "the token to be forgotten")


def test_without_a_cache_time_every_request_looks_its_token_up(settings, token):
    settings.API_TOKEN_CACHE_SECONDS = 0
    count = count_create(name="c")
    client = api(token)
    assert increment(client, count.id) == 200
    token.delete()
    assert increment(client, count.id) == 401


def test_an_invalid_token_is_never_remembered(token):
    count = count_create(name="c")
    key = token.key
    token.delete()
    assert increment(APIClient(HTTP_AUTHORIZATION=f"Token {key}"), count.id) == 401
    assert key not in CachedTokenAuthentication._remembered


@pytest.mark.stack  # the write throttle counts in Redis
def test_a_throttled_write_says_when_to_retry(settings, token):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"writes": "1/hour"},
    }
    count = count_create(name="c")
    client = api(token)
    assert increment(client, count.id) == 200
    refused = client.post(f"/api/counts/{count.id}/increment/", format="json")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600


def test_count_output_is_what_the_model_serializer_would_give():
    count = count_create(name="c", description="d", value=-5)
    output = CountOutput(count)
    assert output.data == serializers.ModelSerializer.to_representation(output, count)
