"""A dataset's licence: set on import (command, upload form) or through the API, and named by
every export made afterwards, in COCO `licenses` and in the dataset card."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from annotation.models import Dataset, Job
from annotation.services.exports import export_build, export_request
from annotation.storage import blob_read
from tests.annotation import cxrfiles
from tests.annotation.exporting import CASES, import_dataset, read_zip, write_files
from tests.annotation.test_api_admin import api

pytestmark = pytest.mark.django_db

TOO_LONG = "x" * 501


@pytest.fixture
def dataset(tmp_path):
    """Two cases: one COVID-19 case with an imported manual mask, one control."""
    cases = {name: CASES[name] for name in ("a.png", "e.png")}
    return import_dataset(write_files(tmp_path / "qata", cases))


def exported(dataset, **options):
    export = export_request(
        dataset=dataset, created_by=None, enqueue=False, include_controls=True, **options
    )
    export_build(export=export)
    export.refresh_from_db()
    archive = read_zip(blob_read(export.file.name))
    coco = json.loads(archive.read("annotations/instances.json"))
    card = archive.read("README.md").decode()
    licence_section = card.split("## Licence\n", 1)[1].split("\n## ", 1)[0].strip()
    return coco, licence_section


def test_coco_and_the_card_name_the_datasets_licence(dataset):
    dataset.licence = "CC BY 4.0"
    dataset.save()
    coco, card_licence = exported(dataset)
    assert coco["licenses"] == [{"id": 1, "name": "CC BY 4.0", "url": ""}]
    assert coco["images"] and {image["license"] for image in coco["images"]} == {1}
    assert card_licence == "CC BY 4.0"


def test_a_licence_url_is_the_coco_url_too(dataset):
    dataset.licence = "https://creativecommons.org/licenses/by/4.0/"
    dataset.save()
    coco, _ = exported(dataset)
    assert coco["licenses"][0]["url"] == "https://creativecommons.org/licenses/by/4.0/"


def test_an_exports_own_licence_wins_over_the_datasets(dataset):
    dataset.licence = "CC BY 4.0"
    dataset.save()
    coco, card_licence = exported(dataset, licence="CC0 1.0")
    assert [entry["name"] for entry in coco["licenses"]] == ["CC0 1.0"]
    assert card_licence == "CC0 1.0"


def test_without_a_licence_coco_lists_none_and_the_card_says_so(dataset):
    coco, card_licence = exported(dataset)
    assert coco["licenses"] == [] and all("license" not in image for image in coco["images"])
    assert card_licence.startswith("Not specified")


def test_an_export_keeps_the_licence_it_was_made_with(dataset):
    dataset.licence = "CC BY 4.0"
    dataset.save()
    export = export_request(dataset=dataset, created_by=None, enqueue=False, include_controls=True)
    dataset.licence = "All rights reserved"
    dataset.save()
    export_build(export=export)
    export.refresh_from_db()
    coco = json.loads(read_zip(blob_read(export.file.name)).read("annotations/instances.json"))
    assert [entry["name"] for entry in coco["licenses"]] == ["CC BY 4.0"]


# --- setting it -----------------------------------------------------------------------------
def import_cxr(*args: str) -> str:
    out = StringIO()
    call_command("import_cxr", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_import_command_sets_the_licence(tmp_path):
    folder = write_files(tmp_path / "qata", {"e.png": CASES["e.png"]})
    out = import_cxr(str(folder), "--dataset", "d", "--create-dataset", "--licence", " CC BY 4.0 ")
    assert "Licence of 'd': CC BY 4.0" in out
    assert Dataset.objects.get(name="d").licence == "CC BY 4.0"
    # Importing more without --licence keeps it.
    import_cxr(str(folder), "--dataset", "d")
    assert Dataset.objects.get(name="d").licence == "CC BY 4.0"


def test_a_dry_run_or_a_bad_licence_changes_nothing(tmp_path):
    folder = write_files(tmp_path / "qata", {"e.png": CASES["e.png"]})
    import_cxr(str(folder), "--dataset", "d", "--create-dataset")
    import_cxr(str(folder), "--dataset", "d", "--licence", "CC0", "--dry-run")
    assert Dataset.objects.get(name="d").licence == ""
    with pytest.raises(CommandError, match="--licence: a licence is at most 500 characters"):
        import_cxr(str(folder), "--dataset", "new", "--create-dataset", "--licence", TOO_LONG)
    assert not Dataset.objects.filter(name="new").exists()


def test_the_upload_form_sets_a_new_datasets_licence(admin_client, broker):
    png = SimpleUploadedFile("x.png", cxrfiles.png8(40, 40))
    data = {"new_dataset": "upload", "label": "normal", "licence": "CC BY 4.0", "files": [png]}
    admin_client.post("/dashboard/upload", data)
    assert Job.objects.filter(kind="import").exists()
    assert Dataset.objects.get(name="upload").licence == "CC BY 4.0"


def test_the_upload_form_refuses_a_too_long_licence(admin_client):
    png = SimpleUploadedFile("x.png", cxrfiles.png8(40, 40))
    data = {"new_dataset": "upload", "label": "normal", "licence": TOO_LONG, "files": [png]}
    response = admin_client.post("/dashboard/upload", data)
    assert response.status_code == 200 and "at most 500 characters" in response.content.decode()
    assert not Dataset.objects.filter(name="upload").exists()


def test_an_admin_sets_and_clears_the_licence_through_the_api(dataset):
    client = api("admin")
    url = f"/api/datasets/{dataset.pk}/"
    answer = client.patch(url, {"licence": "CC BY 4.0"}, format="json")
    assert answer.status_code == 200 and answer.json()["licence"] == "CC BY 4.0"
    assert answer.json()["n_cases"] == 2
    assert api("researcher").get(url).json()["licence"] == "CC BY 4.0"
    assert client.patch(url, {"licence": ""}, format="json").json()["licence"] == ""
    dataset.refresh_from_db()
    assert dataset.licence == ""


@pytest.mark.parametrize("body", [{"licence": TOO_LONG}, {"licence": 4}, {"licence": None}])
def test_a_bad_licence_is_refused_by_the_api_and_changes_nothing(dataset, body):
    dataset.licence = "CC BY 4.0"
    dataset.save()
    answer = api("admin").patch(f"/api/datasets/{dataset.pk}/", body, format="json")
    assert answer.status_code == 400 and "licence" in answer.json()
    dataset.refresh_from_db()
    assert dataset.licence == "CC BY 4.0"


def test_a_patch_without_the_licence_leaves_it(dataset):
    dataset.licence = "CC BY 4.0"
    dataset.save()
    answer = api("admin").patch(f"/api/datasets/{dataset.pk}/", {}, format="json")
    assert answer.status_code == 200 and answer.json()["licence"] == "CC BY 4.0"
