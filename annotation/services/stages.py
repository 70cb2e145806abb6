"""A stage's life: create → launch (train jobs) → predict jobs → candidates and review tasks
→ reviewing → every case accepted → closed.

`stage_advance` moves a stage on from whatever its jobs have reached. It is idempotent and
safe to call from any job's end and from the periodic sweep, so a worker dying between
"job done" and "stage moved on" only delays the stage, never strands it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Candidate, Dataset, GroundTruth, Job, Label, Mask, Radiograph, Stage
from annotation.presets import PRESETS, StageConfigError, stage_config_validate
from annotation.services.assignment import review_tasks_create
from annotation.services.audit import audit_record
from annotation.services.candidates import candidates_offer
from annotation.services.consensus_masks import combined_candidates_offer
from annotation.services.disagreement import case_disagreements_refresh, stage_auto_accept
from annotation.services.jobs import job_enqueue, stage_jobs_cancel

log = logging.getLogger(__name__)

PREDICT_SHARD = 256
OPEN_STATUSES = (
    Stage.Status.DRAFT,
    Stage.Status.TRAINING,
    Stage.Status.PREDICTING,
    Stage.Status.REVIEWING,
)


class StageError(Exception):
    """The stage cannot do what was asked; the message says why."""


def stage_create(
    *,
    dataset: Dataset,
    preset: str | None = None,
    config: dict[str, Any] | None = None,
    created_by: AbstractBaseUser | None = None,
    name: str = "",
    client_ip: str | None = None,
) -> Stage:
    """A draft stage from a preset, custom settings, or a preset with overrides."""
    if preset is not None and preset not in PRESETS:
        raise StageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        settings = stage_config_validate({**PRESETS.get(preset or "", {}), **(config or {})})
    except StageConfigError as exc:
        raise StageError(str(exc)) from exc
    with transaction.atomic():
        Dataset.objects.select_for_update().get(pk=dataset.pk)
        busy = dataset.stages.filter(status__in=OPEN_STATUSES).first()
        if busy is not None:
            raise StageError(
                f"Stage {busy.number} is still {busy.get_status_display().lower()}: close or cancel it first"
            )
        number = (dataset.stages.aggregate(n=Max("number"))["n"] or 0) + 1
        stage = Stage.objects.create(
            dataset=dataset,
            number=number,
            name=name or f"Stage {number}",
            mode=settings["mode"],
            preset=preset or "",
            config=settings,
            readers_per_case=settings["readers_per_case"],
            queue_order=settings["queue_order"],
            created_by=created_by,
        )
        audit_record(
            action="stage.create",
            actor=created_by,
            ip=client_ip,
            target=stage,
            dataset=dataset,
            new={"number": number, "name": stage.name, "preset": stage.preset, "config": settings},
        )
        return stage


def _covid_without_truth(dataset: Dataset):
    return Radiograph.objects.filter(dataset=dataset, label=Label.COVID, ground_truth__isnull=True)


def stage_plan(*, stage: Stage) -> dict[str, Any]:
    """What launching the stage would train on and predict, without changing anything."""
    config = stage.config
    dataset = stage.dataset
    if stage.mode == Stage.Mode.PAIRWISE:
        # Stage I: the cases with a manual mask, in k folds grouped by patient; each network
        # predicts only the fold it did not train on.
        manual = {
            r: m
            for r, m in Mask.objects.filter(
                radiograph__in=_covid_without_truth(dataset),
                kind=Mask.Kind.MANUAL,
                normalised_from__isnull=True,
            )
            .order_by("radiograph_id", "id")
            .values_list("radiograph_id", "id")
        }
        ids = sorted(manual)
        k = config["folds"]
        if len(ids) < 2 * k:
            raise StageError(
                f"{len(ids)} COVID-19 cases without an accepted mask have a manual mask: "
                f"{k}-fold cross-validation needs at least {2 * k}"
            )
        groups = dict(Radiograph.objects.filter(id__in=ids).values_list("id", "patient_key"))
        from mlworker.data import kfold_splits

        folds = kfold_splits(
            [1] * len(ids), [groups[i] or f"case-{i}" for i in ids], k=k, seed=stage.pk or 0
        )
        return {
            "training": [[i, manual[i]] for i in ids],
            "targets": ids,
            "folds": [[ids[j] for j in test] for _train, test in folds],
        }
    truths = dict(
        GroundTruth.objects.filter(radiograph__dataset=dataset).values_list(
            "radiograph_id", "mask_id"
        )
    )
    if not truths:
        raise StageError("no case has an accepted mask yet: start with a pairwise Stage I")
    targets = sorted(_covid_without_truth(dataset).values_list("id", flat=True))
    if not targets:
        raise StageError("every COVID-19 case already has an accepted mask")
    return {
        "training": [[r, m] for r, m in sorted(truths.items())],
        "targets": targets,
        "folds": None,
    }


def _train_params(stage: Stage, net: dict, *, training, predict, fold) -> dict[str, Any]:
    config = stage.config
    return {
        "purpose": "candidate",
        "network": net,
        "frozen": config["frozen"],
        "epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "image_size": config["image_size"],
        "learning_rate": config["learning_rate"],
        "augment": config["augment"],
        "start_weights": config.get("start_weights", ""),
        "seed": int(net.get("seed", 0)),
        "fold": fold,
        "training": training,
        "predict": predict,
    }


def stage_launch(
    *, stage: Stage, by: AbstractBaseUser | None = None, client_ip: str | None = None
) -> list[Job]:
    """Start training: one job per network (and per fold in Stage I)."""
    with transaction.atomic():
        stage = Stage.objects.select_for_update().get(pk=stage.pk)
        if stage.status != Stage.Status.DRAFT:
            raise StageError(
                f"Stage {stage.number} is {stage.get_status_display().lower()}, not a draft"
            )
        plan = stage_plan(stage=stage)
        jobs = []
        for net in stage.config["networks"]:
            if plan["folds"] is None:
                splits = [(None, plan["training"], plan["targets"])]
            else:
                splits = []
                for fold, held_out in enumerate(plan["folds"]):
                    held = set(held_out)
                    splits.append(
                        (fold, [c for c in plan["training"] if c[0] not in held], held_out)
                    )
            for fold, training, predict in splits:
                params = _train_params(stage, net, training=training, predict=predict, fold=fold)
                jobs.append(
                    job_enqueue(
                        kind=Job.Kind.TRAIN,
                        params=params,
                        dataset=stage.dataset,
                        stage=stage,
                        created_by=by,
                    )
                )
        stage.status = Stage.Status.TRAINING
        stage.launched_at = timezone.now()
        stage.config = {**stage.config, "targets": plan["targets"]}
        stage.save(update_fields=["status", "launched_at", "config"])
        audit_record(
            action="stage.launch",
            actor=by,
            ip=client_ip,
            target=stage,
            dataset=stage.dataset_id,
            old={"status": Stage.Status.DRAFT},
            new={"status": stage.status, "jobs": [j.pk for j in jobs]},
        )
    log.info("stage %s launched with %d training jobs", stage.pk, len(jobs))
    return jobs


def _enqueue_predictions(stage: Stage, train_job: Job) -> int:
    model_version = train_job.model_version
    ids = train_job.params["predict"]
    for start in range(0, len(ids), PREDICT_SHARD):
        job_enqueue(
            kind=Job.Kind.PREDICT,
            params={
                "model_version": model_version.pk,
                "train_job": train_job.pk,
                "radiographs": ids[start : start + PREDICT_SHARD],
                "image_size": train_job.params["image_size"],
            },
            dataset=stage.dataset,
            stage=stage,
        )
    return len(ids)


def _finish_candidates(stage: Stage) -> None:
    targets = stage.config.get("targets", [])
    if stage.mode == Stage.Mode.PAIRWISE:
        # Stage I: the manual mask competes with the network masks.
        for mask in Mask.objects.filter(
            radiograph_id__in=targets, kind=Mask.Kind.MANUAL, normalised_from__isnull=True
        ).select_related("radiograph"):
            candidates_offer(stage=stage, radiograph=mask.radiograph, masks=[mask])
    combined_candidates_offer(stage=stage, radiograph_ids=targets)
    missing = set(targets) - set(
        Candidate.objects.filter(stage=stage).values_list("radiograph_id", flat=True)
    )
    if missing:
        raise StageError(f"{len(missing)} case(s) got no candidate mask")
    # Figures of cases whose candidates came after the prediction worker computed them (the
    # manual masks above, a network finishing alongside another).
    case_disagreements_refresh(stage=stage)
    accepted, audited = stage_auto_accept(stage=stage)
    if accepted or audited:
        log.info(
            "stage %s: %d case(s) auto-accepted by agreement, %d sent to readers as audit samples",
            stage.pk,
            accepted,
            audited,
        )
    review_tasks_create(stage=stage)
    if accepted:
        # Every case may be accepted already: the stage then closes without a reader.
        transaction.on_commit(lambda: stage_maybe_close(stage=stage))


def stage_advance(*, stage: Stage) -> str:
    """Move the stage on as far as its jobs allow. Returns the stage's status."""
    with transaction.atomic():
        stage = Stage.objects.select_for_update().get(pk=stage.pk)
        if stage.status not in (Stage.Status.TRAINING, Stage.Status.PREDICTING):
            return stage.status
        train = list(stage.jobs.filter(kind=Job.Kind.TRAIN))
        predict = list(stage.jobs.filter(kind=Job.Kind.PREDICT))
        predicted_for = {j.params.get("train_job") for j in predict}
        for job in train:
            if job.state == Job.State.SUCCEEDED and job.pk not in predicted_for:
                _enqueue_predictions(stage, job)
                predicted_for.add(job.pk)
                stage.status = Stage.Status.PREDICTING
        predict = list(stage.jobs.filter(kind=Job.Kind.PREDICT))
        every_model_predicted = all(j.pk in predicted_for for j in train)
        if (
            train
            and predict
            and every_model_predicted
            and all(j.state == Job.State.SUCCEEDED for j in train + predict)
        ):
            _finish_candidates(stage)
            stage.status = Stage.Status.REVIEWING
        stage.save(update_fields=["status"])
        return stage.status


def stage_maybe_close(*, stage: Stage) -> bool:
    """Close a reviewing stage once each of its cases has an accepted mask.

    Called after every accepted case: while a case still lacks its mask (the answer for all
    but the last one) that is seen without locking the stage, so readers' decisions do not
    queue on the stage row. It runs after the caller's commit, so whichever case is accepted
    last sees every other one and takes the locked path below."""
    cases = Candidate.objects.filter(stage=stage).values("radiograph_id")
    if Radiograph.objects.filter(id__in=cases, ground_truth__isnull=True).exists():
        return False
    with transaction.atomic():
        stage = Stage.objects.select_for_update().get(pk=stage.pk)
        if stage.status != Stage.Status.REVIEWING:
            return False
        # The stage's cases are those offered candidates (every target of a launched stage is).
        cases = Candidate.objects.filter(stage=stage).values("radiograph_id").distinct()
        if not cases.exists():
            return False
        if Radiograph.objects.filter(id__in=cases, ground_truth__isnull=True).exists():
            return False
        targets = list(cases)
        stage.status = Stage.Status.CLOSED
        stage.closed_at = timezone.now()
        stage.save(update_fields=["status", "closed_at"])
    log.info("stage %s closed: %d cases accepted", stage.pk, len(targets))
    return True


def stage_cancel(
    *, stage: Stage, by: AbstractBaseUser | None = None, client_ip: str | None = None
) -> Stage:
    """Stop a stage that has not started review; its jobs are cancelled, nothing accepted is touched."""
    with transaction.atomic():
        stage = Stage.objects.select_for_update().get(pk=stage.pk)
        if stage.status not in (Stage.Status.DRAFT, Stage.Status.TRAINING, Stage.Status.PREDICTING):
            raise StageError(
                f"Stage {stage.number} is {stage.get_status_display().lower()} and cannot be cancelled"
            )
        old = stage.status
        cancelled = stage_jobs_cancel(stage=stage)
        stage.status = Stage.Status.CANCELLED
        stage.save(update_fields=["status"])
        audit_record(
            action="stage.cancel",
            actor=by,
            ip=client_ip,
            target=stage,
            dataset=stage.dataset_id,
            old={"status": old},
            new={"status": stage.status, "jobs_cancelled": cancelled},
        )
    return stage
