"""Every count service: the state it leaves and the exact outbox rows it commits with it."""

import io
import threading
import uuid
from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import DataError, connection, transaction

from counts.management.commands.seed_demo import DEMO_COUNTS
from counts.models import INT64_MAX, INT64_MIN, Count
from counts.selectors import count_get
from counts.services import (
    count_create,
    count_delete,
    count_increment,
    count_set,
    count_update_info,
)
from outbox.models import OutboxMessage
from outbox.services import Event, OutboxError, Sql, enqueue, serialize, write_with_event
from tests.support.locks import a_session_waits_for_a_lock
from tests.support.outbox_watch import OutboxWatch, decode, info_event, value_event
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db

MALFORMED_IDS = [str(uuid.uuid4()), "not-a-uuid", 12]


@pytest.fixture
def count() -> Count:
    return count_create(name="visits", description="front page", value=10)


def assert_unchanged(count: Count) -> None:
    fresh = count_get(count_id=count.id)
    assert (fresh.name, fresh.description, fresh.value, fresh.version) == (
        count.name,
        count.description,
        count.value,
        count.version,
    )


def assert_rejected(count: Count, field: str, change: Callable[[], object]) -> None:
    """`change` fails validation on `field` and writes neither to `count` nor to the outbox."""
    watch = OutboxWatch()
    with pytest.raises(ValidationError) as raised:
        change()
    assert field in raised.value.message_dict
    assert_unchanged(count)
    watch.assert_unchanged()


# --- create -----------------------------------------------------------------------------


def test_create_with_zero_emits_created_only():
    watch = OutboxWatch()
    count = count_create(name="  signups  ", description="accounts")
    stored = count_get(count_id=count.id)
    assert (stored.name, stored.description, stored.value, stored.version) == (
        "signups",
        "accounts",
        0,
        1,
    )
    watch.assert_events(info_event(count.id, "created", "signups", 0, 1))


def test_create_with_a_value_also_emits_the_value_from_zero():
    watch = OutboxWatch()
    count = count_create(name="orders", value=-7)
    assert count_get(count_id=count.id).value == -7
    watch.assert_events(
        info_event(count.id, "created", "orders", -7, 1),
        value_event(count.id, 0, -7, 1),
    )


@pytest.mark.parametrize("value", [INT64_MIN, INT64_MAX])
def test_create_accepts_the_64_bit_limits(value):
    assert count_get(count_id=count_create(name="edge", value=value).id).value == value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "description": None}, "description"),
        ({"name": "ok", "value": INT64_MAX + 1}, "value"),
        ({"name": "ok", "value": INT64_MIN - 1}, "value"),
        ({"name": "ok", "value": True}, "value"),
        ({"name": "ok", "value": 1.0}, "value"),
        ({"name": "ok", "value": "1"}, "value"),
    ],
)
def test_create_rejects_bad_input_and_writes_nothing(kwargs, field):
    watch = OutboxWatch()
    with pytest.raises(ValidationError) as raised:
        count_create(**kwargs)
    assert field in raised.value.message_dict
    assert not Count.objects.exists()
    watch.assert_unchanged()


def test_create_rejects_a_taken_name_and_writes_nothing(count):
    watch = OutboxWatch()
    with pytest.raises(ValidationError) as raised:
        count_create(name="visits", value=3)
    assert raised.value.message_dict == {"name": ["A count with this name already exists."]}
    assert Count.objects.count() == 1
    watch.assert_unchanged()


# --- update info --------------------------------------------------------------------------


def test_rename_bumps_the_version_and_emits_updated(count):
    watch = OutboxWatch()
    updated = count_update_info(count_id=count.id, name="page-visits")
    stored = count_get(count_id=count.id)
    assert (stored.name, stored.description, stored.version) == ("page-visits", "front page", 2)
    assert updated.version == 2
    watch.assert_events(info_event(count.id, "updated", "page-visits", 10, 2))


def test_new_description_emits_updated(count):
    watch = OutboxWatch()
    count_update_info(count_id=str(count.id), description="")
    assert count_get(count_id=count.id).description == ""
    watch.assert_events(info_event(count.id, "updated", "visits", 10, 2))


def test_update_info_without_a_change_writes_nothing(count):
    watch = OutboxWatch()
    count_update_info(count_id=count.id, name=" visits ", description="front page")
    count_update_info(count_id=count.id)
    assert_unchanged(count)
    watch.assert_unchanged()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"name": ""}, "name"), ({"name": "y" * 101}, "name"), ({"description": 3}, "description")],
)
def test_update_info_rejects_bad_input_and_writes_nothing(count, kwargs, field):
    assert_rejected(count, field, lambda: count_update_info(count_id=count.id, **kwargs))


def test_rename_to_a_taken_name_writes_nothing(count):
    other = count_create(name="other")
    watch = OutboxWatch()
    with pytest.raises(ValidationError) as raised:
        count_update_info(count_id=other.id, name="visits")
    assert raised.value.message_dict == {"name": ["A count with this name already exists."]}
    assert_unchanged(other)
    watch.assert_unchanged()


# --- delete -------------------------------------------------------------------------------


def test_delete_removes_the_row_and_emits_deleted_with_the_next_version(count):
    count_increment(count_id=count.id, delta=5)
    watch = OutboxWatch()
    count_delete(count_id=str(count.id))
    assert not Count.objects.filter(pk=count.id).exists()
    watch.assert_events(info_event(count.id, "deleted", "visits", 15, 3))


# --- increment ----------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [1, 32, -25])
def test_increment_adds_the_delta_and_emits_old_and_new(count, delta):
    watch = OutboxWatch()
    result = count_increment(count_id=count.id, delta=delta)
    assert (result.value, result.version) == (10 + delta, 2)
    stored = count_get(count_id=count.id)
    assert (stored.value, stored.version, stored.name) == (10 + delta, 2, "visits")
    watch.assert_events(value_event(count.id, 10, 10 + delta, 2))


def test_increment_by_zero_writes_nothing(count):
    watch = OutboxWatch()
    assert count_increment(count_id=count.id, delta=0).value == 10
    assert_unchanged(count)
    watch.assert_unchanged()


@pytest.mark.parametrize(
    ("start", "delta"), [(INT64_MAX, 1), (INT64_MIN, -1), (1, INT64_MAX), (-2, INT64_MIN)]
)
def test_increment_past_64_bits_is_a_validation_error_and_writes_nothing(start, delta):
    count = count_create(name="edge", value=start)
    assert_rejected(count, "delta", lambda: count_increment(count_id=count.id, delta=delta))


@pytest.mark.parametrize("delta", [True, 1.5, "1", None, INT64_MAX + 1])
def test_increment_rejects_a_delta_that_is_no_int64(count, delta):
    assert_rejected(count, "delta", lambda: count_increment(count_id=count.id, delta=delta))


# --- set ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the increment waits on a real row lock
def test_an_increment_that_waited_for_the_row_lock_is_stamped_after_the_change_before_it(count):
    """An event's `timestamp` is taken once its change holds the count's row (docs/events.md):
    an increment queued behind another change of its count carries a later time than that
    change, as its version is later; so does the count's `updated_at`."""

    def increment_behind_the_lock() -> None:
        try:
            count_increment(count_id=count.id, delta=1)
        finally:
            connection.close()  # this thread's own

    with transaction.atomic():
        Count.objects.select_for_update().get(pk=count.id)
        behind = threading.Thread(target=increment_behind_the_lock)
        behind.start()
        table = Count._meta.db_table
        wait_for(lambda: a_session_waits_for_a_lock(table), 10, "the increment to wait")
        count_set(count_id=count.id, value=100)
    behind.join(10)

    rows = OutboxMessage.objects.filter(key=str(count.id)).order_by("id")
    set_event, increment_event = [decode(row) for row in rows][-2:]
    assert (set_event["new_value"], increment_event["new_value"]) == (100, 101)
    assert increment_event["timestamp"] >= set_event["timestamp"]
    assert Count.objects.get(pk=count.id).updated_at.timestamp() * 1000 >= set_event["timestamp"]


def test_set_emits_old_and_new(count):
    watch = OutboxWatch()
    assert count_set(count_id=count.id, value=INT64_MIN).version == 2
    assert count_get(count_id=count.id).value == INT64_MIN
    watch.assert_events(value_event(count.id, 10, INT64_MIN, 2))


def test_set_to_the_current_value_writes_nothing(count):
    watch = OutboxWatch()
    count_set(count_id=count.id, value=10)
    assert_unchanged(count)
    watch.assert_unchanged()


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, False, 2.0, "3"])
def test_set_rejects_a_value_that_is_no_int64(count, value):
    assert_rejected(count, "value", lambda: count_set(count_id=count.id, value=value))


# --- unknown ids, atomicity -----------------------------------------------------------------


@pytest.mark.parametrize("count_id", MALFORMED_IDS)
@pytest.mark.parametrize(
    "change",
    [
        lambda count_id: count_update_info(count_id=count_id, name="x"),
        lambda count_id: count_delete(count_id=count_id),
        lambda count_id: count_increment(count_id=count_id, delta=1),
        lambda count_id: count_set(count_id=count_id, value=1),
        lambda count_id: count_get(count_id=count_id),
    ],
    ids=["update_info", "delete", "increment", "set", "get"],
)
def test_unknown_or_malformed_ids_are_does_not_exist(count, change, count_id):
    watch = OutboxWatch()
    with pytest.raises(Count.DoesNotExist):
        change(count_id)
    assert_unchanged(count)
    watch.assert_unchanged()


def test_a_rolled_back_change_leaves_neither_row_nor_event(count):
    watch = OutboxWatch()
    with pytest.raises(RuntimeError), transaction.atomic():
        count_increment(count_id=count.id, delta=1)
        count_update_info(count_id=count.id, name="renamed")
        raise RuntimeError("the caller's transaction fails later")
    assert_unchanged(count)
    watch.assert_unchanged()


@pytest.mark.django_db(transaction=True)  # no test-wide transaction around this one
def test_enqueue_refuses_to_run_outside_a_transaction():
    event = Event(topic="count-value-updated", key="k", value={})
    with pytest.raises(OutboxError, match="must run inside"):
        enqueue(event)


@pytest.mark.django_db(transaction=True)  # no test-wide transaction around this one
def test_a_change_with_its_event_is_one_statement_committed_on_its_own(count):
    """Outside a transaction, write_with_event's statement commits by itself: both rows, or
    (when it fails) neither."""
    watch = OutboxWatch()
    change = "UPDATE counts_count SET value = value + %(delta)s WHERE id = %(id)s RETURNING *"
    event = Event(topic="count-value-updated", key=str(count.id), value={"v": Sql("value")})

    rows = write_with_event(change, {"delta": 1, "id": count.id}, event)
    with pytest.raises(DataError):
        write_with_event(change, {"delta": INT64_MAX, "id": count.id}, event)

    assert len(rows) == 1
    assert Count.objects.get(pk=count.id).value == 11
    assert [bytes(m.value) for m in watch.new_rows()] == [
        serialize({"event_id": str(event.event_id), "v": 11})
    ]


def test_an_event_built_in_sql_has_the_bytes_python_would_write(count):
    """write_with_event's JSON, part Python and part PostgreSQL, equals serialize()'s."""
    known = {"text": 'quote " and ünïcode', "number": -(2**63), "nothing": None}
    event = Event(
        topic="count-value-updated",
        key=str(count.id),
        value={**known, "from_row": Sql("value"), "name": Sql("name")},
        headers={"kind": "test", "from_row": Sql("version::text")},
    )
    with transaction.atomic():
        write_with_event("SELECT * FROM counts_count WHERE id = %(id)s", {"id": count.id}, event)
    row = OutboxMessage.objects.get(event_id=event.event_id)
    expected = {"event_id": str(event.event_id), **known, "from_row": 10, "name": "visits"}
    assert bytes(row.value) == serialize(expected)
    assert row.headers == {"event_id": str(event.event_id), "kind": "test", "from_row": "1"}


# --- the demo seed --------------------------------------------------------------------------


def test_seed_demo_creates_counts_through_the_services_once(django_user_model):
    watch = OutboxWatch()
    call_command("seed_demo", stdout=io.StringIO())
    seeded = {count.name: count for count in Count.objects.all()}
    expected = []
    for name, _, value in DEMO_COUNTS:
        assert seeded[name].value == value
        expected.append(info_event(seeded[name].id, "created", name, value, 1))
        if value:
            expected.append(value_event(seeded[name].id, 0, value, 1))
    watch.assert_events(*expected)

    again = OutboxWatch()
    call_command("seed_demo", stdout=io.StringIO())
    again.assert_unchanged()
    assert Count.objects.count() == len(DEMO_COUNTS)
    assert django_user_model.objects.filter(is_superuser=True).count() == 1
