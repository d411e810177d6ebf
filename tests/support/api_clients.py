"""DRF test clients for the API tests."""

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def token_client(username: str) -> APIClient:
    """A new user's API client, authenticated with a token as scripts and services are."""
    user = get_user_model().objects.create_user(username, password="pw")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api
