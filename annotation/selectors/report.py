"""The evaluation report of a detector run, as the paper's Tables 2-8 lay it out.

Per network: segmentation (pixel level) and detection (case level) scores with 95 % CIs,
averaged over folds (k-fold) or of the one test set (fixed split); cumulative confusion
matrices; ROC and precision-recall curves over every test case; parameter counts and
milliseconds per sample. Per encoder the Grad-CAM classifier's detection scores beside them.
Every number comes from the ModelVersion rows the training jobs registered; a run still
training shows what is done so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import Count, Min, Q
from django.db.models.fields.json import KT

from annotation.models import Dataset, Job, ModelVersion
from mlworker.curves import PrCurve, RocCurve, ScoreHistogram, precision_recall_curve, roc_curve
from mlworker.metrics import Counts, FoldSummary, fold_summary
from mlworker.networks import ARCHS, ENCODERS, ENSEMBLE, encoder_label, network_label

RUN_KINDS = (Job.Kind.DETECTOR, Job.Kind.ENSEMBLE, Job.Kind.CLASSIFIER)
# The paper's columns, in its order.
METRICS = ("sensitivity", "specificity", "precision", "f1", "f2", "accuracy")
METRIC_LABELS = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision",
    "f1": "F1-Score",
    "f2": "F2-Score",
    "accuracy": "Accuracy",
    "iou": "IoU",
}
PROTOCOL_LABELS = {
    "kfold": "stratified k-fold cross-validation (Group I)",
    "split": "fixed train/test split (Group II)",
}


@dataclass
class RunSummary:
    run: str
    dataset: Dataset
    protocol: str
    created_at: Any
    total: int
    done: int
    failed: int
    active: int


def detector_runs(*, dataset: Dataset | None = None) -> list[RunSummary]:
    """Every detector run, newest first, with how many of its jobs have finished."""
    jobs = Job.objects.filter(kind__in=RUN_KINDS)
    if dataset is not None:
        jobs = jobs.filter(dataset=dataset)
    rows = (
        jobs.annotate(run=KT("params__run"), protocol=KT("params__protocol"))
        .values("run", "dataset_id", "protocol")
        .annotate(
            total=Count("id"),
            first_at=Min("created_at"),
            done=Count("id", filter=_state(Job.State.SUCCEEDED)),
            failed=Count("id", filter=_state(Job.State.FAILED)),
            active=Count("id", filter=_state(Job.State.QUEUED) | _state(Job.State.RUNNING)),
        )
        .order_by("-first_at")
    )
    datasets = Dataset.objects.in_bulk({row["dataset_id"] for row in rows})
    return [
        RunSummary(
            run=row["run"],
            dataset=datasets[row["dataset_id"]],
            protocol=row["protocol"],
            created_at=row["first_at"],
            total=row["total"],
            done=row["done"],
            failed=row["failed"],
            active=row["active"],
        )
        for row in rows
        if row["run"]
    ]


def _state(state: str) -> Q:
    return Q(state=state)


@dataclass
class NetworkReport:
    """One network of a run (or one Grad-CAM classifier, with only case-level numbers)."""

    key: str
    label: str
    arch: str
    encoder: str
    models: list[ModelVersion]
    folds_total: int
    pixel: FoldSummary | None = None
    pixel_covid: FoldSummary | None = None
    case: FoldSummary | None = None
    pixel_roc: RocCurve | None = None
    pixel_pr: PrCurve | None = None
    case_roc: RocCurve | None = None
    case_pr: PrCurve | None = None
    mean_dice: float | None = None
    ms_per_sample: float | None = None
    params_trainable: int | None = None
    params_non_trainable: int | None = None

    @property
    def params_text(self) -> tuple[str, str]:
        """(trainable, non-trainable) as the paper prints them: 6,234,113."""
        return tuple(
            "—" if n is None else f"{n:,}"
            for n in (self.params_trainable, self.params_non_trainable)
        )

    @property
    def folds_done(self) -> int:
        return len(self.models)

    @property
    def complete(self) -> bool:
        return self.folds_done == self.folds_total


@dataclass
class RunReport:
    run: str
    dataset: Dataset
    protocol: str
    protocol_label: str
    settings: dict[str, Any]
    n_test_cases: int
    jobs: dict[str, int]
    networks: list[NetworkReport] = field(default_factory=list)
    classifiers: list[NetworkReport] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.jobs.get("total", 0) == self.jobs.get(Job.State.SUCCEEDED, 0)

    @property
    def ensemble(self) -> NetworkReport | None:
        return next((n for n in self.networks if n.arch == ENSEMBLE), None)

    @property
    def ensemble_gain(self) -> dict[str, Any] | None:
        """The ensemble against its best network, on the folds both have finished: pixel F1
        (mean over folds) and mean per-image Dice, and the difference."""
        ensemble = self.ensemble
        members = [n for n in self.networks if n.arch != ENSEMBLE and n.pixel is not None]
        if ensemble is None or ensemble.pixel is None or not members:
            return None
        folds = {mv.fold for mv in ensemble.models}
        best = None
        for network in members:
            if {mv.fold for mv in network.models} >= folds and (
                best is None or network.pixel.mean["f1"].value > best.pixel.mean["f1"].value
            ):
                best = network
        if best is None or not ensemble.complete:
            return None
        f1, best_f1 = ensemble.pixel.mean["f1"].value, best.pixel.mean["f1"].value
        dice_gain = ensemble.mean_dice - best.mean_dice
        return {
            "best": best,
            "f1": f1,
            "best_f1": best_f1,
            "f1_gain": f1 - best_f1,
            "f1_gain_text": f"{f1 - best_f1:+.4f}",
            "dice": ensemble.mean_dice,
            "best_dice": best.mean_dice,
            "dice_gain": dice_gain,
            "dice_gain_text": f"{dice_gain:+.4f}",
        }

    @property
    def can_ensemble(self) -> bool:
        """Two or more networks, all trained, and no ensemble yet: one can be evaluated."""
        networks = [n for n in self.networks if n.arch != ENSEMBLE]
        return self.ensemble is None and len(networks) >= 2 and all(n.complete for n in networks)


class RunNotFound(LookupError):
    pass


def _counts(data: dict[str, int]) -> Counts:
    return Counts(tp=data["tp"], fp=data["fp"], tn=data["tn"], fn=data["fn"])


def _curves(truth: np.ndarray, scores: np.ndarray) -> tuple[RocCurve | None, PrCurve | None]:
    try:
        return roc_curve(truth, scores), precision_recall_curve(truth, scores)
    except ValueError:  # one class only so far (a run with few folds done)
        return None, None


def _fill_detector(report: NetworkReport) -> None:
    evaluations = [mv.metrics["evaluation"] for mv in report.models]
    report.pixel = fold_summary([_counts(e["pixel"]) for e in evaluations])
    report.pixel_covid = fold_summary([_counts(e["pixel_covid"]) for e in evaluations])
    report.case = fold_summary([_counts(e["case"]) for e in evaluations])
    truth = np.concatenate([np.asarray(e["truth"], bool) for e in evaluations])
    scores = np.concatenate([np.asarray(e["max_probs"], float) for e in evaluations])
    report.case_roc, report.case_pr = _curves(truth, scores)
    histogram = ScoreHistogram(evaluations[0]["histogram"]["bins"])
    for e in evaluations:
        histogram.positives += np.asarray(e["histogram"]["positives"], np.int64)
        histogram.negatives += np.asarray(e["histogram"]["negatives"], np.int64)
    try:
        report.pixel_roc, report.pixel_pr = histogram.roc(), histogram.pr()
    except ValueError:
        report.pixel_roc = report.pixel_pr = None
    weights = [e["n_cases"] for e in evaluations]
    report.mean_dice = float(np.average([e["mean_dice"] for e in evaluations], weights=weights))
    report.ms_per_sample = float(np.mean([e["ms_per_sample"] for e in evaluations]))


def _fill_classifier(report: NetworkReport) -> None:
    evaluations = [mv.metrics["evaluation"] for mv in report.models]
    report.case = fold_summary([_counts(e["case"]) for e in evaluations])
    truth = np.concatenate([np.asarray(e["truth"], bool) for e in evaluations])
    scores = np.concatenate([np.asarray(e["probs"], float) for e in evaluations])
    report.case_roc, report.case_pr = _curves(truth, scores)
    report.ms_per_sample = float(np.mean([e["ms_per_sample"] for e in evaluations]))


def run_report(*, run: str) -> RunReport:
    """The report of one run; RunNotFound when no job has that run name."""
    jobs = list(
        Job.objects.filter(kind__in=RUN_KINDS, params__run=run)
        .annotate(
            arch=KT("params__network__arch"),
            net_encoder=KT("params__network__encoder"),
            clf_encoder=KT("params__encoder"),
        )
        .values("id", "kind", "state", "dataset_id", "arch", "net_encoder", "clf_encoder")
    )
    if not jobs:
        raise RunNotFound(f"no detector run named {run!r}")
    first = Job.objects.select_related("dataset").get(pk=min(j["id"] for j in jobs))
    p = first.params
    states: dict[str, int] = {"total": len(jobs)}
    for job in jobs:
        states[job["state"]] = states.get(job["state"], 0) + 1
    models = list(
        ModelVersion.objects.filter(job_id__in=[j["id"] for j in jobs])
        .exclude(weights="")
        .order_by("fold", "id")
    )
    report = RunReport(
        run=run,
        dataset=first.dataset,
        protocol=p.get("protocol", ""),
        protocol_label=PROTOCOL_LABELS.get(p.get("protocol", ""), p.get("protocol", "")),
        settings={
            k: p.get(k)
            for k in ("folds", "epochs", "batch_size", "image_size", "lr", "frozen", "ensemble")
        },
        n_test_cases=sum(len(j.params.get("test", [])) for j in _one_job_per_fold(jobs)),
        jobs=states,
    )
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for job in jobs:
        if job["kind"] in (Job.Kind.DETECTOR, Job.Kind.ENSEMBLE):
            key = ("detector", job["arch"], job["net_encoder"])
        else:
            key = ("classifier", "classifier", job["clf_encoder"])
        groups.setdefault(key, []).append(job)
    for (purpose, arch, encoder), members in groups.items():
        ids = {j["id"] for j in members}
        mine = [mv for mv in models if mv.job_id in ids]
        label = (
            network_label(arch, encoder)
            if purpose == "detector"
            else f"Classifier · {encoder_label(encoder)}"
        )
        item = NetworkReport(
            key=f"{arch}/{encoder}",
            label=label,
            arch=arch,
            encoder=encoder,
            models=mine,
            # An ensemble is queued fold by fold, as each fold's networks finish.
            folds_total=max(len(members), p.get("folds") or 1)
            if arch == ENSEMBLE
            else len(members),
        )
        if mine:
            (_fill_detector if purpose == "detector" else _fill_classifier)(item)
            item.params_trainable = mine[0].params_trainable
            item.params_non_trainable = mine[0].params_non_trainable
        (report.networks if purpose == "detector" else report.classifiers).append(item)
    order = list(ENCODERS)
    report.networks.sort(key=lambda n: (_index(order, n.encoder), _index(list(ARCHS), n.arch)))
    report.classifiers.sort(key=lambda n: _index(order, n.encoder))
    return report


def _index(values: list[str], value: str) -> int:
    return values.index(value) if value in values else len(values)


def _one_job_per_fold(jobs: list[dict]) -> list[Job]:
    """The test sets of one network's jobs: together, every test case once."""
    detector = [j for j in jobs if j["kind"] == Job.Kind.DETECTOR]
    if not detector:
        return []
    first = (detector[0]["arch"], detector[0]["net_encoder"])
    ids = [j["id"] for j in detector if (j["arch"], j["net_encoder"]) == first]
    return list(Job.objects.filter(id__in=ids).only("params"))


def score_cells(summary: FoldSummary | None, *, cumulative: bool = False) -> list[dict[str, Any]]:
    """Table cells in the paper's order: value and CI in percent (None when undefined)."""
    cells = []
    for name in METRICS:
        if summary is None:
            cells.append({"metric": name, "value": None, "ci": None, "text": "—"})
            continue
        score = (summary.cumulative if cumulative else summary.mean)[name]
        defined = not math.isnan(score.value)
        cells.append(
            {
                "metric": name,
                "value": 100 * score.value if defined else None,
                "ci": 100 * score.ci if defined and not math.isnan(score.ci) else None,
                "text": score.percent(),
            }
        )
    return cells


def confusion_cells(counts: Counts | None) -> dict[str, Any] | None:
    """A 2×2 matrix with row percentages: rows are truth (control, COVID-19)."""
    if counts is None:
        return None
    rows = []
    for label, (neg, pos) in (
        ("Control", (counts.tn, counts.fp)),
        ("COVID-19", (counts.fn, counts.tp)),
    ):
        total = neg + pos
        rows.append(
            {
                "label": label,
                "cells": [
                    {"n": neg, "share": 100 * neg / total if total else None},
                    {"n": pos, "share": 100 * pos / total if total else None},
                ],
            }
        )
    return {"rows": rows, "n": counts.n}
