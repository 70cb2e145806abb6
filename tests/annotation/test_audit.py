"""The audit trail: each audited action writes exactly one event (who, when, from where,
old → new), a replay writes none, nobody can change or delete an event, admins browse it and
exports carry their dataset's part of it."""

from __future__ import annotations

import json
import uuid

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import AuditEvent, AuditImmutable, Dataset, Export, GroundTruth, Job
from annotation.roles import ADMIN, MD, RESEARCHER, SENIOR_MD
from annotation.services.assignment import task_lease_next
from annotation.services.exports import export_build
from annotation.services.imports import cxr_import
from annotation.services.review import decision_undo, pick_record, round_record
from annotation.storage import blob_read
from tests.annotation.detecting import registered_model
from tests.annotation.exporting import read_zip, write_files
from tests.factories import PASSWORD, DatasetFactory, UserFactory, review_stage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]

IP = "10.1.2.3"


def key() -> str:
    return uuid.uuid4().hex


def only(action: str) -> AuditEvent:
    """The one event of this action (fails if there are none or several)."""
    events = list(AuditEvent.objects.filter(action=action))
    assert len(events) == 1, [(e.action, e.new) for e in events]
    return events[0]


def web(user) -> Client:
    client = Client(REMOTE_ADDR=IP)
    client.force_login(user)
    return client


def api(user) -> APIClient:
    client = APIClient(REMOTE_ADDR=IP)
    client.force_authenticate(user)
    return client


def test_an_nway_pick_is_one_event_with_the_accepted_mask_and_a_replay_adds_none():
    stage = review_stage(n_cases=1)
    md = UserFactory(roles=[MD])
    client = api(md)
    screen = client.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json").json()
    body = {"position": 2, "idempotency_key": key()}
    first = client.post(f"/api/review/tasks/{screen['task']}/pick/", body, format="json")
    assert first.status_code == 201
    again = client.post(f"/api/review/tasks/{screen['task']}/pick/", body, format="json")
    assert again.status_code == 200 and again.json()["replayed"]

    event = only("decision.record")
    truth = GroundTruth.objects.get()
    assert (event.actor, event.actor_name, event.ip) == (md, md.username, IP)
    assert event.dataset_id == stage.dataset_id and event.old is None
    assert event.new["position"] == 2 and event.new["outcome"] == "chose"
    assert event.new["accepted"]["ground_truth"] == truth.pk
    assert event.new["accepted"]["mask"] == truth.mask_id


def test_each_pairwise_round_and_an_undo_are_one_event_each():
    stage = review_stage(n_cases=1, mode="pairwise", n_networks=2)  # 3 candidates: 2 rounds
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    first = round_record(
        task=task, reader=md, number=1, choice="A", idempotency_key=key(), client_ip=IP
    )
    assert only("round.record").new["winner"] == first.round.winner_id
    second = round_record(
        task=task, reader=md, number=2, choice="B", idempotency_key=key(), client_ip=IP
    )
    assert AuditEvent.objects.filter(action="round.record").count() == 2
    decided = only("decision.record")
    assert decided.new["decision"] == second.decision.pk
    truth_before = decided.new["accepted"]
    assert truth_before is not None

    decision_undo(stage=stage, reader=md, client_ip=IP)
    undo = only("decision.undo")
    winners = [first.round.winner_id, second.round.winner_id]
    assert undo.ip == IP and undo.target_id == str(second.decision.pk)
    assert undo.old["revoked"] is False and undo.new["revoked"] is True
    # The round that produced the decision went with it; the trail keeps what it was.
    assert undo.old["round_winners"] == winners and undo.new["round_winners"] == winners[:1]
    assert undo.old["accepted"] == truth_before and undo.new["accepted"] is None
    assert not GroundTruth.objects.exists()


def test_an_adjudication_is_one_event_naming_the_accepted_mask():
    stage = review_stage(n_cases=1, readers_per_case=2)
    chosen = None
    for _ in range(2):  # two readers disagree
        md = UserFactory(roles=[MD])
        task = task_lease_next(stage=stage, reader=md)
        position = next(i for i, c in enumerate(task.candidate_order, 1) if c != chosen)
        result = pick_record(task=task, reader=md, position=position, idempotency_key=key())
        chosen = result.decision.candidate_id
    opened = AuditEvent.objects.filter(action="decision.record").order_by("id")
    assert [e.new["adjudication_opened"] for e in opened] == [False, True]
    senior = UserFactory(roles=[SENIOR_MD])
    task = task_lease_next(stage=stage, reader=senior, kind="adjudication")
    pick_record(task=task, reader=senior, position=1, idempotency_key=key(), client_ip=IP)
    event = only("adjudication.record")
    assert event.actor == senior and event.new["accepted"]["method"] == "adjudication"
    assert event.new["accepted"]["mask"] == GroundTruth.objects.get().mask_id


def test_stage_create_launch_cancel_and_job_cancel_retry_are_one_event_each(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=8, n_control=0, manual_fraction=1.0)
    admin = UserFactory(roles=[ADMIN])
    client = api(admin)
    created = client.post(
        "/api/stages/", {"dataset": dataset.pk, "preset": "fast-cpu"}, format="json"
    )
    assert created.status_code == 201, created.content
    stage_id = created.json()["id"]
    event = only("stage.create")
    assert (event.actor, event.ip, event.target_id) == (admin, IP, str(stage_id))
    assert event.new["preset"] == "fast-cpu" and event.new["number"] == 1

    assert client.post(f"/api/stages/{stage_id}/launch/").status_code == 200
    event = only("stage.launch")
    jobs = list(Job.objects.filter(stage_id=stage_id).order_by("id"))
    assert event.old == {"status": "draft"} and event.new["status"] == "training"
    assert event.new["jobs"] == [j.pk for j in jobs]

    assert client.post(f"/api/jobs/{jobs[0].pk}/cancel/").status_code == 200
    event = only("job.cancel")
    assert event.old["state"] == "queued" and event.new["state"] == "cancelled"
    assert client.post(f"/api/jobs/{jobs[0].pk}/retry/").status_code == 200
    event = only("job.retry")
    assert (event.old, event.new) == ({"state": "cancelled"}, {"state": "queued"})

    assert client.post(f"/api/stages/{stage_id}/cancel/").status_code == 200
    event = only("stage.cancel")
    assert event.old == {"status": "training"} and event.new["status"] == "cancelled"
    assert sorted(event.new["jobs_cancelled"]) == [j.pk for j in jobs]
    # The stage's own cancel is the one event: its jobs were not audited one by one.
    assert AuditEvent.objects.filter(action="job.cancel").count() == 1


def test_a_detector_deploy_is_one_event_with_what_was_deployed_before():
    dataset = DatasetFactory()
    first = registered_model(dataset, run="r1", fold=0)
    second = registered_model(dataset, run="r2", fold=0)
    admin = UserFactory(roles=[ADMIN])
    client = web(admin)
    client.post(reverse("detector_deploy", args=[first.pk]))
    assert only("detector.deploy").old == {"deployed": []}
    client.post(reverse("detector_deploy", args=[second.pk]))
    event = AuditEvent.objects.filter(action="detector.deploy").order_by("-id").first()
    assert AuditEvent.objects.filter(action="detector.deploy").count() == 2
    assert (event.actor, event.ip) == (admin, IP)
    assert event.old == {"deployed": [first.pk]} and event.new == {"deployed": [second.pk]}


def test_an_import_is_one_event_with_counts_and_no_file_names(tmp_path):
    folder = write_files(tmp_path / "src", {"a.png": (40, 30, "covid", "P1")})
    dataset = Dataset.objects.create(name="imported", mask_max_side=32)
    admin = UserFactory(roles=[ADMIN])
    cxr_import(dataset=dataset, paths=[folder], dry_run=True)
    assert not AuditEvent.objects.filter(action="import").exists()  # a dry run changes nothing
    cxr_import(dataset=dataset, paths=[folder], by=admin, client_ip=IP)
    event = only("import")
    assert (event.actor, event.ip, event.dataset) == (admin, IP, dataset)
    assert event.new["imported"] == 1 and event.new["masks_imported"] == 1
    assert "a.png" not in json.dumps(event.new)


def test_export_request_build_and_download_are_one_event_each_and_the_zip_carries_the_trail(
    tmp_path,
):
    folder = write_files(tmp_path / "src", {"a.png": (40, 30, "covid", "P1")})
    dataset = Dataset.objects.create(name="exported", mask_max_side=32)
    cxr_import(dataset=dataset, paths=[folder])
    radiograph = dataset.radiographs.get()
    GroundTruth.objects.create(
        radiograph=radiograph, mask=radiograph.masks.get(), source="manual", method="imported"
    )
    stage = review_stage(n_cases=1)  # another dataset: its events stay out of this export
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    pick_record(task=task, reader=md, position=1, idempotency_key=key())
    researcher = UserFactory(roles=[RESEARCHER])
    client = api(researcher)

    created = client.post("/api/exports/", {"dataset": dataset.pk}, format="json")
    assert created.status_code == 201, created.content
    export = Export.objects.get()
    event = only("export.request")
    assert (event.actor, event.ip, event.target_id) == (researcher, IP, str(export.pk))
    export_build(export=export)
    export_build(export=export)  # a rerun of a finished export stores nothing, audits nothing
    export.refresh_from_db()
    event = only("export.build")
    assert event.actor == researcher and event.new["sha256"] == export.sha256
    answer = client.get(f"/api/exports/{export.pk}/download/")
    assert answer.status_code == 200
    b"".join(answer.streaming_content)
    event = only("export.download")
    assert (event.actor, event.ip, event.new["sha256"]) == (researcher, IP, export.sha256)

    lines = read_zip(blob_read(export.file.name)).read("audit.jsonl").decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["action"] for r in records] == ["import", "export.request"]
    assert records[1]["actor"] == f"reader-{researcher.pk}"
    text = "\n".join(lines)
    assert researcher.username not in text and IP not in text and md.username not in text


def test_sign_ins_refused_sign_ins_and_sign_outs_are_recorded():
    md = UserFactory(roles=[MD])
    client = Client(REMOTE_ADDR=IP)
    client.post(reverse("login"), {"username": md.username, "password": "wrong"})
    client.post(reverse("login"), {"username": "nobody", "password": "wrong"})
    failed = AuditEvent.objects.filter(action="login.failed").order_by("id")
    assert [(e.actor, e.actor_name, e.ip) for e in failed] == [
        (None, md.username, IP),
        (None, "nobody", IP),
    ]
    assert "wrong" not in json.dumps([e.new for e in failed])
    refused = APIClient(REMOTE_ADDR=IP).post(
        "/api/auth/token/", {"username": md.username, "password": "wrong"}, format="json"
    )
    assert refused.status_code == 401
    token_failure = AuditEvent.objects.filter(action="login.failed").order_by("-id").first()
    assert (token_failure.actor_name, token_failure.ip) == (md.username, IP)
    assert AuditEvent.objects.filter(action="login.failed").count() == 3
    client.post(reverse("login"), {"username": md.username, "password": PASSWORD})
    assert (only("login").actor, only("login").ip) == (md, IP)
    client.post(reverse("logout"))
    assert only("logout").actor == md


def test_behind_a_proxy_the_trail_records_the_client_s_address(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    md = UserFactory(roles=[MD])
    # The proxy appends the address it saw; the forged entry before it is the client's own.
    client = Client(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=f"198.51.100.7, {IP}")
    client.post(reverse("login"), {"username": md.username, "password": PASSWORD})
    assert only("login").ip == IP


def test_a_role_change_is_one_change_history_entry_with_the_group_added():
    md = UserFactory(roles=[MD])
    before = LogEntry.objects.count()
    md.groups.add(Group.objects.get_or_create(name=RESEARCHER)[0])
    entries = LogEntry.objects.order_by("id")[before:]
    assert len(entries) == 1
    change = entries[0].changes_dict["groups"]
    assert change["operation"] == "add" and change["objects"] == [RESEARCHER]


def test_an_admin_edit_keeps_old_and_new_values_with_who_and_where():
    dataset = DatasetFactory(description="before")
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = web(staff)
    url = reverse("admin:annotation_dataset_change", args=[dataset.pk])
    answer = client.post(url, {"name": dataset.name, "description": "after", "mask_max_side": 1024})
    assert answer.status_code == 302, answer.content[:2000]
    entry = LogEntry.objects.get_for_object(dataset).filter(action=LogEntry.Action.UPDATE).get()
    assert entry.changes_dict["description"] == ["before", "after"]
    assert (entry.actor, entry.remote_addr) == (staff, IP)


def test_the_trail_cannot_be_changed_or_deleted():
    event = AuditEvent.objects.create(action="login", actor_name="someone")
    event.actor_name = "someone else"
    with pytest.raises(AuditImmutable):
        event.save()
    with pytest.raises(AuditImmutable):
        event.delete()
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(actor_name="x")
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).actor_name == "someone"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
def test_postgresql_refuses_update_and_delete_from_any_client():
    from django.db import DatabaseError, transaction

    event = AuditEvent.objects.create(action="login", actor_name="someone")
    for sql in (
        "UPDATE annotation_auditevent SET actor_name = 'x' WHERE id = %s",
        "DELETE FROM annotation_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).actor_name == "someone"


def test_admins_browse_and_filter_the_trail_and_cannot_edit_it():
    stage = review_stage(n_cases=1)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    pick_record(task=task, reader=md, position=1, idempotency_key=key())
    AuditEvent.objects.create(action="login.failed", actor_name="mallory")
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = web(staff)
    listing = client.get(
        reverse("admin:annotation_auditevent_changelist"), {"action": "decision.record"}
    )
    assert listing.status_code == 200
    assert md.username in listing.content.decode()
    assert "mallory" not in listing.content.decode()
    event = AuditEvent.objects.get(action="decision.record")
    assert client.get(reverse("admin:annotation_auditevent_add")).status_code == 403
    change = reverse("admin:annotation_auditevent_change", args=[event.pk])
    assert client.post(change, {"actor_name": "x"}).status_code == 403
    delete = reverse("admin:annotation_auditevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).actor_name == md.username
    # The dashboard links to it.
    dashboard = web(UserFactory(roles=[ADMIN])).get(reverse("dashboard")).content.decode()
    assert reverse("admin:annotation_auditevent_changelist") in dashboard


def test_whatever_the_admin_can_edit_keeps_a_change_history():
    from auditlog.registry import auditlog
    from django.contrib import admin
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = UserFactory(is_staff=True, is_superuser=True)
    editable = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ("annotation", "auth"):
            continue
        if (
            model_admin.has_add_permission(request)
            or model_admin.has_change_permission(request)
            or model_admin.has_delete_permission(request)
        ):
            editable.append(model.__name__)
            assert auditlog.contains(model), f"{model.__name__} is editable without history"
    assert sorted(editable) == [
        "Dataset",
        "Group",
        "ModelVersion",
        "Radiograph",
        "Stage",
        "User",
    ]
