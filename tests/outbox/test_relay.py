"""The relay against the real PostgreSQL and Kafka: content, parking, leases, wake-up, --check."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from secrets import token_urlsafe

import psycopg
import pytest
from confluent_kafka.admin import NewTopic
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.urls import reverse

from counts import events, services
from counts.contract import validate as validate_event
from infra.kafka import admin_client
from infra.topics import topic_name
from outbox import relay as relay_module
from outbox.admin import EstimatedCountPaginator
from outbox.leases import LANE_LOCKS, LaneLeases
from outbox.models import OutboxMessage
from outbox.relay import Relay, RelayOptions
from outbox.services import Event, enqueue
from scripts.service_tools import free_ports
from tests.support.processes import RELAY_TIMING, database_url, run_manage
from tests.support.relay import (
    assert_commit_order,
    outbox_in_commit_order,
    pending_count,
    read_back,
    wait_until_serving,
)
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.stack,
    pytest.mark.usefixtures("count_topics"),
]


def run_once(**options) -> int:
    return Relay(RelayOptions(once=True, **options)).run()


def test_events_arrive_with_the_documented_topic_key_value_and_headers():
    count = services.count_create(name="relayed", value=5)
    services.count_increment(count_id=count.id, delta=-2)
    services.count_update_info(count_id=count.id, description="moved by the relay")
    services.count_delete(count_id=count.id)
    rows = outbox_in_commit_order()

    assert run_once() == 0

    assert set(OutboxMessage.objects.values_list("state", flat=True)) == {"published"}
    received = read_back({str(row.event_id) for row in rows})
    assert_commit_order(received, rows)
    by_id = {message.event_id: message for message in received}
    for row in rows:
        message = by_id[str(row.event_id)]
        logical = message.headers["event_type"]
        assert message.topic.endswith(logical) and message.topic == row.topic
        assert message.key == str(count.id)
        validate_event(logical, message.value)
        assert message.headers == {
            "event_id": message.value["event_id"],
            "event_type": logical,
            "count_version": str(message.value["version"]),
            "content_type": "application/json",
        }
    mine = [m for m in received if m.key == str(count.id)]  # the topics hold other tests' too
    actions = [m.value["action"] for m in mine if "action" in m.value]
    assert actions == ["created", "updated", "deleted"]


def _event(key: str, payload: bytes = b"x") -> Event:
    return Event(topic=events.COUNT_VALUE_UPDATED, key=key, value={"blob": payload.decode()})


def test_a_row_kafka_refuses_is_parked_and_holds_back_only_its_own_key(admin_client):
    with transaction.atomic():
        poison, behind, other = enqueue(
            _event("poisoned", b"p" * 2_000_000), _event("poisoned"), _event("healthy")
        )

    # Attempt 1 fails (too large for the producer); --once gives up with a non-zero status,
    # but the healthy key's row in the same batch is published.
    assert run_once(max_attempts=2) == 1
    poison.refresh_from_db(), behind.refresh_from_db(), other.refresh_from_db()
    assert (poison.state, poison.attempts, other.state) == ("pending", 1, "published")
    assert "too large" in poison.last_error.lower()
    assert behind.state == "pending"

    time.sleep(0.6)  # the poisoned key's retry backoff only lives in the relay's memory
    assert run_once(max_attempts=2) == 1
    poison.refresh_from_db()
    assert (poison.state, poison.attempts) == ("parked", 2)

    # Parked: later events of its key wait behind it; nothing else is claimed.
    assert run_once(max_attempts=2) == 1  # one row of its lanes left behind
    behind.refresh_from_db()
    assert behind.state == "pending"

    changelist = reverse("admin:outbox_outboxmessage_changelist")
    page = admin_client.get(changelist, {"state__exact": "parked"})
    assert page.status_code == 200 and b"too large" in page.content.lower()
    admin_client.post(changelist, {"action": "discard", "_selected_action": [poison.id]})
    assert not OutboxMessage.objects.filter(id=poison.id).exists()

    assert run_once() == 0
    behind.refresh_from_db()
    assert behind.state == "published"


@pytest.fixture
def small_message_topic() -> str:
    """A topic whose broker-side limit (1,000 bytes) is far below the producer's own: a
    larger message passes produce() and fails only in Kafka's delivery report."""
    logical = f"small-messages-{uuid.uuid4().hex[:8]}"
    admin = admin_client()
    spec = NewTopic(topic_name(logical), 1, 1, config={"max.message.bytes": "1000"})
    admin.create_topics([spec])[spec.topic].result(30)
    yield logical
    admin.delete_topics([spec.topic])[spec.topic].result(30)


def test_a_row_the_broker_refuses_in_its_delivery_report_is_parked(small_message_topic):
    def event(key: str, size: int) -> Event:  # random, so compression cannot shrink it
        return Event(topic=small_message_topic, key=key, value={"blob": token_urlsafe(size)})

    with transaction.atomic():
        refused, behind, other = enqueue(
            event("refused", 5_000), event("refused", 10), _event("healthy")
        )

    assert run_once(max_attempts=1) == 1

    refused.refresh_from_db(), behind.refresh_from_db(), other.refresh_from_db()
    assert (refused.state, refused.attempts) == ("parked", 1)
    assert "too large" in refused.last_error.lower()
    assert (behind.state, other.state) == ("pending", "published")


def test_a_prefetched_batch_holds_back_the_later_rows_of_a_key_that_failed(monkeypatch):
    """The next batch is claimed while Kafka acknowledges the current one; rows of a key
    that failed in the current batch must still wait behind the failed row."""
    monkeypatch.setattr(relay_module, "_PREFETCH_MIN_ROWS", 1)  # prefetch every batch
    with transaction.atomic():
        (poison,) = enqueue(_event("poisoned", b"p" * 2_000_000))
        behind = enqueue(*(_event("poisoned") for _ in range(3)))  # next in the same lane
        others = enqueue(*(_event(f"key-{n}") for n in range(200)))

    relay = Relay(RelayOptions(batch_size=64, max_attempts=100))  # one row per lane a batch
    serving = threading.Thread(target=relay.run)
    serving.start()
    try:
        published = OutboxMessage.objects.filter(pk__in=[row.pk for row in others])
        wait_for(
            lambda: published.filter(state="published").count() == len(others),
            30,
            "the other keys published",
        )
    finally:
        relay.stop()
        serving.join(30)
    poison.refresh_from_db()
    assert poison.state == "pending" and poison.attempts >= 1
    held_back = OutboxMessage.objects.filter(pk__in=[row.pk for row in behind])
    assert set(held_back.values_list("state", flat=True)) == {"pending"}


def test_admin_retry_gives_a_parked_row_a_new_budget(admin_client):
    with transaction.atomic():
        (row,) = enqueue(_event("retried"))
    OutboxMessage.objects.filter(id=row.id).update(state="parked", attempts=10, last_error="x")
    changelist = reverse("admin:outbox_outboxmessage_changelist")
    admin_client.post(changelist, {"action": "retry", "_selected_action": [row.id]})
    row.refresh_from_db()
    assert (row.state, row.attempts, row.last_error) == ("pending", 0, "")

    assert run_once() == 0
    row.refresh_from_db()
    assert row.state == "published"


def test_outbox_admin_is_read_only_and_actions_need_the_change_permission(client):
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    with transaction.atomic():
        (row,) = enqueue(_event("viewed"))
    OutboxMessage.objects.filter(id=row.id).update(state="parked")
    client.force_login(user)
    changelist = reverse("admin:outbox_outboxmessage_changelist")
    assert client.get(changelist).status_code == 200
    assert client.get(reverse("admin:outbox_outboxmessage_add")).status_code == 403
    client.post(changelist, {"action": "discard", "_selected_action": [row.id]})
    assert OutboxMessage.objects.filter(id=row.id, state="parked").exists()


def _session() -> psycopg.Connection:
    return psycopg.connect(database_url(connection.settings_dict), autocommit=True)


def test_leases_split_lanes_fairly_and_a_closed_sessions_lanes_go_to_the_others():
    first_conn, second_conn, third_conn = _session(), _session(), _session()
    first, second, third = LaneLeases(64), LaneLeases(64), LaneLeases(64)
    try:
        first.join(first_conn)
        first.rebalance(first_conn)
        assert len(first.owned) == 64

        second.join(second_conn)
        third.join(third_conn)
        for _ in range(2):  # over-owners give back first, then the others take
            for leases, conn in [(first, first_conn), (second, second_conn), (third, third_conn)]:
                leases.rebalance(conn)
        shares = sorted(len(leases.owned) for leases in (first, second, third))
        assert shares == [21, 21, 22]
        assert first.owned.isdisjoint(second.owned) and second.owned.isdisjoint(third.owned)

        first_conn.close()  # a dead relay: PostgreSQL drops its locks with the session
        for _ in range(2):
            for leases, conn in [(second, second_conn), (third, third_conn)]:
                leases.rebalance(conn)
        assert sorted(len(leases.owned) for leases in (second, third)) == [32, 32]
        assert second.owned | third.owned == set(range(64))
    finally:
        for conn in (first_conn, second_conn, third_conn):
            conn.close()


def lanes_by_session() -> dict[int, set[int]]:
    """The lane leases held right now, by the PostgreSQL session (backend pid) holding them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, array_agg(objid::int) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s AND objsubid = 2 AND granted AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database()) GROUP BY pid",
            [LANE_LOCKS],
        )
        return {pid: set(lanes) for pid, lanes in cursor.fetchall()}


def lanes_shared_by(relays: int) -> Callable[[], dict[int, set[int]] | None]:
    """A condition: every lane is held, in fair shares by `relays` sessions."""
    lanes = settings.OUTBOX_LANES
    fair = sorted(lanes // relays + (rank < lanes % relays) for rank in range(relays))

    def shared() -> dict[int, set[int]] | None:
        held = lanes_by_session()
        return held if sorted(map(len, held.values())) == fair else None

    return shared


@pytest.mark.slow
def test_the_live_relays_take_over_the_lanes_of_a_relay_that_was_killed(start_relay):
    relays = [start_relay(*RELAY_TIMING) for _ in range(3)]
    before = wait_for(lanes_shared_by(3), 60, "three relays to share the lanes")

    relays[0].kill()  # SIGKILL: its sessions end, and with them its locks

    after = wait_for(lanes_shared_by(2), 30, "the two live relays to take every lane")
    (dead,) = set(before) - set(after)
    assert set(after) < set(before)  # the live relays' own sessions took the lanes over
    orphaned = before[dead]
    for n in range(32):
        services.count_create(name=f"after-{n}")
    rows = OutboxMessage.objects.filter(lane__in=orphaned)
    assert rows.exists()  # 64 rows over 64 lanes: some are in the dead relay's lanes
    wait_for(lambda: not pending_count(), 30, "the live relays to publish every lane")
    assert relays[1].alive and relays[2].alive


def test_a_commit_wakes_an_idle_relay_within_milliseconds_and_metrics_count_it(start_relay):
    (port,) = free_ports(1)
    relay = start_relay("--poll-interval", "30", "--metrics-port", str(port))
    wait_until_serving(relay)
    time.sleep(0.5)  # let it go idle: only a NOTIFY can wake it now
    latencies = []
    for step in range(5):
        started = time.monotonic()
        count = services.count_create(name=f"wake-{step}", value=1)
        wait_for(
            lambda count=count: (
                not OutboxMessage.objects.filter(key=str(count.id), state="pending").exists()
            ),
            timeout=10,
            what="the relay to publish",
            every=0.002,
        )
        latencies.append((time.monotonic() - started) * 1000)
    print(f"commit -> marked published: {[round(ms, 1) for ms in latencies]} ms")
    assert max(latencies) < 1000, latencies  # the fallback poll is 30 s away

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    assert "countstream_relay_published_total 10.0" in metrics  # created + value each
    assert "countstream_relay_lanes_owned 64.0" in metrics
    assert "countstream_relay_delivery_age_seconds_count 10.0" in metrics
    assert relay.terminate() == 0


def test_check_exits_non_zero_when_kafka_or_postgres_is_unreachable(test_database_url):
    def check(**overrides: str) -> subprocess.CompletedProcess:
        return run_manage(test_database_url, "relay", "--check", **overrides)

    healthy = check()
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "database: ok" in healthy.stdout and "kafka: ok" in healthy.stdout
    no_kafka = check(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert no_kafka.returncode != 0
    assert "kafka: DOWN" in no_kafka.stdout and "relay dependencies are down" in no_kafka.stderr
    no_database = check(DATABASE_URL="postgres://nobody:nothing@127.0.0.1:1/nowhere")
    assert no_database.returncode != 0
    assert "database: DOWN" in no_database.stdout


@pytest.mark.parametrize(
    "args", [["--batch-size", "0"], ["--poll-interval", "-1"], ["--batch-size", "many"]]
)
def test_bad_options_are_refused_with_a_message(args):
    with pytest.raises(CommandError, match="invalid positive"):
        call_command("relay", *args)


def test_the_unfiltered_outbox_list_counts_with_the_planner_estimate():
    with transaction.atomic():
        enqueue(*[_event(f"estimated-{n}") for n in range(3)])
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {OutboxMessage._meta.db_table}")
    OutboxMessage.objects.filter(key="estimated-0").delete()

    everything = OutboxMessage.objects.all()
    assert EstimatedCountPaginator(everything, 100).count == 3  # the estimate lags behind
    assert EstimatedCountPaginator(everything.filter(key="estimated-1"), 100).count == 1
