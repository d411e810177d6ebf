"""Fuzz the REST API from its own OpenAPI schema: valid and invalid requests alike.

Every response must be below 500; every rejected request a 4xx with a message that wrote
nothing to the outbox. Bounded (a few dozen examples per operation, ~10 s in all) and
derandomized, so it checks the same examples on every run and never fails by chance.
tests/counts/test_api_contract.py runs every check of schemathesis against a live server.
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from counts.models import Count
from counts.services import count_create
from outbox.models import OutboxMessage

EXAMPLES_PER_OPERATION = 40
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
# Writes must refuse every request that breaks the schema. Reads are left django-filter's
# leniency on query strings ("value_min=0.0" is 0): they change nothing, and the
# parameters that could mislead (limit/offset, an empty value_min, value_max or ordering)
# are strict; tests/counts/test_api_contract.py holds the live API to the whole schema.
WRITE_CHECKS = {method: [negative_data_rejection] for method in ("POST", "PATCH", "DELETE")}


schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
schema.config.generation.update(modes=["positive", "negative"])


@pytest.fixture(autouse=True)
def requests_share_the_test_transaction():
    """As in Django's test client: a request's end must not close the test's connection."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(db) -> str:
    user = get_user_model().objects.create_user("fuzzer", password="pw")
    return Token.objects.create(user=user).key


@pytest.fixture
def existing(db) -> Count:
    return count_create(name="fuzzed", value=1)


def aim_at(case, existing: Count) -> None:
    """Send every other well-formed id to a real count, so updates get past the 404."""
    count_id = (case.path_parameters or {}).get("count_id")
    try:
        if count_id is not None and uuid.UUID(str(count_id)).int % 2 == 0:
            case.path_parameters["count_id"] = str(existing.pk)
    except ValueError:
        pass  # a malformed id stays malformed: the API must answer it with a 404


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,  # the same examples every run: a failure here is never flaky
)
def test_the_api_rejects_bad_input_cleanly_and_writes_nothing(case, token, existing):
    aim_at(case, existing)
    outbox_before = OutboxMessage.objects.count()

    response = case.call(headers={"Authorization": f"Token {token}"})

    case.validate_response(response, checks=CHECKS + WRITE_CHECKS.get(case.method, []))
    if 400 <= response.status_code < 500:
        assert response.json(), "a 4xx must say what was wrong"
        assert OutboxMessage.objects.count() == outbox_before, "a rejected request wrote"
