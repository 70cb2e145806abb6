"""Launching detector runs and deploying a trained version (the workers' part simulated)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from annotation.models import GroundTruth, Job, Label, ModelVersion, Radiograph
from annotation.services.detector import (
    DetectorError,
    deployed_classifier,
    deployed_detector,
    detector_deploy,
    detector_launch,
)
from tests.annotation.detecting import detector_dataset, registered_model
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]


def _fast(**overrides):
    return {
        "networks": [{"arch": "unet", "encoder": "tiny"}, {"arch": "dla", "encoder": "tiny"}]
    } | overrides


def test_a_kfold_run_trains_each_network_on_every_fold_with_patients_kept_apart(
    phantom_dataset, broker, django_capture_on_commit_callbacks
):
    dataset, _ = detector_dataset(phantom_dataset, n_covid=10, n_control=10)
    # A COVID-19 case without an accepted mask is left out; controls need none.
    left_out = GroundTruth.objects.filter(radiograph__dataset=dataset).first()
    left_out.delete()
    with django_capture_on_commit_callbacks(execute=True):
        launched = detector_launch(dataset=dataset, config=_fast(folds=2))

    detectors = [j for j in launched.jobs if j.kind == Job.Kind.DETECTOR]
    classifiers = [j for j in launched.jobs if j.kind == Job.Kind.CLASSIFIER]
    assert len(detectors) == 2 * 2 and len(classifiers) == 1 * 2  # one encoder, two folds
    tasks = {m.task for m in broker.messages}
    assert tasks == {"annotation.worker.detector_job", "annotation.worker.classifier_job"}
    assert len(broker.messages) == 6
    truth = dict(GroundTruth.objects.values_list("radiograph_id", "mask_id"))
    label = dict(Radiograph.objects.values_list("id", "label"))
    patient = dict(Radiograph.objects.values_list("id", "patient_key"))
    expected = {r for r, lab in label.items() if lab != Label.COVID} | set(truth)
    assert left_out.radiograph_id not in expected
    for job in launched.jobs:
        p = job.params
        assert p["run"] == launched.run and p["protocol"] == "kfold"
        train, test = {r for r, _ in p["train"]}, {r for r, _ in p["test"]}
        assert not train & test and train | test == expected
        assert not {patient[r] for r in train} & {patient[r] for r in test}
        for r, m in p["train"] + p["test"]:
            assert m == truth.get(r) if label[r] == Label.COVID else m is None
    for net in ({"arch": "unet", "encoder": "tiny"}, {"arch": "dla", "encoder": "tiny"}):
        mine = [j for j in detectors if j.params["network"] == net]
        assert sorted(j.params["fold"] for j in mine) == [0, 1]
        tested = sorted(r for j in mine for r, _ in j.params["test"])
        assert tested == sorted(expected), "every case is tested exactly once per network"


def test_the_fixed_split_protocol_trains_on_the_train_set_and_tests_on_the_test_set(
    phantom_dataset,
):
    dataset, _ = detector_dataset(phantom_dataset, n_covid=10, n_control=10)
    launched = detector_launch(
        dataset=dataset, config=_fast(protocol="split", folds=1, with_classifier=False)
    )
    assert len(launched.jobs) == 2
    split = dict(Radiograph.objects.values_list("id", "split"))
    for job in launched.jobs:
        assert job.params["fold"] is None
        assert {split[r] for r, _ in job.params["train"]} == {"train"}
        assert {split[r] for r, _ in job.params["test"]} == {"test"}


def test_the_fixed_split_needs_every_case_assigned(phantom_dataset):
    dataset, _ = detector_dataset(phantom_dataset, n_covid=8, n_control=8)
    Radiograph.objects.filter(pk=Radiograph.objects.first().pk).update(split="")
    with pytest.raises(DetectorError, match="1 case\\(s\\) have no train/test assignment"):
        detector_launch(dataset=dataset, config=_fast(protocol="split", folds=1))
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"image_size": 50}, "image_size must be a multiple of 32"),
        ({"networks": []}, "choose at least one network"),
        ({"networks": [{"arch": "segnet", "encoder": "tiny"}]}, "a network is an architecture"),
        ({"protocol": "loo"}, "protocol must be kfold or split"),
        ({"folds": 1}, "at least 2 folds"),
        ({"folds": 9}, "cannot make 9 folds"),
        ({"epochs": 0}, "epochs must be a whole number from 1"),
        ({"lr": "fast"}, "lr must be a number"),
    ],
)
def test_impossible_settings_are_refused_with_a_reason(phantom_dataset, config, message):
    dataset, _ = detector_dataset(phantom_dataset, n_covid=6, n_control=6)
    with pytest.raises(DetectorError, match=message):
        detector_launch(dataset=dataset, config=_fast(**config))
    assert not Job.objects.exists()


def test_without_accepted_masks_there_is_nothing_to_train_on(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=6, n_control=6)
    with pytest.raises(DetectorError, match="this dataset has 0 and 6"):
        detector_launch(dataset=dataset, config=_fast())


def test_deploying_switches_detector_and_matching_classifier_together(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    first = registered_model(dataset, run="r1", fold=0)
    first_clf = registered_model(dataset, run="r1", fold=0, purpose="classifier")
    registered_model(dataset, run="r1", fold=1, purpose="classifier")  # another fold's
    second = registered_model(dataset, run="r2", arch="dla", fold=None, protocol="split")

    detector_deploy(model_version=first)
    assert deployed_detector(dataset=dataset) == first
    assert deployed_classifier(detector=first) == first_clf

    detector_deploy(model_version=second)  # run r2 trained no classifier
    assert deployed_detector(dataset=dataset) == second
    assert set(ModelVersion.objects.filter(deployed=True)) == {second}
    assert deployed_classifier(detector=second) is None

    with pytest.raises(DetectorError, match="not a detector"):
        detector_deploy(model_version=first_clf)
    assert set(ModelVersion.objects.filter(deployed=True)) == {second}
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=first.pk).update(deployed=True)


def test_an_admin_launches_a_run_from_the_form(client, phantom_dataset):
    dataset, _ = detector_dataset(phantom_dataset, n_covid=8, n_control=8)
    client.force_login(UserFactory(roles=["admin"]))
    page = client.get(reverse("detector_new", args=[dataset.pk]))
    assert page.status_code == 200
    assert "<strong>8</strong> COVID-19 cases with an accepted mask" in page.content.decode()
    data = {
        "preset": "fast-cpu",
        "networks": ["unet/tiny"],
        "protocol": "kfold",
        "folds": 2,
        "epochs": 1,
        "batch_size": 4,
        "image_size": 64,
        "lr": 0.001,
        "with_classifier": "on",
        "classifier_epochs": 1,
        "classifier_lr": 0.001,
    }
    response = client.post(reverse("detector_new", args=[dataset.pk]), data)
    run = Job.objects.first().params["run"]
    assert response.status_code == 302 and response.url == reverse("detector_report", args=[run])
    assert Job.objects.filter(kind="detector").count() == 2
    assert Job.objects.filter(kind="classifier").count() == 2

    bad = client.post(reverse("detector_new", args=[dataset.pk]), data | {"image_size": 70})
    assert "image_size must be a multiple of 32" in bad.content.decode()
    assert Job.objects.count() == 4


@pytest.mark.parametrize("role", ["researcher", "md"])
def test_only_admins_launch_and_deploy(client, phantom_dataset, role):
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    mv = registered_model(dataset, run="r1")
    client.force_login(UserFactory(roles=[role]))
    assert client.get(reverse("detector_new", args=[dataset.pk])).status_code == 403
    assert client.post(reverse("detector_deploy", args=[mv.pk])).status_code == 403
    mv.refresh_from_db()
    assert not mv.deployed


def test_the_deploy_button_deploys_and_returns_to_the_report(client, phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    mv = registered_model(dataset, run="r1")
    client.force_login(UserFactory(roles=["admin"]))
    response = client.post(reverse("detector_deploy", args=[mv.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("detector_report", args=["r1"])
    assert "is now the deployed detector" in response.content.decode()
    mv.refresh_from_db()
    assert mv.deployed
