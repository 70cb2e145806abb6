"""The detector ensemble: settings, queueing once per fold when every network is trained,
the report's ensemble-against-best-network line and the button that asks for it."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from annotation.models import Job, ModelVersion
from annotation.selectors.report import run_report
from annotation.services.detector import (
    DetectorError,
    detector_config_validate,
    detector_ensemble_enqueue,
)
from tests.annotation.detecting import counts, evaluation, registered_model
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NETWORKS = [{"arch": "unet", "encoder": "tiny"}, {"arch": "dla", "encoder": "tiny"}]


def _metrics(pixel, dice):
    return {
        "evaluation": evaluation(
            pixel=pixel,
            case=counts(2, 0, 2, 0),
            truth=[1, 1, 0, 0],
            max_probs=[0.9, 0.8, 0.2, 0.1],
            dice=dice,
        )
    }


@pytest.fixture
def trained_run(phantom_dataset):
    """Run r2: U-Net and DLA trained on both folds of 2 (DLA the better network)."""
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    for fold in (0, 1):
        registered_model(
            dataset, run="r2", fold=fold, metrics=_metrics(counts(50, 20, 900, 30), 0.6)
        )
        registered_model(
            dataset,
            run="r2",
            arch="dla",
            fold=fold,
            metrics=_metrics(counts(60, 15, 900, 25), 0.7),
        )
    return dataset


def _register_ensemble(job: Job, pixel, dice) -> ModelVersion:
    """What the worker registers for an ensemble job (weights: a dummy file)."""
    mv = ModelVersion.objects.create(
        dataset=job.dataset,
        purpose="detector",
        arch="ensemble",
        encoder="mean",
        fold=job.params["fold"],
        config={k: v for k, v in job.params.items() if k not in ("train", "test")},
        metrics=_metrics(pixel, dice),
        job=job,
    )
    mv.weights.save(f"models/{mv.pk}.keras", ContentFile(b"not a real model"), save=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
    return mv


def test_an_ensemble_needs_two_networks_and_is_off_unless_asked():
    assert detector_config_validate({"networks": NETWORKS})["ensemble"] is False
    assert detector_config_validate({"networks": NETWORKS, "ensemble": True})["ensemble"] is True
    with pytest.raises(DetectorError, match="two or more networks"):
        detector_config_validate({"networks": NETWORKS[:1], "ensemble": True})
    with pytest.raises(DetectorError, match="true or false"):
        detector_config_validate({"networks": NETWORKS, "ensemble": "yes"})


def test_each_fold_gets_one_ensemble_of_exactly_its_own_networks(trained_run):
    fold0 = detector_ensemble_enqueue(run="r2", fold=0)
    assert detector_ensemble_enqueue(run="r2", fold=0) == fold0  # asked again: the same job
    fold1 = detector_ensemble_enqueue(run="r2", fold=1)
    assert Job.objects.filter(kind="ensemble").count() == 2
    for job, fold in ((fold0, 0), (fold1, 1)):
        members = ModelVersion.objects.filter(pk__in=job.params["members"])
        assert {(m.arch, m.fold) for m in members} == {("unet", fold), ("dla", fold)}
        assert job.params["network"] == {"arch": "ensemble", "encoder": "mean"}
        assert job.params["fold"] == fold and job.params["run"] == "r2"


def test_no_ensemble_before_every_network_of_the_fold_is_trained(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    registered_model(dataset, run="r3", fold=0)
    registered_model(dataset, run="r3", arch="dla", fold=0, state=Job.State.RUNNING)
    assert detector_ensemble_enqueue(run="r3", fold=0, strict=False) is None
    with pytest.raises(DetectorError, match="1 of the 2 networks on fold 1 are not trained"):
        detector_ensemble_enqueue(run="r3", fold=0)
    registered_model(dataset, run="r4", fold=None, protocol="split")
    with pytest.raises(DetectorError, match="one network on the fixed split"):
        detector_ensemble_enqueue(run="r4", fold=None)
    assert not Job.objects.filter(kind="ensemble").exists()


def test_the_report_sets_the_ensemble_against_its_best_network(client, trained_run):
    for fold in (0, 1):
        job = detector_ensemble_enqueue(run="r2", fold=fold)
        _register_ensemble(job, counts(70, 10, 900, 20), 0.75)
    report = run_report(run="r2")
    gain = report.ensemble_gain
    # Pixel F1: ensemble 140/(140+30) = 0.8235, best network (DLA) 120/(120+40) = 0.75.
    assert gain["best"].arch == "dla"
    assert gain["f1"] == pytest.approx(140 / 170) and gain["best_f1"] == pytest.approx(0.75)
    assert gain["dice_gain"] == pytest.approx(0.05)
    assert [n.key for n in report.networks][-1] == "ensemble/mean"

    client.force_login(UserFactory(roles=["researcher"]))
    page = client.get(reverse("detector_report", args=["r2"])).content.decode()
    assert 'id="ensemble-gain"' in page and "DLA · Tiny" in page and "+0.0735" in page
    assert "Evaluate the ensemble" not in page


def test_an_admin_asks_for_the_ensemble_of_a_finished_run_from_its_report(client, trained_run):
    url = reverse("detector_report", args=["r2"])
    client.force_login(UserFactory(roles=["researcher"]))
    assert "Evaluate the ensemble" not in client.get(url).content.decode()
    assert client.post(reverse("detector_ensemble", args=["r2"])).status_code == 403
    assert not Job.objects.filter(kind="ensemble").exists()

    client.force_login(UserFactory(roles=["admin"]))
    assert "Evaluate the ensemble" in client.get(url).content.decode()
    answer = client.post(reverse("detector_ensemble", args=["r2"]), follow=True)
    assert "being evaluated (2 job(s))" in answer.content.decode()
    assert sorted(j.params["fold"] for j in Job.objects.filter(kind="ensemble")) == [0, 1]
    page = client.get(url).content.decode()
    assert "Evaluate the ensemble" not in page and "Ensemble · mean probability" in page
