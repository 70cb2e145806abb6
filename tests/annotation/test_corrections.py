"""Decisions, rounds and ground truths are read-only in /admin/; a wrong decision is voided
through the correction service, which recomputes the ground truth and is audited."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import AuditEvent, Decision, GroundTruth, ReviewTask, Stage
from annotation.roles import MD, SENIOR_MD
from annotation.services.assignment import task_lease_next
from annotation.services.corrections import CorrectionError, decision_void
from annotation.services.review import pick_record, round_record
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def key() -> str:
    return uuid.uuid4().hex


def decide(stage, position: int = 1, *, avoid: Decision | None = None) -> Decision:
    """A new reader's decision; with `avoid`, on another candidate than that decision's."""
    reader = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=reader)
    if avoid is not None:
        order = task.candidate_order
        position = next(i for i, c in enumerate(order, 1) if c != avoid.candidate_id)
    return pick_record(task=task, reader=reader, position=position, idempotency_key=key()).decision


@pytest.fixture
def staff() -> Client:
    client = Client(REMOTE_ADDR="10.9.8.7")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def void_in_admin(client: Client, decision: Decision, reason: str):
    return client.post(
        reverse("admin:annotation_decision_changelist"),
        {
            "action": "void_decisions",
            "_selected_action": [decision.pk],
            "reason": reason,
            "confirm": "Void",
        },
    )


def test_the_admin_cannot_add_change_or_delete_decisions_rounds_or_ground_truths(staff):
    stage = review_stage(n_cases=1, mode="pairwise", n_networks=1)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    result = round_record(task=task, reader=md, number=1, choice="A", idempotency_key=key())
    rows = {
        "decision": result.decision,
        "pairwiseround": result.round,
        "groundtruth": GroundTruth.objects.get(),
    }
    for name, row in rows.items():
        change = reverse(f"admin:annotation_{name}_change", args=[row.pk])
        page = staff.get(change)
        assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
        assert staff.post(change, {}).status_code == 403
        delete = reverse(f"admin:annotation_{name}_delete", args=[row.pk])
        assert staff.post(delete, {"post": "yes"}).status_code == 403
        assert staff.get(reverse(f"admin:annotation_{name}_add")).status_code == 403
    decision = Decision.objects.get()
    assert (decision.reader, decision.revoked_at, decision.candidate) == (
        md,
        None,
        result.decision.candidate,
    )


def test_voiding_in_the_admin_recomputes_ground_truth_and_is_audited(staff):
    stage = review_stage(n_cases=2)
    decision = decide(stage, 2)
    truth = GroundTruth.objects.get()

    asked = staff.post(
        reverse("admin:annotation_decision_changelist"),
        {"action": "void_decisions", "_selected_action": [decision.pk], "index": 0},
    )
    assert asked.status_code == 200 and "Reason (required)" in asked.content.decode()
    assert void_in_admin(staff, decision, "   ").status_code == 200  # no reason: asked again
    assert Decision.objects.get(pk=decision.pk).revoked_at is None
    assert GroundTruth.objects.filter(pk=truth.pk).exists()

    answer = void_in_admin(staff, decision, "clicked the wrong pane, said the reader")
    assert answer.status_code == 302
    decision.refresh_from_db()
    task = ReviewTask.objects.get(pk=decision.task_id)
    assert decision.revoked_at is not None
    assert not GroundTruth.objects.exists()
    assert (task.status, task.reader) == ("open", None)
    event = AuditEvent.objects.get(action="decision.void")
    assert event.reason == "clicked the wrong pane, said the reader" and event.ip == "10.9.8.7"
    assert event.old["accepted"]["ground_truth"] == truth.pk and event.new["accepted"] is None
    assert event.old["position"] == 2 and event.new["task_status"] == "open"

    # The case is read again, and its new decision settles it again.
    again = decide(stage, 1)
    assert again.task_id == task.pk
    assert GroundTruth.objects.get().mask == again.mask


def test_a_closed_latest_stage_is_reopened_by_a_void(django_capture_on_commit_callbacks):
    stage = review_stage(n_cases=1)
    with django_capture_on_commit_callbacks(execute=True):
        decision = decide(stage)
    stage.refresh_from_db()
    assert stage.status == Stage.Status.CLOSED
    admin = UserFactory(is_superuser=True)
    decision_void(decision=decision, reason="reader was not blinded", by=admin)
    stage.refresh_from_db()
    assert stage.status == Stage.Status.REVIEWING and stage.closed_at is None
    event = AuditEvent.objects.get(action="decision.void")
    assert (event.old["stage_status"], event.new["stage_status"]) == ("closed", "reviewing")


def test_a_decision_that_can_no_longer_change_is_refused_with_nothing_changed():
    stage = review_stage(n_cases=1, readers_per_case=2)
    first = decide(stage, 1)
    decide(stage, avoid=first)
    senior = UserFactory(roles=[SENIOR_MD])
    task = task_lease_next(stage=stage, reader=senior, kind="adjudication")
    verdict = pick_record(task=task, reader=senior, position=1, idempotency_key=key()).decision
    admin = UserFactory(is_superuser=True)
    with pytest.raises(CorrectionError, match="void the adjudication first"):
        decision_void(decision=first, reason="wrong", by=admin)
    with pytest.raises(CorrectionError, match="say why"):
        decision_void(decision=verdict, reason=" ", by=admin)
    assert GroundTruth.objects.get().method == "adjudication"
    assert not AuditEvent.objects.filter(action="decision.void").exists()

    # Voiding the adjudication sends the case back to the senior MDs with fresh options.
    outcome = decision_void(decision=verdict, reason="adjudicated the wrong case", by=admin)
    assert isinstance(outcome, ReviewTask) and outcome.status == "open"
    assert not GroundTruth.objects.exists()
    with pytest.raises(CorrectionError, match="already revoked"):
        decision_void(decision=verdict, reason="again", by=admin)

    Stage.objects.filter(pk=stage.pk).update(status=Stage.Status.CLOSED)
    Stage.objects.create(dataset=stage.dataset, number=stage.number + 1, mode="nway")
    with pytest.raises(CorrectionError, match="later stage"):
        decision_void(decision=first, reason="too late", by=admin)
