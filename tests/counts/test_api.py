"""The REST API: every endpoint, its state and exact outbox rows, and every kind of bad input."""

import asyncio
import json
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config import asgi
from counts.models import INT64_MAX, INT64_MIN, Count
from counts.selectors import count_get
from counts.services import count_create, count_increment, count_update_info
from outbox.relay import Relay, RelayOptions
from tests.support.outbox_watch import OutboxWatch, info_event, value_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_cache_keys")]

LIST = "/api/counts/"


def detail(count_id) -> str:
    return f"/api/counts/{count_id}/"


@pytest.fixture
def user():
    return get_user_model().objects.create_user("writer", password="pw")


@pytest.fixture
def client(user) -> APIClient:
    """Authenticated with a token, as scripts and services would be."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def count() -> Count:
    return count_create(name="visits", description="front page", value=10)


def state(count: Count) -> tuple:
    fresh = count_get(count_id=count.id)
    return fresh.name, fresh.description, fresh.value, fresh.version


# --- reads --------------------------------------------------------------------------------


def test_detail_is_public(anonymous, count):
    response = anonymous.get(detail(count.id))
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("id", "name", "description", "value", "version")} == {
        "id": str(count.id),
        "name": "visits",
        "description": "front page",
        "value": 10,
        "version": 1,
    }
    assert {"created_at", "updated_at"} <= set(body)


@pytest.mark.parametrize("count_id", [uuid.uuid4(), "not-a-uuid", "123"])
def test_detail_of_an_unknown_or_malformed_id_is_a_json_404(anonymous, count_id):
    response = anonymous.get(detail(count_id))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def deliver_events(pipeline) -> None:
    """The path a change's events really take: the relay publishes the outbox rows, the
    dashboard consumer applies them (its read-model batch invalidates the cache)."""
    assert Relay(RelayOptions(once=True)).run() == 0
    pipeline.consume_once()


@pytest.mark.stack
@pytest.mark.django_db(transaction=True)  # the relay reads the outbox on its own connection
def test_detail_is_served_from_the_cache_until_the_consumer_applies_the_event(
    pipeline, anonymous, count
):
    assert anonymous.get(detail(count.id)).json()["value"] == 10
    count_increment(count_id=count.id, delta=5)  # no consumer runs yet to invalidate
    assert anonymous.get(detail(count.id)).json()["value"] == 10
    deliver_events(pipeline)
    assert anonymous.get(detail(count.id)).json()["value"] == 15


def test_uppercase_id_reads_the_same_count(anonymous, count):
    assert anonymous.get(detail(str(count.id).upper())).json()["id"] == str(count.id)


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["name"] for item in response.json()["results"]]


@pytest.fixture
def several():
    for name, description, value in [
        ("alpha", "first letter", 5),
        ("beta", "", -3),
        ("gamma", "rays", 5),
        ("delta", "river mouth", 100),
    ]:
        count_create(name=name, description=description, value=value)


def test_list_is_public_paginated_and_ordered_by_name(anonymous, several):
    response = anonymous.get(LIST, {"limit": 2, "offset": 1})
    body = response.json()
    assert body["count"] == 4
    assert names(response) == ["beta", "delta"]
    assert body["next"] == "http://testserver/api/counts/?limit=2&offset=3"
    assert body["previous"] == "http://testserver/api/counts/?limit=2"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"name": "gamma"}, ["gamma"]),
        ({"value_min": 5}, ["alpha", "delta", "gamma"]),
        ({"value_max": 5, "value_min": 0}, ["alpha", "gamma"]),
        ({"search": "RIV"}, ["delta"]),
        ({"search": "a"}, ["alpha", "beta", "delta", "gamma"]),
        ({"ordering": "-value"}, ["delta", "alpha", "gamma", "beta"]),
        ({"ordering": "value,-name"}, ["beta", "gamma", "alpha", "delta"]),
        ({"value_min": INT64_MAX}, []),
    ],
)
def test_list_filters(anonymous, several, params, expected):
    assert names(anonymous.get(LIST, params)) == expected


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"value_min": "abc"}, "value_min"),
        ({"value_max": str(INT64_MAX + 1)}, "value_max"),
        ({"value_min": ""}, "value_min"),  # present but empty: not an integer, not absent
        ({"value_max": ""}, "value_max"),
        ({"ordering": "description"}, "ordering"),
        ({"ordering": ""}, "ordering"),
        ({"valu_min": "3"}, "valu_min"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
    ],
)
def test_list_rejects_bad_parameters(anonymous, several, params, field):
    response = anonymous.get(LIST, params)
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.stack
@pytest.mark.django_db(transaction=True)  # the relay reads the outbox on its own connection
def test_list_pages_are_cached_until_the_consumer_applies_the_event(pipeline, anonymous, count):
    assert names(anonymous.get(LIST, {"ordering": "name"})) == ["visits"]
    count_update_info(count_id=count.id, name="renamed")
    # Same page, parameters in another order: the same cache entry, still the old page.
    assert names(anonymous.get(f"{LIST}?ordering=name")) == ["visits"]
    deliver_events(pipeline)
    assert names(anonymous.get(LIST, {"ordering": "name"})) == ["renamed"]


def test_reads_fall_back_to_the_database_when_redis_is_down(settings, anonymous, count, caplog):
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        }
    }
    assert anonymous.get(detail(count.id)).json()["value"] == 10
    assert names(anonymous.get(LIST)) == ["visits"]
    assert "cache unavailable, reading from the database" in caplog.text


def test_writes_work_when_redis_is_down(settings, client, count):
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    }
    watch = OutboxWatch()
    assert client.post(f"{detail(count.id)}increment/", {}, format="json").status_code == 200
    watch.assert_events(value_event(count.id, 10, 11, 2))


# --- writes -------------------------------------------------------------------------------


def test_create(client):
    watch = OutboxWatch()
    response = client.post(LIST, {"name": " orders ", "description": "placed"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert response["Location"] == detail(body["id"])
    assert (body["name"], body["description"], body["value"], body["version"]) == (
        "orders",
        "placed",
        0,
        1,
    )
    created = Count.objects.get(pk=body["id"])
    assert state(created) == ("orders", "placed", 0, 1)
    watch.assert_events(info_event(created.id, "created", "orders", 0, 1))


def test_create_with_a_value(client):
    watch = OutboxWatch()
    response = client.post(LIST, {"name": "debt", "value": INT64_MIN}, format="json")
    assert response.status_code == 201
    count_id = response.json()["id"]
    assert count_get(count_id=count_id).value == INT64_MIN
    watch.assert_events(
        info_event(count_id, "created", "debt", INT64_MIN, 1),
        value_event(count_id, 0, INT64_MIN, 1),
    )


def test_patch_renames_and_redescribes(client, count):
    watch = OutboxWatch()
    response = client.patch(detail(count.id), {"name": "hits", "description": ""}, format="json")
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["version"]) == ("hits", 2)
    assert state(count) == ("hits", "", 10, 2)
    watch.assert_events(info_event(count.id, "updated", "hits", 10, 2))


def test_patch_without_a_change_writes_nothing(client, count):
    watch = OutboxWatch()
    assert client.patch(detail(count.id), {}, format="json").status_code == 200
    assert client.patch(detail(count.id), {"name": "visits"}, format="json").status_code == 200
    assert state(count) == ("visits", "front page", 10, 1)
    watch.assert_unchanged()


def test_delete(client, count):
    watch = OutboxWatch()
    response = client.delete(detail(count.id))
    assert response.status_code == 204
    assert not Count.objects.filter(pk=count.id).exists()
    watch.assert_events(info_event(count.id, "deleted", "visits", 10, 2))
    assert client.get(detail(count.id)).status_code == 404


@pytest.mark.parametrize(("body", "delta"), [({}, 1), ({"delta": 1}, 1), ({"delta": -25}, -25)])
def test_increment(client, count, body, delta):
    watch = OutboxWatch()
    response = client.post(f"{detail(count.id)}increment/", body, format="json")
    assert response.status_code == 200
    assert (response.json()["value"], response.json()["version"]) == (10 + delta, 2)
    assert state(count) == ("visits", "front page", 10 + delta, 2)
    watch.assert_events(value_event(count.id, 10, 10 + delta, 2))


def test_increment_without_a_body(client, count):
    watch = OutboxWatch()
    assert client.post(f"{detail(count.id)}increment/").status_code == 200
    watch.assert_events(value_event(count.id, 10, 11, 2))


def test_set(client, count):
    watch = OutboxWatch()
    response = client.post(f"{detail(count.id)}set/", {"value": INT64_MAX}, format="json")
    assert response.status_code == 200
    assert response.json()["value"] == INT64_MAX
    assert state(count) == ("visits", "front page", INT64_MAX, 2)
    watch.assert_events(value_event(count.id, 10, INT64_MAX, 2))


# --- bad input: a 4xx with a field-level message, and nothing written ----------------------

NOT_INT64 = ["1", 1.5, 1.0, True, None, INT64_MAX + 1, INT64_MIN - 1, [1], {"n": 1}]


def bad_create_bodies():
    yield {}, "name"
    for name in ["", "   ", "x" * 101, "\t" + "x" * 100, 5, None, ["a"]]:
        yield {"name": name}, "name"
    yield {"name": "ok", "description": 7}, "description"
    yield {"name": "ok", "description": None}, "description"
    for value in NOT_INT64:
        yield {"name": "ok", "value": value}, "value"
    for field in ["colour", "id", "version"]:
        yield {"name": "ok", field: 1}, field


@pytest.mark.parametrize(("body", "field"), list(bad_create_bodies()))
def test_create_rejects_bad_input(client, count, body, field):
    watch = OutboxWatch()
    response = client.post(LIST, body, format="json")
    assert response.status_code == 400
    assert isinstance(response.json()[field][0], str)
    assert list(Count.objects.values_list("name", flat=True)) == ["visits"]
    watch.assert_unchanged()


def bad_patch_bodies():
    for name in ["", "  ", "y" * 101, 3, None]:
        yield {"name": name}, "name"
    yield {"description": 5}, "description"
    yield {"description": None}, "description"
    for field in ["value", "version", "id", "nmae"]:
        yield {"name": "fine", field: 1}, field


@pytest.mark.parametrize(("body", "field"), list(bad_patch_bodies()))
def test_patch_rejects_bad_input(client, count, body, field):
    watch = OutboxWatch()
    response = client.patch(detail(count.id), body, format="json")
    assert response.status_code == 400
    assert isinstance(response.json()[field][0], str)
    assert state(count) == ("visits", "front page", 10, 1)
    watch.assert_unchanged()


BAD_INCREMENTS = [({"delta": value}, "delta") for value in NOT_INT64] + [
    ({"delta": 1, "step": 1}, "step")
]
BAD_SETS = [({}, "value")] + [({"value": value}, "value") for value in NOT_INT64]


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [("increment", *case) for case in BAD_INCREMENTS] + [("set", *case) for case in BAD_SETS],
)
def test_value_changes_reject_bad_input(client, count, action, body, field):
    watch = OutboxWatch()
    response = client.post(f"{detail(count.id)}{action}/", body, format="json")
    assert response.status_code == 400
    assert isinstance(response.json()[field][0], str)
    assert state(count) == ("visits", "front page", 10, 1)
    watch.assert_unchanged()


@pytest.mark.parametrize(("start", "delta"), [(INT64_MAX, 1), (INT64_MIN, -1), (-1, INT64_MIN)])
def test_increment_past_64_bits_is_a_409(client, start, delta):
    count = count_create(name="edge", value=start)
    watch = OutboxWatch()
    response = client.post(f"{detail(count.id)}increment/", {"delta": delta}, format="json")
    assert response.status_code == 409
    assert response.json() == {"delta": ["The result would overflow a 64-bit integer."]}
    assert count_get(count_id=count.id).value == start
    watch.assert_unchanged()


def test_duplicate_names_are_a_409(client, count):
    other = count_create(name="other")
    watch = OutboxWatch()
    taken = {"name": ["A count with this name already exists."]}
    response = client.post(LIST, {"name": "visits"}, format="json")
    assert (response.status_code, response.json()) == (409, taken)
    response = client.patch(detail(other.id), {"name": "visits"}, format="json")
    assert (response.status_code, response.json()) == (409, taken)
    assert Count.objects.count() == 2
    watch.assert_unchanged()


@pytest.mark.parametrize(
    "raw", ["{not json", "[1, 2]", '"name"', "123", '{"name": "n", "value": 1e3}']
)
def test_bodies_that_are_not_a_json_object_are_refused(client, count, raw):
    watch = OutboxWatch()
    response = client.post(LIST, raw, content_type="application/json")
    assert response.status_code == 400
    assert Count.objects.count() == 1
    watch.assert_unchanged()


def test_only_json_bodies_are_accepted(client, count):
    watch = OutboxWatch()
    response = client.post(LIST, {"name": "form", "value": "3"})  # multipart form data
    assert response.status_code == 415
    watch.assert_unchanged()


WRITES = [
    ("patch", "", {"name": "x"}),
    ("delete", "", None),
    ("post", "increment/", {"delta": 1}),
    ("post", "set/", {"value": 1}),
]


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
@pytest.mark.parametrize("count_id", [uuid.uuid4(), "not-a-uuid"])
def test_writes_to_an_unknown_or_malformed_id_are_a_404(
    client, count, method, suffix, body, count_id
):
    watch = OutboxWatch()
    response = getattr(client, method)(f"{detail(count_id)}{suffix}", body, format="json")
    assert response.status_code == 404
    assert state(count) == ("visits", "front page", 10, 1)
    watch.assert_unchanged()


# --- authentication and throttling ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("post", LIST, {"name": "x"})] + [(m, f"{{}}{s}", b) for m, s, b in WRITES],
)
def test_writes_need_authentication(anonymous, count, method, path, body):
    watch = OutboxWatch()
    url = path.format(detail(count.id)) if "{}" in path else path
    response = getattr(anonymous, method)(url, body, format="json")
    assert response.status_code == 401
    assert state(count) == ("visits", "front page", 10, 1)
    watch.assert_unchanged()


def test_session_authentication_needs_the_csrf_token(user, count):
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(user)
    watch = OutboxWatch()
    url = f"{detail(count.id)}increment/"
    assert session.post(url, {}, format="json").status_code == 403
    watch.assert_unchanged()
    session.get("/admin/login/")  # any page that sets the CSRF cookie
    token = session.cookies["csrftoken"].value
    assert session.post(url, {}, format="json", HTTP_X_CSRFTOKEN=token).status_code == 200
    watch.assert_events(value_event(count.id, 10, 11, 2))


def test_drf_create_token_gives_a_working_token(user, count, capsys):
    call_command("drf_create_token", "writer")
    token = capsys.readouterr().out.split()[2]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.post(f"{detail(count.id)}increment/", format="json").status_code == 200


@pytest.mark.stack
def test_writes_are_throttled_per_user_and_reads_are_not(settings, client, count):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"writes": "2/hour"},
    }
    url = f"{detail(count.id)}increment/"
    assert [client.post(url, format="json").status_code for _ in range(3)] == [200, 200, 429]
    assert state(count)[2] == 12
    assert all(client.get(detail(count.id)).status_code == 200 for _ in range(3))
    other = APIClient()
    other.force_authenticate(get_user_model().objects.create_user("other"))
    assert other.post(url, format="json").status_code == 200


# --- OpenAPI --------------------------------------------------------------------------------


def test_openapi_schema_describes_every_endpoint(anonymous):
    response = anonymous.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert {path: sorted(ops) for path, ops in paths.items()} == {
        "/api/counts/": ["get", "post"],
        "/api/counts/{count_id}/": ["delete", "get", "patch"],
        "/api/counts/{count_id}/increment/": ["post"],
        "/api/counts/{count_id}/set/": ["post"],
    }


def test_swagger_ui_is_served_from_local_assets(anonymous):
    response = anonymous.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "cdn." not in page and "unpkg" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


@pytest.mark.parametrize(
    "path",
    [
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "/static/admin/css/base.css",
    ],
)
def test_the_asgi_app_serves_static_assets(path):
    """uvicorn serves no files: the ASGI app itself must, or the docs and admin break."""

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi.application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as web:
            return await web.get(path)

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert len(response.content) > 1000
