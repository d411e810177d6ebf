"""Who may do what: forged credentials write nothing, the admin is for staff, internals stay inside.

The API's own tests cover anonymous writes (401) and the CSRF check on session writes; these
cover the rest of the access rules, each asserting that a refused request wrote nothing.
"""

import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from counts.models import Count
from counts.services import count_create
from outbox.models import OutboxMessage
from tests.support.outbox_watch import OutboxWatch

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/counts/count/"


@pytest.fixture
def count() -> Count:
    return count_create(name="visits", value=10)


def value_of(count: Count) -> int:
    return Count.objects.get(pk=count.pk).value


def make_user(name: str, **flags) -> object:
    return get_user_model().objects.create_user(name, password="pw", **flags)


def token_for(user) -> str:
    return Token.objects.create(user=user).key


@pytest.mark.parametrize(
    "authorization",
    [
        "Token 0000000000000000000000000000000000000000",
        "Token",
        "Token a b",
        "Bearer {token}",
        "Basic d3JpdGVyOnB3",  # writer:pw, a scheme the API does not accept
    ],
    ids=["unknown-token", "no-token", "two-tokens", "wrong-scheme", "basic-auth"],
)
def test_forged_or_malformed_credentials_write_nothing(count, authorization):
    token = token_for(make_user("writer"))
    api = APIClient(HTTP_AUTHORIZATION=authorization.format(token=token))
    watch = OutboxWatch()

    response = api.post(f"/api/counts/{count.pk}/increment/", {"delta": 5}, format="json")

    assert response.status_code == 401
    assert response.json()["detail"]
    assert value_of(count) == 10
    watch.assert_unchanged()


def test_a_deactivated_users_token_stops_working(count):
    user = make_user("leaver")
    api = APIClient(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    user.is_active = False
    user.save()
    watch = OutboxWatch()

    response = api.post("/api/counts/", {"name": "sneaky"}, format="json")

    assert response.status_code == 401
    assert not Count.objects.filter(name="sneaky").exists()
    watch.assert_unchanged()


@pytest.mark.parametrize("params", [{"limit": "abc"}, {"limit": "0"}, {"offset": "-1"}])
def test_list_paging_refuses_what_it_cannot_honour(params):
    """Found by the fuzz: DRF quietly served the first page for `?offset=null`."""
    response = APIClient().get("/api/counts/", params)
    assert response.status_code == 400
    assert set(response.json()) == set(params)


def admin_action(client: Client, count: Count, action: str = "increment", **extra):
    data = {"action": action, "_selected_action": [str(count.pk)], **extra}
    return client.post(CHANGELIST, data)


def test_the_admin_is_closed_to_anonymous_and_non_staff_users(count):
    outsider = Client()
    member = Client()
    member.force_login(make_user("member"))
    watch = OutboxWatch()

    for client in (outsider, member):
        for response in (client.get(CHANGELIST), admin_action(client, count)):
            assert response.status_code == 302
            assert response["Location"].startswith("/admin/login/")

    assert value_of(count) == 10
    watch.assert_unchanged()


def test_staff_need_the_change_permission_to_run_count_actions(count):
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_count"))
    client = Client()
    client.force_login(viewer)
    watch = OutboxWatch()

    assert client.get(CHANGELIST).status_code == 200  # may look ...
    admin_action(client, count)  # ... but the action is not offered, so nothing runs
    delete = client.post(f"/admin/counts/count/{count.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403

    assert value_of(count) == 10
    watch.assert_unchanged()


def test_admin_writes_need_the_csrf_token(count):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    watch = OutboxWatch()

    response = admin_action(client, count)

    assert response.status_code == 403
    assert value_of(count) == 10
    watch.assert_unchanged()


def test_the_outbox_is_staff_only_and_read_only_in_the_admin(count):
    row = OutboxMessage.objects.filter(key=str(count.pk)).first()
    url = f"/admin/outbox/outboxmessage/{row.pk}/change/"
    assert Client().get(url).status_code == 302

    superuser = Client()
    superuser.force_login(make_user("root", is_staff=True, is_superuser=True))
    assert superuser.get(url).status_code == 200
    assert superuser.get("/admin/outbox/outboxmessage/add/").status_code == 403
    superuser.post(url, {"key": "tampered", "state": "published"})
    row.refresh_from_db()
    assert (row.key, row.state) == (str(count.pk), OutboxMessage.State.PENDING)


PUBLIC_PAGES = ["/", "/api/counts/", "/api/schema/", "/api/docs/", "/healthz", "/readyz"]


@pytest.mark.stack  # /readyz checks Kafka and Redis
def test_public_pages_never_show_outbox_payloads_errors_or_secrets(count):
    marker = f"leak-{uuid.uuid4().hex}"
    OutboxMessage.objects.filter(key=str(count.pk)).update(
        last_error=f"broker said no: {marker}", state=OutboxMessage.State.PARKED
    )
    secrets = [marker, settings.SECRET_KEY]

    for page in PUBLIC_PAGES:
        body = Client().get(page).content.decode(errors="replace")
        assert not [secret for secret in secrets if secret in body], page
