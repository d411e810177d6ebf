"""Who may see the dashboard: staff and holders of its view permission, or all when public."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

pytestmark = pytest.mark.django_db

# A malformed Last-Event-ID is refused with 400 only after the login check: so 400 means
# "let through", without opening an endless stream in the test client.
BAD_LAST_ID = {"Last-Event-ID": "yesterday"}


def logged_in(username: str, *, staff: bool = False, permitted: bool = False) -> Client:
    user = get_user_model().objects.create_user(username, password="pw", is_staff=staff)
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_users_are_sent_to_log_in_and_refused_the_stream(client):
    page = client.get("/")
    assert page.status_code == 302 and page["Location"] == "/login/?next=/"
    stream = client.get("/stream/", headers=BAD_LAST_ID)
    assert stream.status_code == 401


def test_a_user_without_the_permission_is_refused():
    client = logged_in("visitor")
    assert client.get("/").status_code == 403
    assert client.get("/stream/", headers=BAD_LAST_ID).status_code == 403


@pytest.mark.stack  # the page reads the read model in Redis
@pytest.mark.parametrize("who", [{"staff": True}, {"permitted": True}])
def test_staff_and_holders_of_the_permission_see_page_and_stream(who):
    client = logged_in("viewer", **who)
    assert client.get("/").status_code == 200
    assert client.get("/stream/", headers=BAD_LAST_ID).status_code == 400


@pytest.mark.stack  # the page reads the read model in Redis
def test_dashboard_public_opens_page_and_stream_to_everyone(client, settings):
    settings.DASHBOARD_PUBLIC = True
    assert client.get("/").status_code == 200
    assert client.get("/stream/", headers=BAD_LAST_ID).status_code == 400


@pytest.mark.stack  # the page reads the read model in Redis
def test_the_login_form_leads_back_to_the_dashboard(client):
    get_user_model().objects.create_user("ada", password="pw", is_staff=True)
    form = client.get("/login/?next=/")
    assert form.status_code == 200 and b'name="password"' in form.content
    assert client.post("/login/", {"username": "ada", "password": "wrong"}).status_code == 200
    done = client.post("/login/", {"username": "ada", "password": "pw", "next": "/"})
    assert done.status_code == 302 and done["Location"] == "/"
    assert client.get("/").status_code == 200
