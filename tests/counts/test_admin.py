"""The counts admin through its real views: every change goes through the services."""

import pytest
from django.contrib.auth.models import Permission

from counts.models import INT64_MAX, INT64_MIN, Count
from counts.selectors import count_get
from counts.services import count_create
from tests.support.outbox_watch import OutboxWatch, info_event, value_event

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/counts/count/"
ADD = "/admin/counts/count/add/"


def change_url(count: Count) -> str:
    return f"/admin/counts/count/{count.pk}/change/"


@pytest.fixture
def counts() -> dict[str, Count]:
    made = [
        count_create(name="alpha", description="first letter", value=5),
        count_create(name="beta", value=-3),
        count_create(name="gamma", description="rays", value=0),
    ]
    return {count.name: count for count in made}


def state(count: Count) -> tuple:
    fresh = count_get(count_id=count.pk)
    return fresh.name, fresh.description, fresh.value, fresh.version


def listed(response) -> list[str]:
    assert response.status_code == 200
    return [count.name for count in response.context["cl"].result_list]


# --- the list -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["alpha", "beta", "gamma"]),
        ({"q": "RAYS"}, ["gamma"]),
        ({"q": "a"}, ["alpha", "beta", "gamma"]),
        ({"sign": "positive"}, ["alpha"]),
        ({"sign": "negative"}, ["beta"]),
        ({"sign": "zero"}, ["gamma"]),
        ({"o": "-2"}, ["alpha", "gamma", "beta"]),  # by value, descending
        ({"o": "-1"}, ["gamma", "beta", "alpha"]),  # by name, descending
    ],
)
def test_changelist_searches_filters_and_orders(admin_client, counts, params, expected):
    assert listed(admin_client.get(CHANGELIST, params)) == expected


# --- add, change, delete ------------------------------------------------------------------------


def test_add_goes_through_the_service(admin_client):
    watch = OutboxWatch()
    data = {"name": "orders", "description": "placed", "value": "42"}
    response = admin_client.post(ADD, data)
    assert response.status_code == 302
    count = Count.objects.get(name="orders")
    assert state(count) == ("orders", "placed", 42, 1)
    watch.assert_events(
        info_event(count.pk, "created", "orders", 42, 1), value_event(count.pk, 0, 42, 1)
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "alpha", "value": "0"}, "name"),
        ({"name": "", "value": "0"}, "name"),
        ({"name": "x" * 101, "value": "0"}, "name"),
        ({"name": "big", "value": str(INT64_MAX + 1)}, "value"),
        ({"name": "small", "value": str(INT64_MIN - 1)}, "value"),
        ({"name": "float", "value": "1.5"}, "value"),
    ],
)
def test_add_with_bad_input_writes_nothing(admin_client, counts, data, field):
    watch = OutboxWatch()
    response = admin_client.post(ADD, {"description": "", **data})
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert Count.objects.count() == 3
    watch.assert_unchanged()


def test_change_updates_info_through_the_service(admin_client, counts):
    alpha = counts["alpha"]
    watch = OutboxWatch()
    data = {"name": "aleph", "description": "first", "value": "999"}  # value is read-only
    response = admin_client.post(change_url(alpha), data)
    assert response.status_code == 302
    assert state(alpha) == ("aleph", "first", 5, 2)
    watch.assert_events(info_event(alpha.pk, "updated", "aleph", 5, 2))


def test_change_without_a_change_writes_nothing(admin_client, counts):
    alpha = counts["alpha"]
    watch = OutboxWatch()
    response = admin_client.post(
        change_url(alpha), {"name": "alpha", "description": "first letter"}
    )
    assert response.status_code == 302
    assert state(alpha) == ("alpha", "first letter", 5, 1)
    watch.assert_unchanged()


def test_change_to_a_taken_name_writes_nothing(admin_client, counts):
    watch = OutboxWatch()
    response = admin_client.post(change_url(counts["beta"]), {"name": "alpha", "description": ""})
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert state(counts["beta"]) == ("beta", "", -3, 1)
    watch.assert_unchanged()


def test_change_page_shows_the_value_read_only(admin_client, counts):
    response = admin_client.get(change_url(counts["alpha"]))
    assert response.status_code == 200
    assert list(response.context["adminform"].form.fields) == ["name", "description"]


def test_delete_goes_through_the_service(admin_client, counts):
    beta = counts["beta"]
    watch = OutboxWatch()
    response = admin_client.post(f"/admin/counts/count/{beta.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Count.objects.filter(pk=beta.pk).exists()
    watch.assert_events(info_event(beta.pk, "deleted", "beta", -3, 2))


def action(admin_client, name: str, selected: list[Count], **extra):
    data = {"action": name, "_selected_action": [str(count.pk) for count in selected], **extra}
    return admin_client.post(CHANGELIST, data, follow=True)


def notes(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_bulk_delete_goes_through_the_service(admin_client, counts):
    alpha, gamma = counts["alpha"], counts["gamma"]
    watch = OutboxWatch()
    response = action(admin_client, "delete_selected", [gamma, alpha], post="yes")
    assert response.status_code == 200
    assert list(Count.objects.values_list("name", flat=True)) == ["beta"]
    watch.assert_events(
        info_event(alpha.pk, "deleted", "alpha", 5, 2),
        info_event(gamma.pk, "deleted", "gamma", 0, 2),
    )


# --- actions -------------------------------------------------------------------------------


def test_increment_action(admin_client, counts):
    alpha, beta = counts["alpha"], counts["beta"]
    watch = OutboxWatch()
    response = action(admin_client, "increment", [alpha, beta])
    assert notes(response) == ["Changed 2 count(s)."]
    assert (state(alpha)[2:], state(beta)[2:]) == ((6, 2), (-2, 2))
    watch.assert_events(value_event(alpha.pk, 5, 6, 2), value_event(beta.pk, -3, -2, 2))


def test_decrement_action(admin_client, counts):
    gamma = counts["gamma"]
    watch = OutboxWatch()
    action(admin_client, "decrement", [gamma])
    assert state(gamma)[2:] == (-1, 2)
    watch.assert_events(value_event(gamma.pk, 0, -1, 2))


def test_an_overflowing_action_reports_and_skips_that_count_only(admin_client, counts):
    top = count_create(name="top", value=INT64_MAX)
    alpha = counts["alpha"]
    watch = OutboxWatch()
    response = action(admin_client, "increment", [alpha, top])
    assert notes(response) == [
        "top: The result would overflow a 64-bit integer.",
        "Changed 1 count(s).",
    ]
    assert state(top)[2:] == (INT64_MAX, 1)
    watch.assert_events(value_event(alpha.pk, 5, 6, 2))


def test_set_value_asks_on_an_intermediate_page_first(admin_client, counts):
    watch = OutboxWatch()
    response = action(admin_client, "set_value", [counts["alpha"], counts["beta"]])
    assert response.templates[0].name == "admin/counts/count/set_value.html"
    assert list(response.context["counts"]) == [counts["alpha"], counts["beta"]]
    watch.assert_unchanged()


def test_set_value_action_sets_every_selected_count(admin_client, counts):
    alpha, beta, gamma = counts["alpha"], counts["beta"], counts["gamma"]
    watch = OutboxWatch()
    response = action(admin_client, "set_value", [alpha, beta, gamma], apply="1", value="5")
    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert [state(count)[2:] for count in (alpha, beta, gamma)] == [(5, 1), (5, 2), (5, 2)]
    watch.assert_events(value_event(beta.pk, -3, 5, 2), value_event(gamma.pk, 0, 5, 2))


@pytest.mark.parametrize("value", ["", "abc", "2.5", str(INT64_MAX + 1)])
def test_set_value_action_with_a_bad_value_writes_nothing(admin_client, counts, value):
    watch = OutboxWatch()
    response = action(admin_client, "set_value", [counts["alpha"]], apply="1", value=value)
    assert response.templates[0].name == "admin/counts/count/set_value.html"
    assert "value" in response.context["form"].errors
    assert state(counts["alpha"]) == ("alpha", "first letter", 5, 1)
    watch.assert_unchanged()


def test_staff_without_change_permission_cannot_run_value_actions(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_count"))
    client.force_login(viewer)
    count = count_create(name="c", value=1)
    watch = OutboxWatch()
    action(client, "increment", [count])
    assert state(count)[2:] == (1, 1)
    watch.assert_unchanged()
