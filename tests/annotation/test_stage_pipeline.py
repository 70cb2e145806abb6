"""A stage run by real Celery workers: training, out-of-fold predictions, candidates, review
tasks — and a worker killed mid-training whose job resumes from its checkpoint."""

from __future__ import annotations

import pytest
from django.db import transaction

from annotation.models import Candidate, Job, Mask, ModelVersion, ReviewTask, Stage
from annotation.services.jobs import job_claim
from annotation.services.stages import stage_create, stage_launch
from tests.support import jobs_and_logs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.keras]

ONE_NET = {"networks": [{"arch": "unet", "encoder": "tiny"}], "image_size": 64, "batch_size": 4}


def _launch(dataset, **config):
    stage = stage_create(dataset=dataset, preset="fast-cpu", config={**ONE_NET, **config})
    with transaction.atomic():
        stage_launch(stage=stage)
    return Stage.objects.get(pk=stage.pk)


def _status(stage):
    stage.refresh_from_db()
    return stage.status == Stage.Status.REVIEWING


def test_a_worker_turns_a_launched_stage_into_review_tasks(phantom_dataset, worker_process):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    stage = _launch(dataset, epochs=1)
    wait_for(
        lambda: _status(stage),
        what="the stage to reach review",
        timeout=300,
        every=0.5,
        explain=jobs_and_logs(worker_process),
    )

    models = list(ModelVersion.objects.filter(stage=stage))
    assert len(models) == 2  # one network, two folds
    for mv in models:
        assert mv.weights.name and len(mv.weights_sha256) == 64 and mv.params_trainable > 0
        trained_on = set(mv.training_set)
        predicted = set(
            Mask.objects.filter(model_version=mv).values_list("radiograph_id", flat=True)
        )
        assert predicted and not trained_on & predicted, (
            "a network proposed a mask for a case it trained on"
        )
    targets = stage.config["targets"]
    for radiograph_id in targets:
        kinds = sorted(
            m.kind
            for c in Candidate.objects.filter(stage=stage, radiograph_id=radiograph_id)
            for m in c.sources.all()
        )
        assert kinds == ["manual", "network"]
    assert ReviewTask.objects.filter(stage=stage).count() == len(targets)
    train = Job.objects.get(stage=stage, kind="train", params__fold=0)
    assert train.progress == 1.0 and train.progress_detail["curve"][0]["epoch"] == 1


def test_a_training_job_whose_worker_dies_resumes_and_the_stage_completes(
    phantom_dataset, start_worker
):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    first = start_worker()
    stage = _launch(dataset, epochs=4, folds=2)

    def a_job_past_epoch_two():
        return Job.objects.filter(
            stage=stage, kind="train", state="running", progress_detail__curve__1__epoch=2
        ).first()

    job = wait_for(
        a_job_past_epoch_two,
        what="a job to checkpoint epoch 2",
        timeout=300,
        every=0.5,
        explain=jobs_and_logs(first),
    )
    first.kill_hard()  # the whole worker, mid-training

    second = start_worker(first.node_name)  # the machine comes back
    wait_for(
        lambda: _status(stage),
        what="the stage to complete",
        timeout=400,
        every=0.5,
        explain=jobs_and_logs(first, second),
    )

    job.refresh_from_db()
    assert job.state == "succeeded" and job.attempts == 2
    epochs_seen = [row["epoch"] for row in job.progress_detail["curve"]]
    assert epochs_seen == [1, 2, 3, 4]
    assert job.progress_detail["resumed_from_epoch"] >= 2, (
        "the rerun started over instead of resuming"
    )
    assert "resuming from the checkpoint of epoch" in job.log
    assert ModelVersion.objects.filter(job=job).count() == 1
    # No duplicate candidates or predictions anywhere.
    for radiograph_id in stage.config["targets"]:
        predicted = Mask.objects.filter(radiograph_id=radiograph_id, kind="network")
        # One prediction, and one outline-normalised form of it (what readers see).
        assert predicted.filter(normalised_from__isnull=True).count() == 1
        assert predicted.filter(normalised_from__isnull=False).count() == 1
        assert Candidate.objects.filter(stage=stage, radiograph_id=radiograph_id).count() <= 2


class _Died(BaseException):
    """The worker process dying (not an error the job runner would record)."""


@pytest.mark.django_db
def test_a_worker_dying_between_a_checkpoint_and_its_report_leaves_no_gap_in_the_curve(
    phantom_dataset,
):
    from annotation.worker.runner import JobContext
    from annotation.worker.tasks.segmentation import _train

    dataset, _ = phantom_dataset(n_covid=6, n_control=0, manual_fraction=1.0)
    stage = _launch(dataset, epochs=2, folds=2)
    job = Job.objects.filter(stage=stage, kind="train").first()
    assert job_claim(job_id=job.pk, worker="node:1") is not None

    class DiesBeforeReportingEpochTwo(JobContext):
        def progress(self, fraction=None, *, force=False, **detail):
            if any(row["epoch"] == 2 for row in detail.get("curve", [])):
                raise _Died  # epoch 2's checkpoint is in storage, its report never lands
            super().progress(fraction, force=force, **detail)

    with pytest.raises(_Died):
        _train(DiesBeforeReportingEpochTwo(Job.objects.get(pk=job.pk)))
    job.refresh_from_db()
    assert [row["epoch"] for row in job.progress_detail["curve"]] == [1]

    result = _train(JobContext(Job.objects.get(pk=job.pk)))  # the rerun, same claim
    job.refresh_from_db()
    assert job.progress_detail["resumed_from_epoch"] == 2
    curve = job.progress_detail["curve"]
    assert [row["epoch"] for row in curve] == [1, 2]
    assert all(isinstance(row["loss"], float) for row in curve)
    assert ModelVersion.objects.get(pk=result["model_version"]).job_id == job.pk


def test_a_stage_with_start_weights_trains_from_them(phantom_dataset, worker_process, tmp_path):
    """A network that marks every pixel, saved as the stage's start weights and barely
    fine-tuned: every candidate it proposes is the whole image. A missing file fails the
    job with a message naming it."""
    import numpy as np

    from mlworker.nets import build_segmenter

    folder = tmp_path / "previous-study"
    folder.mkdir()
    model = build_segmenter("unet", "tiny", input_shape=(64, 64, 3))
    logits = model.get_layer("mask_logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.full_like(bias, 30.0)])
    model.save(folder / "unet-tiny-64.keras")
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    stage = _launch(dataset, epochs=1, learning_rate=1e-7, start_weights=str(folder))
    wait_for(
        lambda: _status(stage),
        what="the stage to reach review",
        timeout=300,
        every=0.5,
        explain=jobs_and_logs(worker_process),
    )
    masks = Mask.objects.filter(stage=stage, kind="network", normalised_from__isnull=True)
    assert masks.count() == len(stage.config["targets"])
    assert all(m.area == m.width * m.height for m in masks)


def test_missing_start_weights_fail_the_job_naming_the_file(
    phantom_dataset, worker_process, tmp_path
):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    stage = _launch(dataset, epochs=1, start_weights=str(tmp_path / "nowhere"))

    def failed():
        return Job.objects.filter(stage=stage, kind="train", state=Job.State.FAILED).exists()

    wait_for(failed, what="a training job to fail", timeout=120, every=0.5,
             explain=jobs_and_logs(worker_process))  # fmt: skip
    job = Job.objects.filter(stage=stage, kind="train", state=Job.State.FAILED).first()
    assert "nowhere/unet-tiny-64.keras not found" in job.error
