"""What a security review probes besides lock-out, limits and health: redirects, CSP, sessions,
password change, API tokens, scratch folders, and 403s in the log."""

from __future__ import annotations

import io
import logging
import re
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Job
from annotation.services.uploads import import_upload_request, import_upload_run
from tests.conftest import REPO_ROOT
from tests.factories import PASSWORD, DatasetFactory, UserFactory, review_stage

pytestmark = pytest.mark.django_db


# --- redirects ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("back", "lands_on"),
    [
        ("/review/?page=2", "/review/?page=2"),
        ("https://evil.example/phish", "/review/"),
        ("//evil.example/phish", "/review/"),
        ("/\\evil.example/phish", "/review/"),
        ("javascript:alert(1)", "/review/"),
    ],
)
def test_a_refused_undo_goes_back_only_to_a_page_of_this_site(client, back, lands_on):
    stage = review_stage(n_cases=1)
    client.force_login(UserFactory(roles=["md"]))
    # Nothing to undo: refused, and sent back.
    answer = client.post(reverse("review_undo", kwargs={"stage_id": stage.pk}), {"back": back})
    assert answer.status_code == 302 and answer["Location"] == lands_on


def test_a_job_action_goes_back_only_to_a_page_of_this_site(client, broker):
    client.force_login(UserFactory(roles=["admin"]))
    job = Job.objects.create(kind=Job.Kind.IMPORT, params={})
    url = reverse("dashboard_job_action", kwargs={"job_id": job.pk, "action": "cancel"})
    assert client.post(url, {"next": "/dashboard/"})["Location"] == "/dashboard/"
    assert client.post(url, {"next": "https://evil.example/"})["Location"] == (
        f"/dashboard/jobs/{job.pk}/"
    )


# --- Content-Security-Policy ------------------------------------------------------------------
def test_every_page_carries_a_policy_without_inline_script(client):
    client.force_login(UserFactory(roles=["admin"]))
    for url in ("/accounts/login/", "/dashboard/", "/dashboard/upload", "/exports/"):
        policy = client.get(url)["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives["script-src"] == "'self' 'inline-speculation-rules'", url
        assert directives["style-src"] == "'self'", url
        assert "unsafe" not in policy and "frame-ancestors 'none'" in policy


TEMPLATES = sorted((REPO_ROOT / "annotation" / "templates").rglob("*.html"))
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
STYLE_BLOCK = re.compile(r"<style|\sstyle=", re.IGNORECASE)


def test_the_template_check_reads_every_screen():
    # An empty list would pass the check below without reading a single page.
    names = {t.relative_to(REPO_ROOT / "annotation" / "templates").as_posix() for t in TEMPLATES}
    assert {"base.html", "review/nway.html", "review/pairwise.html", "review/draw.html"} <= names


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_templates_hold_no_inline_script_or_style(template):
    text = template.read_text()
    assert not INLINE_SCRIPT.search(text)
    assert not INLINE_HANDLER.search(text)
    assert "javascript:" not in text
    if template.name != "report_standalone.html":  # a downloaded file: its styles travel inside
        assert not STYLE_BLOCK.search(text)


def test_the_api_docs_load_nothing_from_outside(client):
    for url in ("/api/docs/", "/api/docs/redoc/"):
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert not re.search(r"(src|href)=\"(https?:)?//", html), url
        assert not INLINE_SCRIPT.search(html), url
        assert "fonts.googleapis" not in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
    redoc = client.get("/api/docs/redoc/")["Content-Security-Policy"]
    assert "script-src 'self' 'inline-speculation-rules'" in redoc


# --- sessions and passwords ---------------------------------------------------------------------
def test_a_session_ends_after_eight_idle_hours_and_each_request_moves_that_on(client, settings):
    from django.contrib.sessions.models import Session

    assert settings.SESSION_COOKIE_AGE == 8 * 3600
    client.force_login(UserFactory(roles=["md"]))
    key = client.cookies["sessionid"].value
    row = Session.objects.filter(session_key=key)
    eight_hours = timedelta(hours=8)
    # Five minutes after the last use, a request moves the end on: idle time, not login time.
    row.update(expire_date=timezone.now() + eight_hours - timedelta(minutes=5))
    moved = client.get("/")
    assert moved.cookies["sessionid"]["max-age"] == 8 * 3600
    assert row.get().expire_date > timezone.now() + eight_hours - timedelta(minutes=1)
    # Within the minute after that, requests write nothing: no session row, no cookie.
    stored = row.get().expire_date
    again = client.get("/")
    assert again.status_code == 200 and "sessionid" not in again.cookies
    assert row.get().expire_date == stored
    row.update(expire_date=timezone.now() - timedelta(seconds=1))  # what eight idle hours do
    assert client.get("/").status_code == 302


def test_a_user_changes_their_password(client):
    user = UserFactory(roles=["md"])
    client.force_login(user)
    assert 'href="/accounts/password/"' in client.get("/").content.decode()
    wrong = client.post(
        "/accounts/password/",
        {"old_password": "nope", "new_password1": "a-new-long-phrase-9", "new_password2": "x"},
    )
    assert wrong.status_code == 200 and "incorrectly" in wrong.content.decode()
    done = client.post(
        "/accounts/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "a-new-long-phrase-9",
            "new_password2": "a-new-long-phrase-9",
        },
    )
    assert done.status_code == 302
    assert "Your password was changed" in client.get(done["Location"]).content.decode()
    user.refresh_from_db()
    assert user.check_password("a-new-long-phrase-9")
    # Still signed in here.
    assert client.get("/").status_code == 200


def _sign_in(client, user) -> None:
    answer = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})
    assert answer.status_code == 302, "signed in"


def test_the_signed_in_user_is_read_back_in_one_statement_and_an_inactive_one_is_signed_out(
    client,
):
    from django.contrib.auth import BACKEND_SESSION_KEY
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = UserFactory(roles=["md"])
    _sign_in(client, user)
    assert client.session[BACKEND_SESSION_KEY] == "annotation.authentication.UserBackend"
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/").status_code == 200
    users = [q["sql"] for q in queries if '"auth_user' in q["sql"]]
    assert len(users) == 1 and users[0].startswith('SELECT u.*, g."name"'), users
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert client.get("/").status_code == 302, "a deactivated account is signed out at once"


def test_roles_read_with_the_user_follow_each_change_at_the_next_request(client):
    """The user's groups come with the user row (one statement per request): a role taken away
    or given by an admin holds from the very next request, and a user in no group has no role."""
    from django.contrib.auth.models import Group

    user = UserFactory(roles=["md"])
    _sign_in(client, user)
    assert client.get(reverse("review_queue")).status_code == 200
    user.groups.clear()
    assert client.get(reverse("review_queue")).status_code == 403, "no role, no reading"
    user.groups.add(Group.objects.get_or_create(name="researcher")[0])
    assert client.get(reverse("review_queue")).status_code == 403, "a researcher is no reader"
    user.groups.add(Group.objects.get_or_create(name="md")[0])
    assert client.get(reverse("review_queue")).status_code == 403, "provenance roles never read"
    user.groups.remove(Group.objects.get(name="researcher"))
    assert client.get(reverse("review_queue")).status_code == 200


def test_sessions_from_before_the_user_backend_stay_signed_in(client):
    """Sessions recorded Django's ModelBackend until UserBackend replaced it: they are read as
    UserBackend's, so the change signs nobody out."""
    from django.contrib.auth import BACKEND_SESSION_KEY

    user = UserFactory(roles=["md"])
    client.force_login(user, backend="annotation.authentication.UserBackend")
    session = client.session
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session.save()
    page = client.get("/")
    assert page.status_code == 200 and user.username in page.content.decode()


def test_a_password_change_elsewhere_signs_this_session_out(client):
    user = UserFactory(roles=["md"])
    _sign_in(client, user)
    user.set_password("another-long-phrase-7")
    user.save()
    assert client.get("/").status_code == 302


def test_a_wrong_password_is_hashed_once(client, monkeypatch):
    """One backend checks passwords: a second would double the cost of every failed sign-in."""
    from django.contrib.auth.base_user import AbstractBaseUser

    user = UserFactory(roles=["md"])
    checks = []
    real = AbstractBaseUser.check_password
    monkeypatch.setattr(
        AbstractBaseUser, "check_password", lambda self, raw: checks.append(1) or real(self, raw)
    )
    answer = client.post(reverse("login"), {"username": user.username, "password": "wrong"})
    assert answer.status_code == 200 and len(checks) == 1


# --- API tokens ------------------------------------------------------------------------------
def _token_for(user) -> str:
    answer = APIClient().post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert answer.status_code == 200
    return answer.json()["token"]


def test_an_api_token_expires_and_a_new_one_is_issued(settings):
    researcher = UserFactory(roles=["researcher"])
    key = _token_for(researcher)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/datasets/").status_code == 200
    Token.objects.filter(key=key).update(created=timezone.now() - settings.TOKEN_TTL - timedelta(1))
    expired = client.get("/api/datasets/")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    fresh = _token_for(researcher)
    assert fresh != key
    client.credentials(HTTP_AUTHORIZATION=f"Token {fresh}")
    assert client.get("/api/datasets/").status_code == 200


def test_a_token_is_revoked_with_delete():
    researcher = UserFactory(roles=["researcher"])
    key = _token_for(researcher)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.delete("/api/auth/token/").status_code == 204
    assert client.get("/api/datasets/").status_code == 401
    assert not Token.objects.filter(user=researcher).exists()
    assert APIClient().delete("/api/auth/token/").status_code == 401


# --- uploads leave no scratch folder ------------------------------------------------------------
def test_an_imported_upload_leaves_no_folder_behind(broker, tmp_path):
    from tests.annotation.test_dashboard import _phantom_folder

    folder = _phantom_folder(tmp_path, n_covid=1, n_control=0)
    files = [
        (p.relative_to(folder).as_posix(), SimpleUploadedFile(p.name, p.read_bytes()))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    job = import_upload_request(dataset=DatasetFactory(), files=files)
    prefix = job.params["prefix"]
    assert default_storage.exists(prefix)
    report = import_upload_run(job=job)
    assert len(report.imported) == 1
    assert not default_storage.exists(prefix)
    assert default_storage.listdir("uploads") == ([], [])


# --- the log ---------------------------------------------------------------------------------
def test_a_refused_page_is_logged_in_one_line_without_a_traceback():
    from config.logfilters import ClientErrorWithoutTraceback

    # The console handler settings.LOGGING gave the root logger, writing into a buffer.
    console = next(
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, ClientErrorWithoutTraceback) for f in h.filters)
    )
    buffer = io.StringIO()
    former = console.setStream(buffer)
    try:
        client = Client()
        client.force_login(UserFactory(roles=["md"]))
        assert client.get("/dashboard/").status_code == 403
        assert client.get("/no/such/page").status_code == 404
    finally:
        console.setStream(former)
    log = buffer.getvalue()
    assert "Forbidden (Permission denied): /dashboard/" in log
    assert "Not Found: /no/such/page" in log
    assert "Traceback" not in log
