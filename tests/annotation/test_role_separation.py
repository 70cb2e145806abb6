"""Readers stay blinded: an account that can see provenance (admin, researcher, superuser) is
never given a case to review, the screens and the API say why, and `manage.py check` names
such accounts. The MD home page shows no count of manual masks."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import ReviewTask
from annotation.roles import ADMIN, MD, RESEARCHER, SENIOR_MD
from annotation.services.assignment import task_lease_next
from annotation.services.review_errors import RoleConflict
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db

WHY = "separate reader account"


@pytest.mark.parametrize(
    "account",
    [
        {"roles": [MD, ADMIN]},
        {"roles": [MD, RESEARCHER]},
        {"roles": [SENIOR_MD, RESEARCHER]},
        {"roles": [MD], "is_superuser": True},
    ],
)
def test_a_reader_who_sees_provenance_is_never_leased_a_task(account):
    stage = review_stage(n_cases=2)
    user = UserFactory(**account)
    kind = "adjudication" if SENIOR_MD in account["roles"] else "review"
    with pytest.raises(RoleConflict, match=WHY):
        task_lease_next(stage=stage, reader=user, kind=kind)
    assert not ReviewTask.objects.filter(reader=user).exists()


def test_the_queue_screen_says_why_and_next_leases_nothing():
    stage = review_stage(n_cases=2)
    user = UserFactory(roles=[MD, ADMIN])
    client = Client()
    client.force_login(user)
    page = client.get(reverse("review_queue"))
    assert page.status_code == 403 and WHY in page.content.decode()
    assert f"Stage {stage.number}" not in page.content.decode()
    answer = client.get(reverse("review_next", args=[stage.pk]), follow=True)
    assert WHY in answer.content.decode()
    assert not ReviewTask.objects.filter(reader=user).exists()


def test_the_review_api_answers_403_with_the_reason():
    stage = review_stage(n_cases=2)
    user = UserFactory(roles=[MD, RESEARCHER])
    client = APIClient()
    client.force_authenticate(user)
    for answer in (
        client.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json"),
        client.get("/api/review/stages/"),
    ):
        assert answer.status_code == 403 and WHY in answer.json()["detail"]
    assert not ReviewTask.objects.filter(reader=user).exists()


def test_a_reader_given_a_provenance_role_loses_the_case_they_hold():
    stage = review_stage(n_cases=2)
    user = UserFactory(roles=[MD])
    client = APIClient()
    client.force_authenticate(user)
    screen = client.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json").json()
    user.groups.add(*UserFactory(roles=[ADMIN]).groups.all())
    user = type(user).objects.get(pk=user.pk)  # roles are cached per user object
    client.force_authenticate(user)
    answer = client.post(
        f"/api/review/tasks/{screen['task']}/pick/",
        {"position": 1, "idempotency_key": "k" * 16},
        format="json",
    )
    assert answer.status_code == 403 and WHY in answer.json()["detail"]
    assert not ReviewTask.objects.filter(reader=user, status="done").exists()


def test_the_system_check_names_dual_role_accounts():
    UserFactory(username="plain-md", roles=[MD])
    UserFactory(username="plain-admin", roles=[ADMIN])
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    assert "annotation.W001" not in out.getvalue() + err.getvalue()

    UserFactory(username="md-and-researcher", roles=[MD, RESEARCHER])
    UserFactory(username="senior-superuser", roles=[SENIOR_MD], is_superuser=True)
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    said = out.getvalue() + err.getvalue()
    assert "annotation.W001" in said
    assert "md-and-researcher" in said and "senior-superuser" in said
    assert "plain-md" not in said and "plain-admin" not in said


def test_the_md_home_shows_no_manual_mask_counts_and_the_admin_home_does():
    review_stage(n_cases=2)  # two cases, each with a manual mask
    for roles, shown in (([MD], False), ([SENIOR_MD], False), ([ADMIN], True)):
        client = Client()
        client.force_login(UserFactory(roles=roles))
        page = client.get(reverse("home")).content.decode()
        assert ("With manual mask" in page) is shown, roles
        assert "dataset-" in page  # the datasets are listed either way
