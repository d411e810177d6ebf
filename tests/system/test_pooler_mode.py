"""`DATABASE_SERVER_SIDE_BINDING=false`, for a pooler in transaction mode that cannot keep
prepared statements: the write path (services and API) and a relay pass work with it, the
writes prepare nothing, and the events are byte for byte those of the default mode.

The settings are read at start, so the writes and the relay run in processes of their own
with the variable set; the same writes with it on are the control that shows the probe
of `pg_prepared_statements` sees prepared statements at all.
"""

from __future__ import annotations

import json

import pytest

from counts.contract import validate as validate_event
from outbox.models import OutboxMessage
from tests.support.processes import run_manage
from tests.support.relay import assert_commit_order, outbox_in_commit_order, read_back

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.stack,
    pytest.mark.usefixtures("count_topics"),
]

INT64_MAX = 2**63 - 1

# Services and the API, more than psycopg's prepare threshold (5 runs) of each statement,
# then what Django's connection prepared in its session.
WRITES = f"""
import json
import uuid
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient
from counts import services

count = services.count_create(name="pooled", value=-7)
for _ in range(6):
    services.count_increment(count_id=count.id, delta=2)
services.count_set(count_id=count.id, value={INT64_MAX})
services.count_update_info(count_id=count.id, name="renamed")
services.count_delete(count_id=count.id)

api = APIClient()
api.force_authenticate(get_user_model().objects.get_or_create(username="pooler")[0])
created = api.post("/api/counts/", {{"name": "via-api"}}, format="json",
                   HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
assert created.status_code == 201, created.content
for _ in range(6):
    answer = api.post(f"/api/counts/{{created.json()['id']}}/increment/", {{}}, format="json")
    assert answer.status_code == 200, answer.content
deleted = api.delete(f"/api/counts/{{created.json()['id']}}/")
assert deleted.status_code == 204, deleted.content

with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM pg_prepared_statements")
    prepared = cursor.fetchone()[0]
print(json.dumps({{"prepared": prepared, "options": connection.settings_dict["OPTIONS"]}}))
"""


def run_writes(database_url: str, binding: str) -> dict:
    done = run_manage(database_url, "shell", "-c", WRITES, DATABASE_SERVER_SIDE_BINDING=binding)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_writes_prepare_statements_only_with_server_side_binding(test_database_url):
    bound = run_writes(test_database_url, "true")
    assert bound["options"]["server_side_binding"] is True
    assert bound["prepared"] > 0  # the probe sees them

    unbound = run_writes(test_database_url, "false")
    assert unbound["options"]["server_side_binding"] is False
    assert unbound["options"]["prepare_threshold"] is None
    assert unbound["prepared"] == 0


def test_without_server_side_binding_the_events_and_a_relay_pass_are_the_same(
    test_database_url,
):
    run_writes(test_database_url, "true")
    bound = outbox_in_commit_order()
    run_writes(test_database_url, "false")
    unbound = outbox_in_commit_order()[len(bound) :]

    def content(row: OutboxMessage) -> tuple:
        value = json.loads(bytes(row.value))
        for varying in ("event_id", "count_id", "timestamp"):
            value.pop(varying)
        headers = {k: v for k, v in row.headers.items() if k != "event_id"}
        return row.topic, value, headers

    assert [content(row) for row in unbound] == [content(row) for row in bound]
    for row in unbound:
        value = json.loads(bytes(row.value))
        validate_event(row.topic.rsplit(".", 1)[-1], value)
        assert bytes(row.value) == json.dumps(value, separators=(",", ":")).encode()

    relay = run_manage(
        test_database_url,
        "relay",
        "--once",
        "--metrics-port",
        "0",
        DATABASE_SERVER_SIDE_BINDING="false",
    )
    assert relay.returncode == 0, relay.stderr
    assert not OutboxMessage.objects.exclude(state=OutboxMessage.State.PUBLISHED).exists()
    rows = outbox_in_commit_order()
    figures = assert_commit_order(read_back({str(row.event_id) for row in rows}), rows)
    assert figures["delivered"] == len(rows)
