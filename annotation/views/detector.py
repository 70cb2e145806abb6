"""The final detector: launch a run (admins), its evaluation report (admins, researchers) as a
page, CSV and a self-contained HTML file, and deploying one trained version (admins)."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.contrib import messages
from django.db.models import Count, Q
from django.db.models.fields.json import KT
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from annotation.models import Dataset, Job, Label, ModelVersion
from annotation.roles import ADMIN, RESEARCHER
from annotation.selectors.dashboard import job_row
from annotation.selectors.inference import deployed_detectors
from annotation.selectors.report import (
    METRIC_LABELS,
    METRICS,
    RUN_KINDS,
    RunNotFound,
    confusion_cells,
    detector_runs,
    run_report,
    score_cells,
)
from annotation.selectors.report_export import report_csv, report_figures
from annotation.services.audit import client_ip
from annotation.services.detector import (
    DETECTOR_PRESETS,
    DetectorError,
    detector_deploy,
    detector_ensemble_enqueue,
    detector_launch,
)
from annotation.views.access import role_required
from mlworker.networks import encoder_label, network_choices, network_label

# Package data: the report is self-contained, so its stylesheet is read from the package.
CSS = Path(__file__).resolve().parent.parent / "static" / "css" / "detector.css"


class DetectorForm(forms.Form):
    preset = forms.ChoiceField(choices=[(p, p) for p in DETECTOR_PRESETS], required=False)
    networks = forms.MultipleChoiceField(
        choices=network_choices(encoder_major=True), widget=forms.CheckboxSelectMultiple
    )
    protocol = forms.ChoiceField(
        choices=[
            ("kfold", "Stratified k-fold cross-validation (Group I)"),
            ("split", "The dataset's fixed train/test split (Group II)"),
        ]
    )
    folds = forms.IntegerField(min_value=1, max_value=20, help_text="k, for k-fold")
    epochs = forms.IntegerField(min_value=1, max_value=1000)
    batch_size = forms.IntegerField(min_value=1, max_value=512)
    image_size = forms.IntegerField(
        min_value=32, max_value=2048, help_text="pixels, a multiple of 32"
    )
    lr = forms.FloatField(min_value=1e-7, max_value=0.5, label="Learning rate")
    frozen = forms.BooleanField(required=False, label="Frozen encoder")
    with_classifier = forms.BooleanField(
        required=False, label="Train Grad-CAM classifiers on the same encoders"
    )
    classifier_epochs = forms.IntegerField(min_value=1, max_value=1000)
    classifier_lr = forms.FloatField(
        min_value=1e-7, max_value=0.5, label="Classifier learning rate"
    )
    ensemble = forms.BooleanField(
        required=False,
        label="Also evaluate the ensemble (mean probability of the networks) on each fold",
    )

    KEYS = (
        "protocol",
        "folds",
        "epochs",
        "batch_size",
        "image_size",
        "lr",
        "frozen",
        "with_classifier",
        "classifier_epochs",
        "classifier_lr",
        "ensemble",
    )

    @classmethod
    def initial_for(cls, preset: str) -> dict:
        preset = preset if preset in DETECTOR_PRESETS else "fast-cpu"
        config = DETECTOR_PRESETS[preset]
        networks = [f"{n['arch']}/{n['encoder']}" for n in config["networks"]]
        return {"preset": preset, "networks": networks, **{k: config[k] for k in cls.KEYS}}

    def config(self) -> dict:
        data = self.cleaned_data
        networks = [
            dict(zip(("arch", "encoder"), key.split("/"), strict=True)) for key in data["networks"]
        ]
        return {"networks": networks, **{k: data[k] for k in self.KEYS}}


def _dataset_counts(dataset: Dataset) -> dict[str, int]:
    return dataset.radiographs.aggregate(
        covid_with_mask=Count("id", filter=Q(label=Label.COVID, ground_truth__isnull=False)),
        covid_without_mask=Count("id", filter=Q(label=Label.COVID, ground_truth__isnull=True)),
        controls=Count("id", filter=Q(label__in=(Label.NORMAL, Label.OTHER))),
    )


@role_required(ADMIN, RESEARCHER)
def detector_index(request: HttpRequest) -> HttpResponse:
    datasets = list(Dataset.objects.all())
    deployed = {mv.dataset_id: mv for mv in deployed_detectors()}
    for dataset in datasets:
        dataset.deployed_detector = deployed.get(dataset.pk)
    return render(request, "detector/index.html", {"datasets": datasets, "runs": detector_runs()})


@role_required(ADMIN)
def detector_new(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    if request.method == "POST":
        form = DetectorForm(request.POST)
        if form.is_valid():
            try:
                launched = detector_launch(dataset=dataset, config=form.config(), by=request.user)
            except DetectorError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request,
                    f"Detector run {launched.run}: {len(launched.jobs)} training jobs queued.",
                )
                return redirect("detector_report", run=launched.run)
    else:
        form = DetectorForm(initial=DetectorForm.initial_for(request.GET.get("preset", "fast-cpu")))
    context = {"dataset": dataset, "form": form, "counts": _dataset_counts(dataset)}
    template = "detector/new.html#form" if request.htmx else "detector/new.html"
    return render(request, template, context)


def _report_or_404(run: str):
    try:
        return run_report(run=run)
    except RunNotFound as exc:
        raise Http404(str(exc)) from exc


def _report_context(report) -> dict:
    def rows(items, attr: str, *, cumulative: bool = False):
        return [
            {"item": n, "cells": score_cells(getattr(n, attr), cumulative=cumulative)}
            for n in items
        ]

    return {
        "report": report,
        "metric_labels": [METRIC_LABELS[m] for m in METRICS],
        "pixel_rows": rows(report.networks, "pixel"),
        "pixel_covid_rows": rows(report.networks, "pixel_covid"),
        "case_rows": rows(report.networks, "case"),
        "classifier_rows": rows(report.classifiers, "case"),
        "matrices": [
            {
                "item": n,
                "levels": [
                    ("pixel", confusion_cells(n.pixel.cumulative_counts if n.pixel else None)),
                    ("case", confusion_cells(n.case.cumulative_counts if n.case else None)),
                ],
            }
            for n in report.networks + report.classifiers
        ],
        "figures": report_figures(report),
        "fold_models": [
            {
                "item": n,
                "models": [
                    {
                        "mv": mv,
                        "case_f1": scores["f1"].percent(),
                        "case_acc": scores["accuracy"].percent(),
                    }
                    for mv, scores in zip(n.models, n.case.folds, strict=True)
                ],
            }
            for n in report.networks
            if n.case is not None
        ],
    }


def _run_jobs(run: str):
    """The run's jobs for the job table; params (with long case lists) are not loaded."""
    jobs = (
        Job.objects.filter(kind__in=RUN_KINDS, params__run=run)
        .annotate(
            arch=KT("params__network__arch"),
            net_encoder=KT("params__network__encoder"),
            clf_encoder=KT("params__encoder"),
            fold_number=KT("params__fold"),
        )
        .defer("params")
        .order_by("id")
    )
    rows = []
    for job in jobs:
        row = job_row(job)
        # KT gives text; a JSON null comes back as None or "null" depending on the database.
        number = "" if job.fold_number is None else str(job.fold_number)
        fold = f", fold {int(number) + 1}" if number.isdigit() else ""
        if job.kind in (Job.Kind.DETECTOR, Job.Kind.ENSEMBLE):
            row.title = f"Detector {network_label(job.arch, job.net_encoder)}{fold}"
        else:
            row.title = f"Classifier {encoder_label(job.clf_encoder)}{fold}"
        rows.append(row)
    return rows


@role_required(ADMIN, RESEARCHER)
def detector_report(request: HttpRequest, run: str) -> HttpResponse:
    report = _report_or_404(run)
    if request.htmx and request.GET.get("part") == "jobs":
        response = render(
            request, "detector/report.html#jobs", {"report": report, "jobs": _run_jobs(run)}
        )
        if request.GET.get("complete") == "0" and report.complete:
            response["HX-Refresh"] = "true"  # every number is in: show the finished report
        return response
    context = _report_context(report) | {"jobs": _run_jobs(run)}
    return render(request, "detector/report.html", context)


@role_required(ADMIN, RESEARCHER)
def detector_report_csv(request: HttpRequest, run: str) -> HttpResponse:
    report = _report_or_404(run)
    response = HttpResponse(report_csv(report), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="detector-report-{run}.csv"'
    return response


@role_required(ADMIN, RESEARCHER)
def detector_report_html(request: HttpRequest, run: str) -> HttpResponse:
    """The report as one file: styles inline, figures as data URIs, no links back."""
    report = _report_or_404(run)
    context = _report_context(report) | {"standalone": True, "css": CSS.read_text()}
    html = render_to_string("detector/report_standalone.html", context)
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="detector-report-{run}.html"'
    return response


@require_POST
@role_required(ADMIN)
def detector_deploy_view(request: HttpRequest, model_id: int) -> HttpResponse:
    mv = get_object_or_404(ModelVersion, pk=model_id)
    try:
        detector_deploy(model_version=mv, by=request.user, client_ip=client_ip(request))
    except DetectorError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Model #{mv.pk} ({mv.arch}/{mv.encoder}) is now the deployed detector of {mv.dataset}.",
        )
    run = mv.config.get("run")
    return redirect("detector_report", run=run) if run else redirect("detector_index")


@require_POST
@role_required(ADMIN)
def detector_ensemble_view(request: HttpRequest, run: str) -> HttpResponse:
    """Evaluate the mean of a finished run's networks on every fold (one job per fold)."""
    report = _report_or_404(run)
    folds = sorted(
        {mv.fold for n in report.networks for mv in n.models}, key=lambda f: -1 if f is None else f
    )
    try:
        jobs = [detector_ensemble_enqueue(run=run, fold=fold, by=request.user) for fold in folds]
    except DetectorError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"The ensemble of the run's networks is being evaluated ({len(jobs)} job(s))."
        )
    return redirect("detector_report", run=run)
