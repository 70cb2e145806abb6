"""The admin dashboard: create and launch stages, watch and steer jobs."""

from __future__ import annotations

import pytest
from django.utils import timezone

from annotation.models import Job, Stage, WorkerNode
from annotation.services import jobs as job_services
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(roles=["admin"]))
    return client


@pytest.mark.parametrize("role", ["md", "senior_md", "researcher"])
def test_the_dashboard_is_for_admins_only(client, role):
    client.force_login(UserFactory(roles=[role]))
    assert client.get("/dashboard/").status_code == 403


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_an_admin_creates_and_launches_a_stage_from_a_preset(
    admin_client, phantom_dataset, broker, django_capture_on_commit_callbacks
):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    page = admin_client.get("/dashboard/").content.decode()
    assert dataset.name in page and "New stage" in page

    form = admin_client.get(f"/dashboard/datasets/{dataset.pk}/stages/new?preset=fast-cpu").context[
        "form"
    ]
    data = {k: v for k, v in form.initial.items() if k != "networks" and v is not False}
    data["networks"] = form.initial["networks"]
    response = admin_client.post(f"/dashboard/datasets/{dataset.pk}/stages/new", data)
    stage = Stage.objects.get(dataset=dataset)
    assert response.status_code == 302 and response["Location"] == f"/dashboard/stages/{stage.pk}/"
    assert (stage.status, stage.preset, len(stage.config["networks"])) == ("draft", "fast-cpu", 3)

    page = admin_client.get(f"/dashboard/stages/{stage.pk}/").content.decode()
    assert "Launching trains on <strong>8</strong> cases" in page
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/dashboard/stages/{stage.pk}/launch")
    stage.refresh_from_db()
    assert stage.status == "training"
    assert len(broker.messages) == Job.objects.filter(stage=stage, kind="train").count() == 6


def test_a_stage_from_the_demo_preset_says_where_its_networks_start(admin_client, phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    url = f"/dashboard/datasets/{dataset.pk}/stages/new"
    form = admin_client.get(f"{url}?preset=demo-stage-1").context["form"]
    data = {k: v for k, v in form.initial.items() if k != "networks" and v is not False}
    data["networks"] = form.initial["networks"]
    admin_client.post(url, data)
    stage = Stage.objects.get(dataset=dataset)
    assert (stage.config["start_weights"], stage.config["learning_rate"]) == ("demo", 1e-4)
    page = admin_client.get(f"/dashboard/stages/{stage.pk}/").content.decode()
    assert "networks trained on phantoms of another seed" in page
    assert "learning rate 0.0001" in page


def test_the_stage_form_explains_what_is_wrong(admin_client, phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=4, n_control=0)
    response = admin_client.post(
        f"/dashboard/datasets/{dataset.pk}/stages/new",
        {
            "mode": "nway", "networks": ["unet/tiny"], "epochs": 2, "batch_size": 4, "image_size": 64,
            "folds": 1, "readers_per_case": 1, "learning_rate": 0.001,
        },
    )  # fmt: skip
    assert response.status_code == 200
    assert "2 to 6 networks" in response.content.decode()
    assert not Stage.objects.exists()


def test_the_job_board_shows_live_progress_as_an_htmx_fragment(admin_client):
    job = Job.objects.create(
        kind="train", params={"network": {"arch": "unet", "encoder": "tiny"}, "fold": 0}
    )
    job_services.job_claim(job_id=job.pk, worker="gpu0@host:1")
    curve = [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.5}]
    job_services.job_progress(
        job_id=job.pk, progress=0.42,
        detail={"epoch": 2, "epochs": 5, "batch": 3, "batches": 10, "loss": 0.5, "eta_s": 95, "curve": curve},
    )  # fmt: skip
    response = admin_client.get("/dashboard/?part=jobs", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<h1>" not in html  # only the fragment
    assert 'value="42"' in html and "epoch 2/5, batch 3/10" in html and "ETA 1m 35s" in html
    assert "Train unet/tiny, fold 1" in html and "<polyline" in html


def test_an_admin_cancels_and_retries_a_job(
    admin_client, broker, django_capture_on_commit_callbacks
):
    job = Job.objects.create(kind="train")
    admin_client.post(f"/dashboard/jobs/{job.pk}/cancel")
    job.refresh_from_db()
    assert job.state == "cancelled"
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/dashboard/jobs/{job.pk}/retry")
    job.refresh_from_db()
    assert job.state == "queued" and broker.job_ids == [job.pk]
    response = admin_client.post(f"/dashboard/jobs/{job.pk}/retry", follow=True)
    assert "only failed or cancelled jobs can be retried" in response.content.decode()


def test_the_worker_board_shows_gpus_and_current_jobs(admin_client):
    now = timezone.now()
    WorkerNode.objects.create(
        name="gpu0@node1", queues=["gpu"], gpus=[{"name": "NVIDIA H100", "memory_mb": 81559}],
        started_at=now, last_seen_at=now,
    )  # fmt: skip
    job = Job.objects.create(kind="train", state="running", worker="gpu0@node1:77")
    html = admin_client.get("/dashboard/?part=workers", HTTP_HX_REQUEST="true").content.decode()
    assert "NVIDIA H100 (81559 MB)" in html and f"#{job.pk}" in html and "online" in html


def _phantom_folder(tmp_path, n_covid=3, n_control=1):
    from mlworker.phantoms import generate_cohort, write_qata_layout

    folder = tmp_path / "upload"
    write_qata_layout(
        generate_cohort(seed=3, n_covid=n_covid, n_control=n_control, size=64, manual_fraction=1.0),
        folder,
    )
    return folder


def test_a_folder_upload_keeps_its_layout(admin_client, tmp_path, broker):
    from django.core.files.storage import default_storage
    from django.core.files.uploadedfile import SimpleUploadedFile

    folder = _phantom_folder(tmp_path, n_covid=1, n_control=0)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    paths = [f"upload/{p.relative_to(folder).as_posix()}" for p in files]
    uploads = [SimpleUploadedFile(p.name, p.read_bytes()) for p in files]
    admin_client.post(
        "/dashboard/upload",
        {
            "new_dataset": "folder",
            "label": "covid",
            "files": uploads,
            "paths": __import__("json").dumps(paths),
        },
    )
    job = Job.objects.get(kind="import")
    stored = sorted(p.removeprefix(job.params["prefix"] + "/") for p in job.params["files"])
    assert stored == sorted(paths)
    assert any("Ground-truths/mask_" in p for p in stored)
    assert all(default_storage.exists(p) for p in job.params["files"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"new_dataset": "x", "label": "covid", "paths": '["../../etc/passwd"]'},
            "not a plain relative file name",
        ),
        ({"new_dataset": "x", "label": "covid"}, "choose a zip file, some images or a folder"),
        ({"label": "covid"}, "choose a dataset, or name a new one"),
    ],
)
def test_a_bad_upload_is_refused_and_stores_nothing(admin_client, data, message, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotation.models import Dataset

    if "paths" in data:
        data = {**data, "files": [SimpleUploadedFile("passwd", b"root:x:0:0")]}
    response = admin_client.post("/dashboard/upload", data)
    assert response.status_code == 200 and message in response.content.decode()
    assert not Job.objects.exists() and not Dataset.objects.filter(name="x").exists()
