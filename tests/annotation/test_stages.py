"""A stage's life, driven through its services with the workers' part simulated."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import (
    Candidate,
    GroundTruth,
    Job,
    Mask,
    ModelVersion,
    Radiograph,
    ReviewTask,
    Stage,
)
from annotation.services import jobs as job_services
from annotation.services.candidates import mask_create
from annotation.services.model_versions import prediction_record
from annotation.services.stages import (
    StageError,
    stage_advance,
    stage_cancel,
    stage_create,
    stage_launch,
    stage_maybe_close,
)
from cxrio.masks import mask_to_png_0_255

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]


def _finish_training(stage):
    """What a worker does for each training job: register a model and succeed."""
    for job in stage.jobs.filter(kind=Job.Kind.TRAIN):
        net = job.params["network"]
        ModelVersion.objects.create(
            dataset=stage.dataset, stage=stage, purpose="candidate", arch=net["arch"],
            encoder=net["encoder"], fold=job.params["fold"], job=job,
        )  # fmt: skip
        job.state = Job.State.SUCCEEDED
        job.save()


def _finish_predictions(stage, *, rng):
    """What a worker does for each prediction job: a network mask per case, offered as candidate."""
    for job in stage.jobs.filter(kind=Job.Kind.PREDICT):
        mv = ModelVersion.objects.get(pk=job.params["model_version"])
        for radiograph in Radiograph.objects.filter(id__in=job.params["radiographs"]):
            pixels = rng.random((radiograph.work_height, radiograph.work_width)) > 0.7
            prediction_record(
                stage=stage,
                radiograph=radiograph,
                model_version=mv,
                pixels=pixels,
                # A network certain of every pixel: its probability map is the mask itself.
                probability_png=mask_to_png_0_255(pixels),
            )
        job.state = Job.State.SUCCEEDED
        job.save()


def test_a_stage_starts_as_a_draft_from_a_preset(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=6, n_control=2)
    stage = stage_create(dataset=dataset, preset="paper-stage-1")
    assert (stage.number, stage.status, stage.mode) == (1, "draft", "pairwise")
    assert [n["arch"] for n in stage.config["networks"]] == ["unet", "unetpp", "dla"]
    assert {n["encoder"] for n in stage.config["networks"]} == {"densenet121"}
    assert stage.config["folds"] == 5


def test_only_one_stage_of_a_dataset_is_open_at_a_time(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=6, n_control=2)
    stage_create(dataset=dataset, preset="fast-cpu")
    with pytest.raises(StageError, match="Stage 1 is still draft"):
        stage_create(dataset=dataset, preset="fast-cpu")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"image_size": 50}, "image_size must be a multiple of 32"),
        (
            {"mode": "nway", "folds": 1, "networks": [{"arch": "unet", "encoder": "tiny"}]},
            "2 to 6 networks",
        ),
        ({"networks": [{"arch": "segnet", "encoder": "tiny"}]}, "a network is an architecture"),
        ({"folds": 1}, "Stage I needs at least 2 folds"),
        ({"epochs": 0}, "epochs must be a whole number from 1"),
        (
            {"networks": [{"arch": "unet", "encoder": "inceptionv3"}], "image_size": 64},
            "Inception-v3 needs",
        ),
        ({"start_weights": 3}, "start_weights is a folder name or empty"),
    ],
)
def test_impossible_settings_are_refused_with_a_reason(phantom_dataset, config, message):
    dataset, _ = phantom_dataset(n_covid=4, n_control=0)
    with pytest.raises(StageError, match=message):
        stage_create(dataset=dataset, preset="fast-cpu", config=config)
    assert not Stage.objects.exists()


def test_stage_one_trains_each_network_on_folds_and_predicts_only_unseen_cases(
    phantom_dataset, broker
):
    dataset, _ = phantom_dataset(n_covid=12, n_control=4, manual_fraction=1.0)
    stage = stage_create(dataset=dataset, preset="fast-cpu")
    jobs = stage_launch(stage=stage)
    stage.refresh_from_db()
    assert stage.status == "training"
    assert len(jobs) == 3 * 2  # three networks, two folds
    targets = set(stage.config["targets"])
    assert targets == set(
        Mask.objects.filter(kind="manual", radiograph__label="covid").values_list(
            "radiograph_id", flat=True
        )
    )
    patient = dict(Radiograph.objects.values_list("id", "patient_key"))
    for job in jobs:
        trained = {r for r, _m in job.params["training"]}
        predicted = set(job.params["predict"])
        assert not trained & predicted, (
            "a network must never propose a mask for a case it was trained on"
        )
        assert trained | predicted == targets
        # A patient's images stay on one side.
        assert not {patient[r] for r in trained} & {patient[r] for r in predicted}
    for net in stage.config["networks"]:
        mine = [j for j in jobs if j.params["network"] == net]
        assert sorted(r for j in mine for r in j.params["predict"]) == sorted(targets)
    with pytest.raises(StageError, match="not a draft"):
        stage_launch(stage=stage)


def test_demo_stages_train_from_start_weights_at_a_fine_tuning_rate(phantom_dataset, broker):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    stage = stage_create(dataset=dataset, preset="demo-stage-1")
    assert (stage.config["start_weights"], stage.config["learning_rate"]) == ("demo", 1e-4)
    jobs = stage_launch(stage=stage)
    assert {(j.params["start_weights"], j.params["learning_rate"]) for j in jobs} == {
        ("demo", 1e-4)
    }
    # Without the setting, networks start from random weights, as before.
    other, _ = phantom_dataset(n_covid=4, n_control=0, name="other")
    plain = stage_create(dataset=other, preset="fast-cpu")
    assert plain.config["start_weights"] == ""


def test_stage_one_needs_enough_manual_masks(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=3, n_control=1, manual_fraction=1.0)
    stage = stage_create(dataset=dataset, preset="fast-cpu")
    with pytest.raises(StageError, match="needs at least 4"):
        stage_launch(stage=stage)
    stage.refresh_from_db()
    assert stage.status == "draft" and not Job.objects.exists()


def test_the_stage_moves_from_training_to_review(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    stage = stage_create(dataset=dataset, preset="fast-cpu")
    stage_launch(stage=stage)
    stage.refresh_from_db()
    assert stage_advance(stage=stage) == "training"  # nothing finished yet

    _finish_training(stage)
    assert stage_advance(stage=stage) == "predicting"
    predict_jobs = stage.jobs.filter(kind=Job.Kind.PREDICT)
    assert predict_jobs.count() == 6
    assert stage_advance(stage=stage) == "predicting"  # idempotent: no second batch of predictions
    assert stage.jobs.filter(kind=Job.Kind.PREDICT).count() == 6

    _finish_predictions(stage, rng=np.random.default_rng(0))
    assert stage_advance(stage=stage) == "reviewing"
    targets = stage.config["targets"]
    for radiograph_id in targets:
        candidates = Candidate.objects.filter(stage=stage, radiograph_id=radiograph_id)
        kinds = {m.kind for c in candidates for m in c.sources.all()}
        # The manual mask competes with the three networks' masks.
        assert kinds == {"manual", "network"}
        assert candidates.count() == 4
    assert ReviewTask.objects.filter(stage=stage).count() == len(targets)


def test_stage_two_trains_on_accepted_masks_and_predicts_the_rest(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=10, n_control=2, manual_fraction=0.5)
    covid = list(Radiograph.objects.filter(dataset=dataset, label="covid").order_by("id"))
    for radiograph in covid[:4]:
        mask = mask_create(radiograph=radiograph, pixels=np.ones((64, 64), bool), kind="drawn")
        GroundTruth.objects.create(
            radiograph=radiograph, mask=mask, source="drawn", method="single"
        )
    stage = stage_create(dataset=dataset, preset="fast-cpu-nway")
    jobs = stage_launch(stage=stage)
    assert len(jobs) == 5
    for job in jobs:
        assert sorted(r for r, _ in job.params["training"]) == sorted(r.pk for r in covid[:4])
        assert job.params["predict"] == sorted(r.pk for r in covid[4:])
    assert {tuple(sorted(j.params["network"].items())) for j in jobs}.__len__() == 5


def test_a_stage_closes_when_every_case_is_accepted(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=8, n_control=0, manual_fraction=1.0)
    stage = stage_create(dataset=dataset, preset="fast-cpu")
    stage_launch(stage=stage)
    stage.refresh_from_db()
    _finish_training(stage)
    stage_advance(stage=stage)
    _finish_predictions(stage, rng=np.random.default_rng(1))
    stage_advance(stage=stage)
    targets = stage.config["targets"]
    for radiograph_id in targets:
        assert not stage_maybe_close(stage=stage)
        candidate = Candidate.objects.filter(stage=stage, radiograph_id=radiograph_id).first()
        GroundTruth.objects.create(
            radiograph_id=radiograph_id,
            mask=candidate.mask,
            stage=stage,
            source="manual",
            method="single",
        )
    assert stage_maybe_close(stage=stage)
    stage.refresh_from_db()
    assert stage.status == "closed" and stage.closed_at is not None
    # The next stage can be created now.
    assert stage_create(dataset=dataset, preset="fast-cpu-nway").number == 2


def test_cancelling_a_stage_cancels_its_jobs(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=8, n_control=0, manual_fraction=1.0)
    stage = stage_create(dataset=dataset, preset="fast-cpu")
    jobs = stage_launch(stage=stage)
    job_services.job_claim(job_id=jobs[0].pk, worker="w:1")
    stage_cancel(stage=stage)
    states = dict(Job.objects.values_list("id", "state"))
    assert states[jobs[0].pk] == "running" and Job.objects.get(pk=jobs[0].pk).cancel_requested
    assert {states[j.pk] for j in jobs[1:]} == {"cancelled"}
    stage.refresh_from_db()
    assert stage.status == "cancelled"
