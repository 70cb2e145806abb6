"""The final detector: plan and launch its training runs, deploy one version, ask for maps.

A run is one launch: per network and fold one DETECTOR job, and (with Grad-CAM) per encoder
and fold one CLASSIFIER job, all carrying the same `run` name in their params; each job
registers one ModelVersion whose config carries it too. Cases are every COVID-19 case with an
accepted mask and every control (normal or other finding), whose mask is empty by definition.

Protocols (Degerli et al. 2021): "kfold" is the Group-I protocol, stratified k-fold
cross-validation with a patient's images in one fold; "split" is the Group-II protocol, the
dataset's fixed train/test split (Radiograph.split).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.models import Dataset, GroundTruth, Job, Label, ModelVersion, Radiograph, Split
from annotation.services.audit import audit_record
from annotation.services.jobs import job_enqueue
from mlworker.networks import ARCHS, PAPER_ENCODERS, check_networks, check_training, whole_number

log = logging.getLogger(__name__)

PROTOCOLS = ("kfold", "split")
CONTROL_LABELS = (Label.NORMAL, Label.OTHER)
PAPER_NETWORKS = [
    {"arch": arch, "encoder": encoder} for encoder in PAPER_ENCODERS for arch in ARCHS
]
DETECTOR_PRESETS: dict[str, dict[str, Any]] = {
    # Group I: 5-fold cross-validation, the twelve networks of Tables 2-3 and 8.
    "paper-group-1": {
        "networks": PAPER_NETWORKS,
        "protocol": "kfold",
        "folds": 5,
        "epochs": 50,
        "batch_size": 32,
        "image_size": 224,
        "lr": 1e-4,
        "frozen": False,
        "with_classifier": True,
        "classifier_epochs": 10,
        "classifier_lr": 1e-5,
        "ensemble": False,
    },
    # Group II: the fixed train/test split.
    "paper-group-2": {
        "networks": PAPER_NETWORKS,
        "protocol": "split",
        "folds": 1,
        "epochs": 50,
        "batch_size": 32,
        "image_size": 224,
        "lr": 1e-4,
        "frozen": False,
        "with_classifier": True,
        "classifier_epochs": 10,
        "classifier_lr": 1e-5,
        "ensemble": False,
    },
    # Tiny networks on small images: a whole run in minutes on a laptop CPU.
    "fast-cpu": {
        "networks": [{"arch": "unet", "encoder": "tiny"}, {"arch": "dla", "encoder": "tiny"}],
        "protocol": "kfold",
        "folds": 2,
        "epochs": 3,
        "batch_size": 8,
        "image_size": 64,
        "lr": 1e-3,
        "frozen": False,
        "with_classifier": True,
        "classifier_epochs": 3,
        "classifier_lr": 1e-3,
        "ensemble": False,
    },
}


class DetectorError(Exception):
    """The detector cannot do what was asked; the message says why."""


@dataclass
class DetectorRun:
    run: str
    jobs: list[Job]


def _number(config: dict, key: str, low: float, high: float, *, whole: bool = True):
    if whole:
        return whole_number(config, key, int(low), int(high), DetectorError)
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise DetectorError(f"{key} must be a number from {low:g} to {high:g}, not {value!r}")
    return value


def detector_config_validate(config: dict[str, Any]) -> dict[str, Any]:
    """A complete, checked copy of detector settings (fast-cpu defaults where missing)."""
    merged = {**DETECTOR_PRESETS["fast-cpu"], **config}
    networks = check_networks(merged["networks"], DetectorError)
    networks = [{"arch": n["arch"], "encoder": n["encoder"]} for n in networks]
    if len({(n["arch"], n["encoder"]) for n in networks}) != len(networks):
        raise DetectorError("each network may be chosen once")
    if merged["protocol"] not in PROTOCOLS:
        raise DetectorError(f"protocol must be kfold or split, not {merged['protocol']!r}")
    folds = _number(merged, "folds", 1, 20)
    if merged["protocol"] == "kfold" and folds < 2:
        raise DetectorError("k-fold cross-validation needs at least 2 folds")
    check_training(merged, networks, DetectorError)
    _number(merged, "lr", 1e-7, 0.5, whole=False)
    _number(merged, "classifier_epochs", 1, 1000)
    _number(merged, "classifier_lr", 1e-7, 0.5, whole=False)
    if not isinstance(merged["ensemble"], bool):
        raise DetectorError(f"ensemble is true or false, not {merged['ensemble']!r}")
    if merged["ensemble"] and len(networks) < 2:
        raise DetectorError("an ensemble combines two or more networks: choose at least two")
    return {
        **{k: merged[k] for k in DETECTOR_PRESETS["fast-cpu"]},
        "networks": networks,
        "frozen": bool(merged["frozen"]),
        "with_classifier": bool(merged["with_classifier"]),
        "seed": int(merged.get("seed") or 0),
    }


def detector_plan(*, dataset: Dataset, protocol: str, folds: int, seed: int = 0) -> dict[str, Any]:
    """Which cases each fold trains and tests on, without changing anything.

    Returns {"folds": [{"train": [[radiograph, mask or None]], "test": [...]}], "covid",
    "controls", "covid_without_truth"}; raises DetectorError when it cannot work.
    """
    truths = dict(
        GroundTruth.objects.filter(
            radiograph__dataset=dataset, radiograph__label=Label.COVID
        ).values_list("radiograph_id", "mask_id")
    )
    rows = list(
        Radiograph.objects.filter(dataset=dataset)
        .filter(Q(label=Label.COVID, ground_truth__isnull=False) | Q(label__in=CONTROL_LABELS))
        .only("id", "label", "split", "patient_key")
        .order_by("id")
    )
    cases = [[r.pk, truths[r.pk] if r.label == Label.COVID else None] for r in rows]
    n_covid = sum(1 for _r, m in cases if m is not None)
    n_control = len(cases) - n_covid
    missing = Radiograph.objects.filter(dataset=dataset, label=Label.COVID).count() - n_covid
    if n_covid == 0 or n_control == 0:
        raise DetectorError(
            f"the detector needs COVID-19 cases with accepted masks and control cases; "
            f"this dataset has {n_covid} and {n_control}"
        )
    if protocol == "split":
        by_split = {Split.TRAIN: [], Split.TEST: []}
        for row, case in zip(rows, cases, strict=True):
            if row.split in by_split:
                by_split[row.split].append(case)
        unassigned = len(cases) - len(by_split[Split.TRAIN]) - len(by_split[Split.TEST])
        if unassigned:
            raise DetectorError(
                f"{unassigned} case(s) have no train/test assignment: the fixed-split protocol "
                "needs every case in the train or the test set (use k-fold instead)"
            )
        splits = [{"train": by_split[Split.TRAIN], "test": by_split[Split.TEST]}]
    elif protocol == "kfold":
        from mlworker.data import kfold_splits  # numpy + scikit-learn, no Keras

        labels = [int(m is not None) for _r, m in cases]
        groups = [r.patient_group for r in rows]
        try:
            indices = kfold_splits(labels, groups, k=folds, seed=seed)
        except ValueError as exc:  # DataError, or scikit-learn on too few cases of a class
            raise DetectorError(f"cannot make {folds} folds: {exc}") from exc
        splits = [
            {"train": [cases[i] for i in train], "test": [cases[i] for i in test]}
            for train, test in indices
        ]
    else:
        raise DetectorError(f"protocol must be kfold or split, not {protocol!r}")
    for number, split in enumerate(splits, start=1):
        train_covid = sum(1 for _r, m in split["train"] if m is not None)
        if not split["test"] or train_covid in (0, len(split["train"])):
            where = f"fold {number}" if protocol == "kfold" else "the fixed split"
            raise DetectorError(
                f"{where} needs test cases and both COVID-19 and control cases to train on"
            )
    return {
        "folds": splits,
        "covid": n_covid,
        "controls": n_control,
        "covid_without_truth": missing,
    }


def _new_run_name() -> str:
    return f"{timezone.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def detector_launch(
    *, dataset: Dataset, config: dict[str, Any], by: AbstractBaseUser | None = None
) -> DetectorRun:
    """Queue one training job per network × fold (and per encoder × fold for Grad-CAM)."""
    settings = detector_config_validate(config)
    plan = detector_plan(
        dataset=dataset,
        protocol=settings["protocol"],
        folds=settings["folds"],
        seed=settings["seed"],
    )
    run = _new_run_name()
    common = {
        "run": run,
        "protocol": settings["protocol"],
        "folds": len(plan["folds"]),
        "batch_size": settings["batch_size"],
        "image_size": settings["image_size"],
        "seed": settings["seed"],
    }
    jobs = []
    with transaction.atomic():
        for net in settings["networks"]:
            for fold, split in enumerate(plan["folds"]):
                params = {
                    **common,
                    "network": net,
                    "fold": fold if settings["protocol"] == "kfold" else None,
                    "train": split["train"],
                    "test": split["test"],
                    "epochs": settings["epochs"],
                    "lr": settings["lr"],
                    "frozen": settings["frozen"],
                    "with_classifier": settings["with_classifier"],
                    # Once every network of this fold is trained, their mean is evaluated too.
                    "ensemble": settings["ensemble"],
                }
                jobs.append(_enqueue(Job.Kind.DETECTOR, params, dataset, by))
        encoders = (
            dict.fromkeys(n["encoder"] for n in settings["networks"])
            if settings["with_classifier"]
            else {}
        )
        for encoder in encoders:
            for fold, split in enumerate(plan["folds"]):
                params = {
                    **common,
                    "encoder": encoder,
                    "fold": fold if settings["protocol"] == "kfold" else None,
                    "train": split["train"],
                    "test": split["test"],
                    "epochs": settings["classifier_epochs"],
                    "lr": settings["classifier_lr"],
                }
                jobs.append(_enqueue(Job.Kind.CLASSIFIER, params, dataset, by))
    log.info("detector run %s on dataset %s: %d jobs", run, dataset.pk, len(jobs))
    return DetectorRun(run=run, jobs=jobs)


def _fold_filter(fold: int | None) -> Q:
    return Q(params__fold=None) if fold is None else Q(params__fold=fold)


def detector_ensemble_enqueue(
    *, run: str, fold: int | None, by: AbstractBaseUser | None = None, strict: bool = True
) -> Job | None:
    """Queue the evaluation of the mean of a run's trained networks on one fold (an ENSEMBLE
    job, registering a detector of its own that can be deployed like any other).

    Idempotent: a queued, running or finished ensemble of that fold is returned instead of a
    second one. Every network of the fold must be trained; otherwise DetectorError, or None
    with strict=False (a detector job asks after each network it trains, and the last one
    queues the ensemble)."""
    from mlworker.networks import ENSEMBLE, ENSEMBLE_ENCODER

    where = f"fold {fold + 1}" if fold is not None else "the fixed split"
    members = list(
        Job.objects.filter(Q(kind=Job.Kind.DETECTOR, params__run=run) & _fold_filter(fold))
        .select_related("dataset")
        .order_by("id")
    )
    if not members:
        raise DetectorError(f"run {run!r} has no detector networks on {where}")
    if len(members) < 2:
        raise DetectorError(f"run {run!r} trained one network on {where}: nothing to combine")
    dataset = members[0].dataset
    with transaction.atomic():
        # One ensemble per run and fold: the dataset row is the lock.
        Dataset.objects.select_for_update().get(pk=dataset.pk)
        existing = (
            Job.objects.filter(Q(kind=Job.Kind.ENSEMBLE, params__run=run) & _fold_filter(fold))
            .exclude(state__in=(Job.State.FAILED, Job.State.CANCELLED))
            .first()
        )
        if existing is not None:
            return existing
        models = dict(
            ModelVersion.objects.filter(job__in=members)
            .exclude(weights="")
            .values_list("job_id", "pk")
        )
        missing = [job for job in members if job.pk not in models]
        if missing:
            if not strict:
                return None
            raise DetectorError(
                f"{len(missing)} of the {len(members)} networks on {where} are not trained yet"
            )
        first = members[0].params
        params = {
            key: first[key]
            for key in ("run", "protocol", "folds", "fold", "batch_size", "image_size", "seed")
            if key in first
        }
        params.update(
            network={"arch": ENSEMBLE, "encoder": ENSEMBLE_ENCODER},
            members=[models[job.pk] for job in members],
            train=first["train"],
            test=first["test"],
        )
        job = _enqueue(Job.Kind.ENSEMBLE, params, dataset, by)
    log.info("detector run %s, %s: ensemble of %d networks queued", run, where, len(members))
    return job


def _enqueue(kind: str, params: dict, dataset: Dataset, by) -> Job:
    return job_enqueue(kind=kind, params=params, dataset=dataset, created_by=by)


def matching_classifier(detector: ModelVersion) -> ModelVersion | None:
    """The Grad-CAM classifier trained beside a detector: same run, encoder and fold."""
    return (
        ModelVersion.objects.filter(
            dataset_id=detector.dataset_id,
            purpose=ModelVersion.Purpose.CLASSIFIER,
            encoder=detector.encoder,
            fold=detector.fold,
            config__run=detector.config.get("run"),
        )
        .exclude(weights="")
        .order_by("-created_at")
        .first()
    )


def detector_deploy(
    *,
    model_version: ModelVersion,
    by: AbstractBaseUser | None = None,
    client_ip: str | None = None,
) -> ModelVersion:
    """Make this detector (and its matching classifier) the dataset's deployed ones, atomically."""
    with transaction.atomic():
        # One deploy per dataset at a time: the dataset row is the lock.
        Dataset.objects.select_for_update().get(pk=model_version.dataset_id)
        mv = ModelVersion.objects.get(pk=model_version.pk)
        if mv.purpose != ModelVersion.Purpose.DETECTOR:
            raise DetectorError(
                f"model #{mv.pk} is a {mv.get_purpose_display().lower()}, not a detector"
            )
        if not mv.weights:
            raise DetectorError(f"model #{mv.pk} has no weights file")
        classifier = matching_classifier(mv)
        deployed = ModelVersion.objects.filter(
            dataset_id=mv.dataset_id,
            purpose__in=(ModelVersion.Purpose.DETECTOR, ModelVersion.Purpose.CLASSIFIER),
            deployed=True,
        )
        before = sorted(deployed.values_list("pk", flat=True))
        ModelVersion.objects.filter(
            dataset_id=mv.dataset_id,
            purpose__in=(ModelVersion.Purpose.DETECTOR, ModelVersion.Purpose.CLASSIFIER),
            deployed=True,
        ).update(deployed=False)
        # Without a classifier of the same encoder none stays deployed: a Grad-CAM map of
        # another encoder would explain a different network.
        ids = [mv.pk] + ([classifier.pk] if classifier else [])
        ModelVersion.objects.filter(pk__in=ids).update(deployed=True)
        audit_record(
            action="detector.deploy",
            actor=by,
            ip=client_ip,
            target=mv,
            dataset=mv.dataset_id,
            old={"deployed": before},
            new={"deployed": sorted(ids)},
        )
    log.info("detector #%s deployed by %s", mv.pk, getattr(by, "username", "system"))
    mv.refresh_from_db()
    return mv


def deployed_detector(*, dataset: Dataset | None = None) -> ModelVersion:
    """The deployed detector of `dataset`; without one given, the newest deployed detector."""
    found = ModelVersion.objects.filter(purpose=ModelVersion.Purpose.DETECTOR, deployed=True)
    if dataset is not None:
        found = found.filter(dataset=dataset)
    mv = found.select_related("dataset").order_by("-created_at").first()
    if mv is None:
        where = f" for {dataset.name}" if dataset is not None else ""
        raise DetectorError(f"no detector is deployed{where}: train one and deploy it first")
    return mv


def deployed_classifier(*, detector: ModelVersion) -> ModelVersion | None:
    return ModelVersion.objects.filter(
        dataset_id=detector.dataset_id,
        purpose=ModelVersion.Purpose.CLASSIFIER,
        encoder=detector.encoder,
        deployed=True,
    ).first()
