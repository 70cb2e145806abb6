"""Brute force: wrong passwords in a row lock a user name out of the login form and the token
endpoint alike, right password included, until the cool-off ends or an admin unlocks it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.db.models import F
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture(autouse=True)
def _small_limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT


def _login(client: Client, username: str, password: str):
    return client.post("/accounts/login/", {"username": username, "password": password})


def _token(username: str, password: str):
    return APIClient().post(
        "/api/auth/token/", {"username": username, "password": password}, format="json"
    )


def test_the_login_form_locks_a_user_name_out_after_the_limit():
    reader = UserFactory(roles=["md"])
    client = Client()
    for _ in range(LIMIT - 1):
        answer = _login(client, reader.username, "wrong")
        assert answer.status_code == 200
        assert "didn't match" in answer.content.decode()
    locked = _login(client, reader.username, "wrong")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many failed sign-ins" in page and "try again in 15 minutes" in page
    assert "ask an admin" in page
    # The right password is refused while locked, from another browser too.
    again = _login(Client(), reader.username, PASSWORD)
    assert again.status_code == 429
    assert "_auth_user_id" not in again.client.session
    # Another user, from another address, is not locked.
    other = UserFactory(roles=["md"])
    assert _login(Client(REMOTE_ADDR="10.0.0.2"), other.username, PASSWORD).status_code == 302


def test_guessing_many_user_names_from_one_address_locks_the_address():
    names = [UserFactory(roles=["md"]).username for _ in range(LIMIT + 1)]
    for name in names[:LIMIT]:
        _login(Client(), name, "wrong")
    # A user name never tried, from that address: refused; from elsewhere: fine.
    assert _login(Client(), names[-1], PASSWORD).status_code == 429
    assert _login(Client(REMOTE_ADDR="10.0.0.3"), names[-1], PASSWORD).status_code == 302


def test_behind_a_proxy_the_address_locked_is_the_client_s_not_the_proxy_s(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.9"  # every request reaches the web server from the proxy

    def via_proxy(client_address: str, forged: str = "") -> Client:
        # The proxy appends the address it saw; a client may have written anything before it.
        chain = f"{forged}, {client_address}" if forged else client_address
        return Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=chain)

    names = [UserFactory(roles=["md"]).username for _ in range(LIMIT + 1)]
    for i, name in enumerate(names[:LIMIT]):
        # Each try forges another address in front: only the proxy's entry counts.
        _login(via_proxy("203.0.113.5", forged=f"198.51.100.{i}"), name, "wrong")
    assert _login(via_proxy("203.0.113.5"), names[-1], PASSWORD).status_code == 429
    # Another client behind the same proxy is not locked out with it.
    assert _login(via_proxy("203.0.113.6"), names[-1], PASSWORD).status_code == 302


def test_the_token_endpoint_locks_out_too_and_says_why():
    researcher = UserFactory(roles=["researcher"])
    for _ in range(LIMIT - 1):
        assert _token(researcher.username, "wrong").status_code == 401
    locked = _token(researcher.username, "wrong")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.json()["detail"]
    assert int(locked["Retry-After"]) == 15 * 60
    right = _token(researcher.username, PASSWORD)
    assert right.status_code == 429 and "token" not in right.json()
    # Failures on one route count on the other: the login form is closed as well.
    assert _login(Client(), researcher.username, PASSWORD).status_code == 429


def test_a_right_password_before_the_limit_starts_the_count_again():
    reader = UserFactory(roles=["md"])
    for _ in range(LIMIT - 1):
        _login(Client(), reader.username, "wrong")
    assert _login(Client(), reader.username, PASSWORD).status_code == 302
    for _ in range(LIMIT - 1):
        _login(Client(), reader.username, "wrong")
    assert _login(Client(), reader.username, PASSWORD).status_code == 302


def test_the_lock_ends_after_the_cool_off():
    reader = UserFactory(roles=["md"])
    for _ in range(LIMIT):
        _login(Client(), reader.username, "wrong")
    assert _login(Client(), reader.username, PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))
    assert _login(Client(), reader.username, PASSWORD).status_code == 302


def test_an_admin_unlocks_a_user_in_the_admin_site(admin_client):
    reader = UserFactory(roles=["md"])
    for _ in range(LIMIT):
        _login(Client(), reader.username, "wrong")
    assert _login(Client(), reader.username, PASSWORD).status_code == 429
    listing = admin_client.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and reader.username in listing.content.decode()
    attempt = AccessAttempt.objects.get(username=reader.username)
    done = admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert done.status_code == 302
    assert _login(Client(), reader.username, PASSWORD).status_code == 302


def test_an_admin_unlocks_a_user_from_the_command_line():
    researcher = UserFactory(roles=["researcher"])
    for _ in range(LIMIT):
        _token(researcher.username, "wrong")
    assert _token(researcher.username, PASSWORD).status_code == 429
    call_command("axes_reset_username", researcher.username)
    assert _token(researcher.username, PASSWORD).status_code == 200
